"""Every count-file reader, gene-id harmonisation and streaming, through `ingest`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write

from nofone.io.dataset import Dataset
from nofone.io.ingest import IngestOptions, ingest


def sheet(tmp: Path, rows: list[str], header: str = "sample,counts") -> Path:
    return write(tmp / "sheet.csv", header + "\n" + "\n".join(rows) + "\n")


def run(tmp: Path, rows: list[str], header: str = "sample,counts", **options) -> tuple[Dataset, dict]:
    out = tmp / "out"
    report = ingest(sheet(tmp, rows, header), out, IngestOptions(**options))
    return Dataset(out), report


def counts_of(data: Dataset) -> dict[str, dict[str, int]]:
    chunk = data.read()
    return {s: dict(zip(data.gene_ids, map(int, row))) for s, row in zip(chunk.sample_ids, chunk.counts)}


def test_two_column_with_and_without_header(tmp_path):
    write(tmp_path / "a.tsv", "gene_id\tcount\nENSG00000000001.3\t5\nENSG00000000002\t0\n")
    write(tmp_path / "b.tsv", "ENSG00000000001\t7\nENSG00000000002.1\t2\n")
    data, report = run(tmp_path, ["A,a.tsv", "B,b.tsv"])
    assert data.gene_ids == ["ENSG00000000001", "ENSG00000000002"]
    assert counts_of(data) == {
        "A": {"ENSG00000000001": 5, "ENSG00000000002": 0},
        "B": {"ENSG00000000001": 7, "ENSG00000000002": 2},
    }
    assert [f["format"] for f in report["files"]] == ["two-column", "two-column"]


def test_htseq_special_rows_are_dropped(tmp_path):
    write(tmp_path / "h.txt", "ENSG00000000001\t3\nENSG00000000002\t4\n__no_feature\t100\n"
          "__ambiguous\t9\n__alignment_not_unique\t1\n")
    data, _ = run(tmp_path, ["H,h.txt"])
    assert data.gene_ids == ["ENSG00000000001", "ENSG00000000002"]
    assert data.read().counts.tolist() == [[3, 4]]


def test_featurecounts_multi_sample_matched_by_bam_stem(tmp_path):
    write(tmp_path / "fc.txt",
          "# Program:featureCounts v2.0.3; Command:\"featureCounts\" ...\n"
          "Geneid\tChr\tStart\tEnd\tStrand\tLength\t/data/bam/S1.bam\t/data/bam/S2.bam\n"
          "ENSG00000000001\tchr1\t1\t100\t+\t100\t10\t20\n"
          "ENSG00000000002\tchr1;chr1\t5;50\t40;90\t+;+\t76\t0\t3\n")
    data, report = run(tmp_path, ["S2,fc.txt", "S1,fc.txt"])
    assert report["files"][0]["format"] == "featurecounts"
    assert counts_of(data) == {"S2": {"ENSG00000000001": 20, "ENSG00000000002": 3},
                               "S1": {"ENSG00000000001": 10, "ENSG00000000002": 0}}


@pytest.mark.parametrize(("strand", "expected"), [("unstranded", [11, 21]), ("forward", [5, 1]),
                                                  ("reverse", [6, 20])])
def test_star_reads_per_gene_strandedness(tmp_path, strand, expected):
    write(tmp_path / "ReadsPerGene.out.tab",
          "N_unmapped\t100\t100\t100\nN_multimapping\t50\t50\t50\nN_noFeature\t9\t80\t10\n"
          "N_ambiguous\t3\t0\t1\nENSG00000000001.2\t11\t5\t6\nENSG00000000002.7\t21\t1\t20\n")
    data, report = run(tmp_path, ["S,ReadsPerGene.out.tab"], strandedness=strand)
    assert report["files"][0]["format"] == "star"
    assert data.read().counts.tolist() == [expected]


def test_star_strandedness_column_of_the_sheet_wins(tmp_path):
    write(tmp_path / "r.tab", "N_unmapped\t1\t1\t1\nN_multimapping\t1\t1\t1\nN_noFeature\t1\t1\t1\n"
          "N_ambiguous\t1\t1\t1\nENSG00000000001\t11\t5\t6\n")
    data, _ = run(tmp_path, ["S,r.tab,reverse"], header="sample,counts,strandedness")
    assert data.read().counts.tolist() == [[6]]
    assert "strandedness" not in data.samples.columns


def test_salmon_numreads_needs_rounding(tmp_path):
    write(tmp_path / "quant.genes.sf", "Name\tLength\tEffectiveLength\tTPM\tNumReads\n"
          "ENSG00000000001.1\t1000\t850.2\t12.5\t100.4\nENSG00000000002.4\t500\t320\t1.0\t7\n")
    with pytest.raises(Exception, match=r"quant\.genes\.sf.*gene 'ENSG00000000001\.1', sample 'Q'.*--round-counts"):
        run(tmp_path, ["Q,quant.genes.sf"])
    data, report = run(tmp_path, ["Q,quant.genes.sf"], round_counts=True)
    assert data.read().counts.tolist() == [[100, 7]]
    assert report["files"][0]["format"] == "salmon"
    assert report["samples"][0]["values_rounded"] == 1


def test_nfcore_merged_matrix_versions_and_par_y(tmp_path):
    write(tmp_path / "salmon.merged.gene_counts.tsv",
          "gene_id\tgene_name\tWT_1\tKO_1\n"
          "ENSG00000002586.20\tCD99\t10\t12\nENSG00000002586.20_PAR_Y\tCD99\t1\t2\n"
          "ENSG00000000003.15\tTSPAN6\t0\t4\n")
    data, report = run(tmp_path, ["WT_1,salmon.merged.gene_counts.tsv", "KO_1,salmon.merged.gene_counts.tsv"])
    assert report["files"][0]["format"] == "nfcore"
    assert data.gene_ids == ["ENSG00000002586", "ENSG00000002586_PAR_Y", "ENSG00000000003"]
    assert data.genes["gene_name"].tolist() == ["CD99", "CD99", "TSPAN6"]
    assert data.read().counts.tolist() == [[10, 1, 0], [12, 2, 4]]


def test_gct(tmp_path):
    write(tmp_path / "x.gct", "#1.2\n2\t2\nName\tDescription\tS1\tS2\n"
          "ENSG00000000001.1\tGENE1\t3\t4\nENSG00000000002.1\tGENE2\t5\t6\n")
    data, report = run(tmp_path, ["S1,x.gct", "S2,x.gct"])
    assert report["files"][0]["format"] == "gct"
    assert data.genes["gene_name"].tolist() == ["GENE1", "GENE2"]
    assert data.read().counts.tolist() == [[3, 5], [4, 6]]


def test_matrix_with_length_column_and_entrez_ids(tmp_path):
    write(tmp_path / "m.txt", "EntrezGeneID\tLength\tMCL1-DG_X\tMCL1-DH_Y\n497097\t3634\t438\t300\n"
          "100503874\t3259\t1\t0\n")
    data, report = run(tmp_path, ["DG,m.txt,MCL1-DG_X", "DH,m.txt,MCL1-DH_Y"], header="sample,counts,column")
    assert report["files"][0]["id_type"] == "entrez"
    assert report["files"][0]["id_columns"] == ["EntrezGeneID"]
    assert data.gene_ids == ["497097", "100503874"]
    assert data.read().counts.tolist() == [[438, 1], [300, 0]]


def test_symbols_and_entrez_mapped_through_annotation(tmp_path):
    annotation = write(tmp_path / "ann.tsv.gz", "ensgene\tentrez\tsymbol\tbiotype\tchr\n"
                       "ENSG00000000001\t11\tAAA\tprotein_coding\t1\n"
                       "ENSG00000000002\t22\tBBB\tlncRNA\t2\n"
                       "ENSG00000000003\t33\tDUP\tprotein_coding\t3\n"
                       "ENSG00000000004\t44\tDUP\tprotein_coding\t4\n"
                       "ENSG00000000005\t55\tALT\tprotein_coding\t5\n"
                       "ENSG00000000006\t55\tALT\tprotein_coding\tCHR_HSCHR5_1_CTG1\n", gz=True)
    write(tmp_path / "atlas.txt", "Hugo_Symbol\tEntrez_Gene_Id\tS1\tS2\n"
          "AAA\t   11\t1\t2\nOLDNAME\t22\t3\t4\nDUP\t999\t5\t6\nNOPE\t\t7\t8\nALT\t55\t9\t10\n")
    data, report = run(tmp_path, ["S1,atlas.txt", "S2,atlas.txt"], annotation=annotation)
    # Entrez first (22 rescues the outdated symbol), primary-chromosome copy wins for ALT,
    # DUP is ambiguous (two primary genes), NOPE is unmapped.
    assert data.gene_ids == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000005"]
    assert data.genes["gene_name"].tolist() == ["AAA", "BBB", "ALT"]
    assert data.genes["biotype"].tolist() == ["protein_coding", "lncRNA", "protein_coding"]
    file_report = report["files"][0]
    assert file_report["unmapped"] == ["NOPE"]
    assert file_report["ambiguous"] == {"DUP": ["ENSG00000000003", "ENSG00000000004"]}
    assert data.read().counts.tolist() == [[1, 3, 9], [2, 4, 10]]


@pytest.mark.parametrize(("policy", "expected"), [("sum", [[4, 5]]), ("drop", [[5]])])
def test_duplicate_genes_policy(tmp_path, policy, expected):
    write(tmp_path / "d.tsv", "gene\tcount\nENSG00000000001.1\t1\nENSG00000000001.2\t3\nENSG00000000002\t5\n")
    data, report = run(tmp_path, ["S,d.tsv"], duplicates=policy)
    assert data.read().counts.tolist() == expected
    assert report["files"][0]["duplicates"] == {"ENSG00000000001": 2}


def test_duplicate_genes_error_policy_names_the_gene(tmp_path):
    write(tmp_path / "d.tsv", "gene\tcount\nENSG00000000001.1\t1\nENSG00000000001.2\t3\n")
    with pytest.raises(Exception, match=r"d\.tsv.*ENSG00000000001 \(2 rows\)"):
        run(tmp_path, ["S,d.tsv"], duplicates="error")
    assert not (tmp_path / "out").exists()


def test_gene_list_orders_restricts_and_records_missing(tmp_path):
    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\t1\nENSG00000000002\t2\nENSG00000000009\t9\n")
    write(tmp_path / "b.tsv", "g\tc\nENSG00000000001\t4\nENSG00000000002\t5\nENSG00000000003\t6\n")
    genes = write(tmp_path / "genes.txt", "ENSG00000000003.4\nENSG00000000002\nENSG00000000001\nENSG00000000007")
    data, report = run(tmp_path, ["A,a.tsv", "B,b.tsv"], genes=genes)
    assert data.gene_ids == ["ENSG00000000003", "ENSG00000000002", "ENSG00000000001", "ENSG00000000007"]
    chunk = data.read()
    assert chunk.counts.tolist() == [[0, 2, 1, 0], [6, 5, 4, 0]]
    assert chunk.measured.tolist() == [[False, True, True, False], [True, True, True, False]]
    assert report["genes"]["missing_from_input"] == ["ENSG00000000007"]
    assert report["files"][0]["missing_target_genes"] == ["ENSG00000000003", "ENSG00000000007"]
    assert report["files"][0]["dropped"]["not_targeted"] == 1
    missing = pq.read_table(tmp_path / "out" / "counts.parquet").column("missing").to_pylist()
    assert missing == [[0, 3], [3]]


def test_without_gene_list_files_are_intersected(tmp_path):
    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\t1\nENSG00000000002\t2\n")
    write(tmp_path / "b.tsv", "g\tc\nENSG00000000002\t5\nENSG00000000003\t6\n")
    data, report = run(tmp_path, ["A,a.tsv", "B,b.tsv"])
    assert data.gene_ids == ["ENSG00000000002"]
    assert report["genes"]["dropped"]["not_in_all_files"] == 2


def test_samples_by_genes_bulkdgd_layout(tmp_path):
    write(tmp_path / "s.csv", ",ENSG00000000001,ENSG00000000002,ENSG00000000003,tissue\n"
          "1247,1,2,3,pancreas\n411,4,5,6,lung\n99,7,8,9,colon\n")
    data, report = run(tmp_path, ["P99,s.csv,99", "P1247,s.csv,1247"], header="sample,counts,column")
    assert report["files"][0]["format"] == "samples-by-genes"
    # file order of the rows
    assert data.sample_ids == ["P1247", "P99"]
    assert data.read().counts.tolist() == [[1, 2, 3], [7, 8, 9]]


def test_gzip_detected_from_content_not_name(tmp_path):
    write(tmp_path / "plain.txt", "g\tc\nENSG00000000001\t3\n", gz=True)
    write(tmp_path / "named.tsv.gz", "g\tc\nENSG00000000001\t4\n", gz=True)
    data, _ = run(tmp_path, ["A,plain.txt", "B,named.tsv.gz"])
    assert data.read().counts.tolist() == [[3], [4]]


def test_format_override(tmp_path):
    # a two-column file whose header would not reveal an htseq origin
    write(tmp_path / "x.csv", "gene,S1,S2\nENSG00000000001,1,2\n")
    data, report = run(tmp_path, ["S1,x.csv,matrix", "S2,x.csv,matrix"], header="sample,counts,format")
    assert report["files"][0]["format"] == "matrix"
    assert data.read().counts.tolist() == [[1], [2]]
    assert "format" not in data.samples.columns


def test_metadata_carried_and_relative_paths_resolved(tmp_path):
    write(tmp_path / "data" / "a.tsv", "g\tc\nENSG00000000001\t3\n")
    sub = tmp_path / "sheets"
    sub.mkdir()
    write(sub / "sheet.csv", "sample,counts,condition,tissue,batch,age\nA,../data/a.tsv,normal,lung,b1,42\n")
    ingest(sub / "sheet.csv", tmp_path / "out")
    samples = Dataset(tmp_path / "out").samples
    assert samples.to_dict("records") == [
        {"sample_id": "A", "condition": "normal", "tissue": "lung", "batch": "b1", "age": "42"}
    ]


def test_streaming_tiles_and_row_groups_give_identical_results(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.negative_binomial(2, 0.01, size=(300, 57))
    header = "gene_id\t" + "\t".join(f"S{j}" for j in range(57))
    lines = [f"ENSG{i:011d}\t" + "\t".join(map(str, values[i])) for i in range(300)]
    write(tmp_path / "m.tsv.gz", header + "\n" + "\n".join(lines) + "\n", gz=True)
    rows = [f"S{j},m.tsv.gz" for j in range(57)]
    big = ingest(sheet(tmp_path, rows), tmp_path / "big", IngestOptions())
    small = ingest(sheet(tmp_path, rows), tmp_path / "small",
                   IngestOptions(chunk_size=7, tile_bytes=1000))
    a, b = Dataset(tmp_path / "big"), Dataset(tmp_path / "small")
    np.testing.assert_array_equal(a.read().counts, values.T)
    np.testing.assert_array_equal(b.read().counts, values.T)
    assert pq.ParquetFile(tmp_path / "small" / "counts.parquet").num_row_groups == 9
    assert [len(c) for c in b.iter_chunks(10)] == [10] * 5 + [7]
    assert big["samples"] == small["samples"]


def test_report_contents(tmp_path):
    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\t3\nENSG00000000002\t0\n")
    _, _report = run(tmp_path, ["A,a.tsv"])
    saved = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert saved["n_samples"] == 1 and saved["n_genes"] == 2
    assert saved["samples"] == [{"sample_id": "A", "library_size": 3, "library_size_input": 3.0,
                                 "genes_detected": 1, "genes_missing": 0, "values_rounded": 0}]
    assert {"nofone_version", "created", "options", "files", "genes"} <= set(saved)
