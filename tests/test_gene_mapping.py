"""Gene-id mapping through an Ensembl table, the NCBI gene alias table, or both: Entrez id, then
current symbol, then an unambiguous previous symbol or alias; never a guess (docs/input.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA, requires_shared_data, write

from nofone.io.dataset import Dataset
from nofone.io.gene_ids import Annotation, map_gene_ids
from nofone.io.ingest import IngestOptions, ingest

ENSEMBL = ("ensgene\tsymbol\tbiotype\tchr\n"
           "ENSG00000000001\tALPHA\tprotein_coding\t1\n"
           "ENSG00000000002\tBETA\tprotein_coding\t2\n"
           "ENSG00000000003\tGAMMA\tprotein_coding\t3\n"
           "ENSG00000000004\tDELTA\tprotein_coding\tCHR_HSCHR6_MHC_COX_CTG1\n"
           "ENSG00000000005\tDELTA\tprotein_coding\t6\n"
           "ENSG00000000006\tEPS\tlncRNA\t7\n"
           "ENSG00000000007\tEPS2\tprotein_coding\t7\n")
NCBI = ("entrez\tsymbol\tensembl_ids\taliases\n"
        "101\tALPHA\tENSG00000000001\tALF,OLD1\n"
        "102\tBETA\tENSG00000000002\tOLD2,SHARED\n"
        "103\tGAMMA\tENSG00000000003\tSHARED,BETA\n"
        "104\tDELTA\tENSG00000000004,ENSG00000000005\t\n"
        "105\tEPS\tENSG00000000006,ENSG00000000007\tOLDEPS\n"
        "106\tZETA\tENSG00000000008\tOLDZ\n"
        "107\tNOENS\t\tORPHAN\n")


@pytest.fixture
def tables(tmp_path):
    return write(tmp_path / "ens.tsv", ENSEMBL), write(tmp_path / "ncbi.tsv", NCBI)


def mapped(annotation, symbols, entrez=None):
    ids = {"Hugo_Symbol": np.array(symbols, dtype=object)}
    if entrez is not None:
        ids["Entrez_Gene_Id"] = np.array(entrez, dtype=object)
    return map_gene_ids(ids, annotation)


def test_entrez_then_symbol_then_alias(tables):
    annotation = Annotation.read(list(tables))
    m = mapped(annotation, ["WRONGNAME", "BETA", "OLD1", "OLDZ"], ["103", "0", "", "  106"])
    assert m.canonical.tolist() == ["ENSG00000000003", "ENSG00000000002", "ENSG00000000001", "ENSG00000000008"]
    assert m.mapped_by == {"entrez": 2, "symbol": 1, "alias": 1}


def test_an_alias_of_several_genes_is_never_guessed(tables):
    annotation = Annotation.read(list(tables))
    assert annotation.ambiguous_aliases["SHARED"] == ["BETA", "GAMMA"]
    m = mapped(annotation, ["SHARED", "ALPHA"])
    assert m.canonical.tolist() == ["", "ENSG00000000001"]
    assert m.ambiguous == {"SHARED": ["alias of BETA, GAMMA"]}


def test_a_current_symbol_is_never_read_as_another_genes_alias(tables):
    """GAMMA lists BETA as an old name; a row named BETA is the gene BETA."""
    m = mapped(Annotation.read(list(tables)), ["BETA"])
    assert m.canonical.tolist() == ["ENSG00000000002"] and m.mapped_by == {"symbol": 1}


def test_an_entrez_id_shared_by_rows_gives_way_to_their_symbols(tables):
    annotation = Annotation.read(list(tables))
    m = mapped(annotation, ["ALPHA", "BETA", "NOSUCH"], ["102", "102", "102"])
    assert m.canonical.tolist() == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000002"]
    assert m.mapped_by == {"symbol": 2, "shared_entrez": 1}


def test_several_ensembl_ids_resolve_only_through_the_primary_chromosome(tables):
    ens, ncbi = tables
    both = Annotation.read([ens, ncbi])
    assert mapped(both, ["x"], ["104"]).canonical.tolist() == ["ENSG00000000005"]  # the other is on an alt haplotype
    eps = mapped(both, ["x"], ["105"])  # both on chromosome 7: ambiguous, never guessed
    assert eps.canonical.tolist() == [""] and eps.ambiguous == {"x": ["ENSG00000000006", "ENSG00000000007"]}
    alone = Annotation.read(ncbi)  # no chromosomes known: several ids stay ambiguous
    assert mapped(alone, ["x"], ["104"]).canonical.tolist() == [""]


def test_an_ensembl_tables_own_names_come_before_cross_references(tmp_path):
    ens = write(tmp_path / "e.tsv", "ensgene\tsymbol\nENSG00000000011\tKAPPA\n")
    ncbi = write(tmp_path / "n.tsv", "entrez\tsymbol\tensembl_ids\taliases\n9\tKAPPA\tENSG00000000099\t\n")
    for order in ([ens, ncbi], [ncbi, ens]):
        assert mapped(Annotation.read(order), ["KAPPA"]).canonical.tolist() == ["ENSG00000000011"]


def test_an_alias_of_a_gene_without_ensembl_id_is_unmapped(tables):
    m = mapped(Annotation.read(list(tables)), ["ORPHAN", "NOENS"])
    assert m.canonical.tolist() == ["", ""] and m.unmapped == ["ORPHAN", "NOENS"]


def test_hgnc_style_alias_columns(tmp_path):
    hgnc = write(tmp_path / "hgnc.tsv", "symbol\tentrez_id\tensembl_gene_id\talias_symbol\tprev_symbol\n"
                                        "A1BG\t1\tENSG00000121410\tA1B|ABG\tOLDA1\n")
    m = mapped(Annotation.read(hgnc), ["ABG", "OLDA1", "A1BG"])
    assert m.canonical.tolist() == ["ENSG00000121410"] * 3 and m.mapped_by == {"symbol": 1, "alias": 2}


def test_ingest_maps_with_both_tables_and_reports_the_rules(tmp_path, tables):
    ens, ncbi = tables
    write(tmp_path / "m.tsv", "Hugo_Symbol\tEntrez_Gene_Id\tS1\n"
                              "ALPHA\t101\t10\nOLD2\t0\t20\nSHARED\t0\t5\nGAMMA\t0\t30\nOLDZ\t0\t40\n")
    write(tmp_path / "s.csv", "sample,counts\nS1,m.tsv\n")
    report = ingest(tmp_path / "s.csv", tmp_path / "out", IngestOptions(annotation=[ens, ncbi]))
    data = Dataset(tmp_path / "out")
    assert data.gene_ids == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000008"]
    assert data.read().counts.tolist() == [[10, 20, 30, 40]]
    assert data.genes["gene_name"].tolist() == ["ALPHA", "BETA", "GAMMA", "ZETA"]  # current symbols
    assert data.genes["biotype"].tolist()[:3] == ["protein_coding"] * 3
    file_report = report["files"][0]
    assert file_report["mapped_by"] == {"entrez": 1, "symbol": 1, "alias": 2}
    assert file_report["ambiguous"] == {"SHARED": ["alias of BETA, GAMMA"]}
    saved = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert saved["options"]["annotation"] == [str(ens), str(ncbi)]


def test_the_cli_takes_annotation_twice(tmp_path, tables, runner):
    from nofone.cli.app import app

    ens, ncbi = tables
    write(tmp_path / "m.tsv", "Hugo_Symbol\tEntrez_Gene_Id\tS1\nOLD1\t0\t10\nBETA\t0\t20\n")
    write(tmp_path / "s.csv", "sample,counts\nS1,m.tsv\n")
    result = runner.invoke(app, ["ingest", "-i", str(tmp_path / "s.csv"), "-o", str(tmp_path / "out"),
                                 "--annotation", str(ens), "--annotation", str(ncbi)])
    assert result.exit_code == 0, result.output
    assert Dataset(tmp_path / "out").gene_ids == ["ENSG00000000001", "ENSG00000000002"]


@pytest.mark.realdata
@requires_shared_data
@pytest.mark.slow
def test_the_atlas_keeps_19100_genes_with_both_tables():
    """bench/atlas_genes.py measures the same: 17,812 rows with the Ensembl table alone."""
    import gzip

    path = sorted((SHARED_DATA / "normal_atlas").glob("*-rsem-count-gtex.txt.gz"))[0]
    with gzip.open(path, "rt") as handle:
        handle.readline()
        rows = [line.split("\t", 2)[:2] for line in handle]
    ids = {"Hugo_Symbol": np.array([r[0] for r in rows], dtype=object),
           "Entrez_Gene_Id": np.array([r[1] for r in rows], dtype=object)}
    annotation = SHARED_DATA / "annotation"
    ensembl = annotation / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"
    ncbi = annotation / "ncbi_gene_human_aliases_orgHsEg_3.16.tsv.gz"
    before = map_gene_ids(ids, Annotation.read(ensembl))
    after = map_gene_ids(ids, Annotation.read([ensembl, ncbi]))
    kept_before, kept_after = int((before.canonical != "").sum()), int((after.canonical != "").sum())
    print(f"atlas rows kept: {kept_before} (Ensembl table) -> {kept_after} (both); "
          f"distinct genes {len(set(after.canonical) - {''})}; by rule {after.mapped_by}")
    assert len(rows) == 20_242 and kept_before == 17_812
    assert kept_after >= 19_100
    assert len(set(after.canonical) - {""}) >= 19_000
