"""How many of the normal atlas's 20,242 genes ingest keeps, by mapping rule and annotation.

Run: .venv/bin/python bench/atlas_genes.py [--ingest] [--out bench/out/atlas_genes]
     (seconds; --ingest adds a full ingest of the atlas, 1-3 minutes)

Issue 17: "the atlas keeps at least 19,100 of its 20,242 genes (Entrez id, then symbol, then
unambiguous previous symbol reaches about 19,180)". The atlas files (../shared/data/normal_atlas)
all hold the same 20,242 rows, `Hugo_Symbol` and `Entrez_Gene_Id`; their ids are mapped to
Ensembl exactly as ingest maps them (`nofone.io.gene_ids.map_gene_ids`), with the Ensembl table
alone (what ingest had before: symbols only), the NCBI alias table alone, and both.

Printed per annotation: atlas rows mapped to an Ensembl gene, by rule (Entrez id, current
symbol, previous symbol/alias, an Entrez id shared by several rows), rows left unmapped or
ambiguous, the distinct Ensembl genes they make (rows of one gene are summed by ingest's
default `--duplicates sum`), beside the target. Two upper bounds: the rows with any candidate
Ensembl id under the three lookups (ambiguity ignored), and the most distinct genes any
one-to-one assignment of rows to their candidates could give (a maximum bipartite matching).
With --ingest: `nofone ingest --round-counts --annotation ENSEMBL --annotation NCBI` of the whole
atlas, its genes and the genes lost for not being in every file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NOFONE_PROGRESS", "0")

import numpy as np
import scipy.sparse as sp
from common import DATA, REPO, atlas_sheet
from scipy.sparse.csgraph import maximum_bipartite_matching

ENSEMBL = DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"
NCBI = DATA / "annotation" / "ncbi_gene_human_aliases_orgHsEg_3.16.tsv.gz"
TARGET_ROWS = 19_100
N_ATLAS = 20_242


def atlas_ids() -> dict[str, np.ndarray]:
    path = sorted((DATA / "normal_atlas").glob("*-rsem-count-gtex.txt.gz"))[0]
    symbols, entrez = [], []
    with gzip.open(path, "rt") as handle:
        handle.readline()
        for line in handle:
            fields = line.split("\t", 2)
            symbols.append(fields[0])
            entrez.append(fields[1])
    return {"Hugo_Symbol": np.asarray(symbols, dtype=object), "Entrez_Gene_Id": np.asarray(entrez, dtype=object)}


def measure(ids: dict[str, np.ndarray], paths: list[Path]) -> dict:
    from nofone.io.gene_ids import Annotation, map_gene_ids

    started = time.perf_counter()
    annotation = Annotation.read(paths)
    mapping = map_gene_ids(ids, annotation)
    seconds = time.perf_counter() - started
    mapped = [g for g in mapping.canonical if g]
    return {
        "annotation": [p.name for p in paths],
        "rows_mapped": len(mapped),
        "mapped_by": mapping.mapped_by,
        "unmapped": len(mapping.unmapped),
        "ambiguous": len(mapping.ambiguous),
        "distinct_genes": len(set(mapped)),
        "rows_sharing_a_gene": len(mapped) - len(set(mapped)),
        "ambiguous_aliases_in_annotation": len(annotation.ambiguous_aliases),
        "seconds": round(seconds, 1),
        "examples_unmapped": mapping.unmapped[:10],
        "examples_ambiguous": dict(list(mapping.ambiguous.items())[:5]),
    }


def upper_bounds(ids: dict[str, np.ndarray], paths: list[Path]) -> dict:
    """Rows with any candidate, and the best one-to-one assignment (ambiguity ignored)."""
    from nofone.io.gene_ids import Annotation, clean_entrez

    annotation = Annotation.read(paths)
    candidates = []
    for symbol, entrez in zip(ids["Hugo_Symbol"], ids["Entrez_Gene_Id"]):
        found = set(annotation.by_entrez.get(clean_entrez(entrez), []))
        found |= set(annotation.by_symbol.get(symbol.strip(), []))
        found |= set(annotation.by_alias.get(symbol.strip(), []))
        candidates.append(found)
    genes = {g: i for i, g in enumerate(set().union(*candidates))}
    rows = [i for i, c in enumerate(candidates) for _ in c]
    cols = [genes[g] for c in candidates for g in c]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(candidates), len(genes)))
    matching = maximum_bipartite_matching(graph, perm_type="column")
    return {"rows_with_a_candidate": sum(bool(c) for c in candidates), "max_distinct_genes": int((matching >= 0).sum())}


def full_ingest(out: Path) -> dict:
    from nofone.io.ingest import IngestOptions, ingest

    sheet = atlas_sheet(out / "atlas.csv")[0]
    started = time.perf_counter()
    report = ingest(sheet, out / "data", IngestOptions(round_counts=True, annotation=[ENSEMBL, NCBI]))
    return {"n_genes": report["n_genes"], "n_samples": report["n_samples"],
            "dropped": report["genes"]["dropped"], "seconds": round(time.perf_counter() - started, 1),
            "mapped_by_first_file": report["files"][0]["mapped_by"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "atlas_genes")
    parser.add_argument("--ingest", action="store_true", help="also ingest the whole atlas with both tables")
    args = parser.parse_args()
    if not (DATA / "normal_atlas").is_dir() or not NCBI.is_file():
        sys.exit(f"the normal atlas or the NCBI alias table is not under {DATA}")
    args.out.mkdir(parents=True, exist_ok=True)
    ids = atlas_ids()
    runs = {"ensembl": measure(ids, [ENSEMBL]), "ncbi": measure(ids, [NCBI]), "both": measure(ids, [ENSEMBL, NCBI])}
    result = {"atlas_rows": len(ids["Hugo_Symbol"]), "target_rows_kept": TARGET_ROWS, **runs,
              "upper_bounds_both": upper_bounds(ids, [ENSEMBL, NCBI])}
    if args.ingest:
        result["ingest_both"] = full_ingest(args.out)
    (args.out / "atlas_genes.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print()
    rules = ["entrez", "symbol", "alias", "shared_entrez"]
    title = f"atlas genes (rows) kept, of {result['atlas_rows']:,}"
    print(f"{title:44s}" + "".join(f"{k:>12s}" for k in runs))
    for label, key in [("rows mapped to an Ensembl gene", "rows_mapped"), *((f"  by {r}", r) for r in rules),
                       ("unmapped", "unmapped"), ("ambiguous (never guessed)", "ambiguous"),
                       ("distinct Ensembl genes", "distinct_genes")]:
        values = [run["mapped_by"].get(key, 0) if key in rules else run[key] for run in runs.values()]
        print(f"{label:44s}" + "".join(f"{v:>12,}" for v in values))
    both = runs["both"]
    verdict = "met" if both["rows_mapped"] >= TARGET_ROWS else "NOT met"
    print(f"\ntarget: at least {TARGET_ROWS:,} of {N_ATLAS:,} rows kept -> {both['rows_mapped']:,} with both "
          f"tables ({verdict})")
    bounds = result["upper_bounds_both"]
    print(f"upper bounds: {bounds['rows_with_a_candidate']:,} rows have a candidate; at most "
          f"{bounds['max_distinct_genes']:,} distinct genes by any one-to-one assignment")
    if args.ingest:
        print(f"full ingest with both tables: {result['ingest_both']['n_genes']:,} genes x "
              f"{result['ingest_both']['n_samples']} samples in {result['ingest_both']['seconds']} s")


if __name__ == "__main__":
    main()
