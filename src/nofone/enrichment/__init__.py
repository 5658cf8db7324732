"""Pathway enrichment of a gene ranking against local gene sets (gseapy, offline only).

- `read_gmt`: a GMT file (name, description, genes...) -> {name: [genes]};
- `read_symbol_map` / `to_symbols`: our gene ids -> the GMT's symbols (a two-column TSV, an
  annotables-style annotation with Entrez/Ensembl ids and symbols, or the dataset's own gene
  names; optionally upper-cased, the documented approximation of mouse -> human symbols);
- `prerank` (GSEA preranked) and `over_representation` (hypergeometric test of a gene list
  against a background) through gseapy.

gseapy never downloads anything here: gene sets are always handed to it as a dict parsed from
the user's local file (a gene-set *name* would make gseapy fetch an Enrichr library), and ORA
always gets an explicit background list (a background *name* would make it query BioMart).
gseapy is imported only when an analysis runs; without it the functions raise an InputError
that says how to install it.
"""

from nofone.enrichment.gene_sets import read_gmt
from nofone.enrichment.run import METHODS, over_representation, prerank, run_enrichment
from nofone.enrichment.symbols import read_symbol_map, to_symbols

__all__ = ["METHODS", "over_representation", "prerank", "read_gmt", "read_symbol_map", "run_enrichment",
           "to_symbols"]
