"""Bad input: a clear error naming the culprit, a non-zero exit, and no output left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write

from nofone.errors import InputError
from nofone.io.ingest import IngestOptions, ingest

GOOD = "g\tc\nENSG00000000001\t3\nENSG00000000002\t4\n"


def attempt(tmp: Path, sheet_text: str, files: dict[str, str], match: str, **options) -> None:
    """Ingest must fail with `match` in the message and leave `out` absent."""
    for name, text in files.items():
        if text == "<empty>":
            (tmp / name).write_bytes(b"")
        else:
            write(tmp / name, text)
    sheet = write(tmp / "sheet.csv", sheet_text)
    with pytest.raises(InputError, match=match):
        ingest(sheet, tmp / "out", IngestOptions(**options))
    assert not (tmp / "out").exists()
    assert not [p for p in tmp.iterdir() if ".partial-" in p.name], "staging folder left behind"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("2.5", r"a\.tsv, line 3: gene 'ENSG00000000002', sample 'A'.*non-integer count 2\.5"),
        ("-1", r"a\.tsv, line 3: gene 'ENSG00000000002', sample 'A'.*negative count -1"),
        ("NA", r"a\.tsv, line 3: gene 'ENSG00000000002'.*missing or non-numeric"),
        ("", r"a\.tsv, line 3: gene 'ENSG00000000002'.*missing or non-numeric"),
        ("nan", r"a\.tsv, line 3: gene 'ENSG00000000002'.*missing or non-numeric"),
        ("inf", r"a\.tsv, line 3: gene 'ENSG00000000002'.*infinite"),
        ("12abc", r"a\.tsv, line 3: gene 'ENSG00000000002', sample 'A' \(column 'c'\): not a number: '12abc'"),
    ],
)
def test_bad_values(tmp_path, value, match):
    text = f"g\tc\nENSG00000000001\t3\nENSG00000000002\t{value}\n"
    attempt(tmp_path, "sample,counts\nA,a.tsv\n", {"a.tsv": text}, match)


def test_bad_value_in_a_big_matrix_names_its_line_and_sample(tmp_path):
    rows = [f"ENSG{i:011d}\t" + "\t".join(["1"] * 5) for i in range(5000)]
    rows[4321] = f"ENSG{4321:011d}\t1\t1\t1\t-3\t1"
    text = "gene_id\tS0\tS1\tS2\tS3\tS4\n" + "\n".join(rows) + "\n"
    sheet = "sample,counts\n" + "".join(f"S{j},m.tsv\n" for j in range(5))
    attempt(tmp_path, sheet, {"m.tsv": text},
            r"m\.tsv, line 4323: gene 'ENSG00000004321', sample 'S3'.*negative count -3")


def test_rounding_allows_non_integers_but_not_negatives(tmp_path):
    text = "g\tc\nENSG00000000001\t3.7\nENSG00000000002\t-0.2\n"
    attempt(tmp_path, "sample,counts\nA,a.tsv\n", {"a.tsv": text}, r"negative count -0\.2", round_counts=True)


@pytest.mark.parametrize(
    ("sheet", "files", "match"),
    [
        ("sample,counts\nA,a.tsv\n", {"a.tsv": "<empty>"}, r"count file .*a\.tsv is empty"),
        ("sample,counts\nA,a.tsv\n", {"a.tsv": "g\tc\n"}, r"a\.tsv has no gene rows"),
        ("sample,counts\nA,a.tsv\nA,b.tsv\n", {"a.tsv": GOOD, "b.tsv": GOOD},
         r"line 3: duplicate sample id 'A' \(first on line 2\)"),
        ("sample,counts\nA,nowhere.tsv\n", {}, r"line 2: count file 'nowhere\.tsv' not found"),
        ("sample,counts,column\nA,m.tsv,S9\n", {"m.tsv": "gene_id\tS1\tS2\nENSG00000000001\t1\t2\n"},
         r"m\.tsv: no column 'S9' for sample 'A' \(sample sheet line 2\).*'S1', 'S2'"),
        ("sample,file\nA,a.tsv\n", {"a.tsv": GOOD}, r"missing required column\(s\) \['counts'\]"),
        ("sample,counts\n", {}, r"has a header but no samples"),
        ("", {}, r"sample sheet .* is empty"),
        ("sample,counts\nA;rm -rf /,a.tsv\n", {"a.tsv": GOOD}, r"line 2: sample id 'A;rm -rf /' is not allowed"),
        ("sample,counts\n$(touch x),a.tsv\n", {"a.tsv": GOOD}, r"sample id '\$\(touch x\)' is not allowed"),
        ("sample,counts\n../etc,a.tsv\n", {"a.tsv": GOOD}, r"sample id '\.\./etc' is not allowed"),
        ("sample,counts\n,a.tsv\n", {"a.tsv": GOOD}, r"line 2: empty 'sample'"),
        ("sample,counts\nA,\n", {}, r"line 2: empty 'counts' for sample 'A'"),
        ("sample,counts\nA,a.tsv,extra\n", {"a.tsv": GOOD}, r"line 2: 3 fields, header has 2"),
        ("sample,counts\nA,s3://bucket/a.tsv\n", {}, r"'s3://bucket/a\.tsv' is a remote path"),
        ("sample,counts,strandedness\nA,a.tsv,sideways\n", {"a.tsv": GOOD}, r"strandedness 'sideways'"),
        ("sample,counts\nA,a.tsv\nB,a.tsv\n", {"a.tsv": GOOD}, r"a\.tsv \(two-column\) holds one sample but"),
        ("sample,counts,column\nA,m.tsv,S1\nB,m.tsv,S1\n", {"m.tsv": "gene_id\tS1\tS2\nENSG00000000001\t1\t2\n"},
         r"samples 'A' and 'B' both read column 'S1'"),
        ("sample,counts\nA,a.tsv\n", {"a.tsv": "ENSG00000000001\t1\t2\t3\t4\t5\n"},
         r"no column 'A' for sample 'A'"),
    ],
    ids=["empty-file", "header-only", "duplicate-id", "missing-file", "absent-column", "no-counts-column",
         "no-rows", "empty-sheet", "shell-metachar-id", "subshell-id", "path-id", "empty-id", "empty-counts",
         "ragged-row", "remote", "bad-strandedness", "per-sample-file-reused", "column-read-twice",
         "unknown-matrix-column"],
)
def test_bad_sheets_and_files(tmp_path, sheet, files, match):
    attempt(tmp_path, sheet, files, match)


def test_non_integer_counts_in_samples_by_genes(tmp_path):
    text = ",ENSG00000000001,ENSG00000000002\nx1,1,2.5\n"
    attempt(tmp_path, "sample,counts,column\nX,s.csv,x1\n", {"s.csv": text},
            r"s\.csv, line 2: gene 'ENSG00000000002', sample 'X'.*non-integer")


def test_missing_row_in_samples_by_genes(tmp_path):
    text = ",ENSG00000000001,ENSG00000000002\nx1,1,2\n"
    attempt(tmp_path, "sample,counts,column\nX,s.csv,x9\n", {"s.csv": text}, r"no row labelled \['x9'\]")


def test_no_common_genes(tmp_path):
    files = {"a.tsv": "g\tc\nENSG00000000001\t1\n", "b.tsv": "g\tc\nENSG00000000002\t1\n"}
    attempt(tmp_path, "sample,counts\nA,a.tsv\nB,b.tsv\n", files,
            r"no gene is in every count file: .*a\.tsv \(1 genes?, ensembl ids\), .*b\.tsv")


def test_bad_gene_list_and_annotation(tmp_path):
    attempt(tmp_path, "sample,counts\nA,a.tsv\n", {"a.tsv": GOOD}, r"gene list .*nope\.txt does not exist",
            genes=tmp_path / "nope.txt")
    write(tmp_path / "dup.txt", "ENSG00000000001\nENSG00000000001.2\n")
    attempt(tmp_path, "sample,counts\nA,a.tsv\n", {"a.tsv": GOOD}, r"duplicate gene ids \['ENSG00000000001'\]",
            genes=tmp_path / "dup.txt")
    write(tmp_path / "ann.tsv", "symbol\tbiotype\nAAA\tprotein_coding\n")
    attempt(tmp_path, "sample,counts\nA,a.tsv\n", {"a.tsv": GOOD}, r"annotation .*ann\.tsv: no Ensembl id column",
            annotation=tmp_path / "ann.tsv")


def test_failure_leaves_an_existing_output_folder_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "counts.parquet").write_text("previous result")
    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\t-1\n")
    sheet = write(tmp_path / "sheet.csv", "sample,counts\nA,a.tsv\n")
    with pytest.raises(InputError):
        ingest(sheet, out)
    assert [p.name for p in out.iterdir()] == ["counts.parquet"]
    assert (out / "counts.parquet").read_text() == "previous result"


def test_cli_exit_code_and_message(tmp_path, runner):
    from nofone.cli.app import app

    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\t1.5\n")
    sheet = write(tmp_path / "sheet.csv", "sample,counts\nA,a.tsv\n")
    result = runner.invoke(app, ["ingest", "--samplesheet", str(sheet), "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "non-integer count 1.5" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_console_script_exit_code(tmp_path):
    write(tmp_path / "a.tsv", "g\tc\nENSG00000000001\tNA\n")
    sheet = write(tmp_path / "sheet.csv", "sample,counts\nA,a.tsv\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nofone", "-q", "ingest", "--samplesheet", str(sheet), "--outdir",
         str(tmp_path / "out")], capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "missing or non-numeric value" in proc.stderr
    assert proc.stdout == ""
