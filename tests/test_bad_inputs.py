"""A corpus of bad inputs, through the real CLI: each ends in exit 2 and one line naming the
culprit, never a traceback, never raw bytes on the terminal, and no output or staging left.

Every file is generated here in tmp_path; none is kept in the repository. Valid edge cases that
must keep working (exact large counts, warnings instead of errors) are at the end.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nofone.cli.app import app
from nofone.io.dataset import Dataset

E1, E2, E3 = "ENSG00000000001", "ENSG00000000002", "ENSG00000000003"
GOOD = f"g\tc\n{E1}\t3\n{E2}\t4\n"
MATRIX = f"gene_id\tA\tB\n{E1}\t3\t5\n{E2}\t4\t6\n"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@dataclass
class Case:
    """One bad input: the sheet, the files it names, CLI options, and what the error must say."""

    sheet: str | bytes
    files: dict[str, str | bytes] = field(default_factory=dict)
    match: str = ""
    args: list[str] = field(default_factory=list)


def big(value: str) -> str:
    return f"g\tc\n{E1}\t3\n{E2}\t{value}\n"


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


SHEET = "sample,counts\nA,a.tsv\n"
TWO = "sample,counts\nA,a.tsv\nB,b.tsv\n"
VALUE = r"a\.tsv, line 3: gene 'ENSG00000000002', sample 'A' \(column 'c'\): "
MANY = "g\tc\n" + "".join(f"ENSG{i:011d}\t5\n" for i in range(200))
CASES = {
    # values: exact integers or a refusal naming file, line, gene, sample
    "above-int64": Case(SHEET, {"a.tsv": big("9223372036854775808")},
                        VALUE + r"count '9223372036854775808' does not fit a 64-bit integer"),
    "20-digit": Case(SHEET, {"a.tsv": big("99999999999999999999")},
                     VALUE + r"count '99999999999999999999' does not fit"),
    "exponent-too-big": Case(SHEET, {"a.tsv": big("1e20")}, VALUE + r"count '1e20' does not fit"),
    "exponent-overflow": Case(SHEET, {"a.tsv": big("1e400")}, VALUE + r"count '1e400' does not fit"),
    "huge-fraction": Case(SHEET, {"a.tsv": big("9007199254740993.5")},
                          VALUE + r"non-integer count 9007199254740993\.5"),
    "hex": Case(SHEET, {"a.tsv": big("0x10")}, VALUE + r"not a number: '0x10'"),
    "underscore": Case(SHEET, {"a.tsv": big("1_000")}, VALUE + r"not a number: '1_000'"),
    "decimal-comma": Case(SHEET, {"a.tsv": big("1,5")}, VALUE + r"not a number: '1,5'"),
    "arabic-digit": Case(SHEET, {"a.tsv": big("\u0663")}, VALUE + r"not a number: '\\u0663'"),
    "infinity-word": Case(SHEET, {"a.tsv": big("Infinity")}, VALUE + r"infinite value"),
    "negative-int": Case(SHEET, {"a.tsv": big("-7")}, VALUE + r"negative count -7"),
    "negative-huge": Case(SHEET, {"a.tsv": big("-99999999999999999999")}, VALUE + r"negative count"),
    "nul-in-value": Case(SHEET, {"a.tsv": "g\tc\n" + "".join(f"ENSG{i:011d}\t1\n" for i in range(9000))
                                 + f"{E2}\t1\x002\n"}, r"not a number: '1\\x002'"),
    "escape-in-value": Case(SHEET, {"a.tsv": big("\x1b[31m5")}, r"not a number: '\\x1b\[31m5'"),
    "two-rows-sum-beyond-int64": Case(
        SHEET, {"a.tsv": f"g\tc\n{E1}\t3\n{E2}.1\t{2**62}\n{E2}.2\t{2**62}\n"},
        r"gene 'ENSG00000000002', sample 'A': the sum of its duplicate rows does not fit"),
    # library sizes
    "all-zero-sample": Case(SHEET, {"a.tsv": f"g\tc\n{E1}\t0\n{E2}\t0\n"},
                            r"1 sample\(s\) have fewer counts than the genes measured"
                            r".*'A' \(0 counts; sample sheet line 2\).*--min-library-size 0"),
    "zero-column-in-matrix": Case("sample,counts\nA,m.tsv\nB,m.tsv\n",
                                  {"m.tsv": f"gene_id\tA\tB\n{E1}\t3\t0\n{E2}\t4\t0\n"},
                                  r"'B' \(0 counts; sample sheet line 3\)"),
    "below-one-per-gene": Case(
        SHEET, {"a.tsv": "g\tc\n" + "".join(f"ENSG{i:011d}\t{int(i < 1)}\n" for i in range(50))},
                               r"'A' \(1 counts; sample sheet line 2\)"),
    "below-explicit-minimum": Case(SHEET, {"a.tsv": GOOD}, r"fewer than --min-library-size 100 counts.*'A' \(7 counts",
                                   ["--min-library-size", "100"]),
    # the gene set
    "one-gene-file": Case(TWO, {"a.tsv": MANY, "b.tsv": f"g\tc\n{E1}\t900\n"},
                          r"count file .*b\.tsv limits the gene set: it lacks 199 of the genes"
                          r".*leave 1 of the 200.*--intersect-genes"),
    "symbols-vs-ensembl": Case(TWO, {"a.tsv": GOOD, "b.tsv": "g\tc\nTP53\t3\nEGFR\t4\n"},
                               r"no gene is in every count file: .*a\.tsv \(2 genes, ensembl ids\), "
                               r".*b\.tsv \(2 genes, symbol ids\)"),
    # ids
    "newline-in-quoted-id": Case('sample,counts\n"A\nB",a.tsv\n', {"a.tsv": GOOD},
                                 r"sheet\.csv, line 2: the quoted field 'A\\nB' holds a line break"),
    "newline-in-quoted-path": Case('sample,counts\nA,"a.tsv\n"\n', {"a.tsv": GOOD},
                                   r"line 2: the quoted field 'a\.tsv\\n' holds"),
    "carriage-return-in-id": Case('sample,counts\n"A\rB",a.tsv\n', {"a.tsv": GOOD}, r"holds a line break"),
    "trailing-newline-id": Case('sample,counts\n"A\n",a.tsv\n', {"a.tsv": GOOD}, r"holds a line break"),
    "unicode-id": Case("sample,counts\nA\u00e9,a.tsv\n", {"a.tsv": GOOD}, r"sample id 'A\\xe9' is not allowed"),
    "empty-gene-id": Case(SHEET, {"a.tsv": f"g\tc\n{E1}\t3\n\t4\n"}, r"a\.tsv, line 3: empty gene id \(column 'g'\)"),
    "blank-gene-id": Case(SHEET, {"a.tsv": f"g\tc\n{E1}\t3\n   \t4\n"}, r"a\.tsv, line 3: empty gene id"),
    "empty-ids-in-matrix": Case("sample,counts\nA,m.tsv\n", {"m.tsv": f"gene_id\tgene_name\tA\n{E1}\tX\t3\n\t\t4\n"},
                                r"m\.tsv, line 3: empty gene id \(column 'gene_id', 'gene_name'\)"),
    "empty-gene-header": Case("sample,counts,column\nX,s.csv,x1\n", {"s.csv": f",{E1},{E2},,{E3}\nx1,1,2,3,4\n"},
                              r"s\.csv, line 1: header column 4 is empty; a gene column needs an id"),
    "samples-by-genes-no-genes": Case("sample,counts,column\nX,s.csv,x1\n", {"s.csv": f",{E1},{E2}\nx1,a,b\n"},
                                      r"no gene columns with numbers"),
    # encodings, binary files, unreadable paths
    "binary-sheet": Case(random_bytes(300, 1) + b"\x00", {},
                         r"sample sheet .* is not a text file: it holds binary data"),
    "latin1-sheet": Case("sample,counts,tissue\nA,a.tsv,c\u00f4lon\n".encode("latin-1"), {"a.tsv": GOOD},
                         r"sample sheet .* is not UTF-8 text \(byte 0xf4 at offset 30\)"),
    "utf16-sheet": Case(SHEET.encode("utf-16"), {"a.tsv": GOOD}, r"sample sheet .* is not a text file"),
    "nul-in-sheet": Case(b"sample,counts\nA\x00,a.tsv\n", {"a.tsv": GOOD},
                         r"binary data \(a NUL byte at offset 15\)"),
    "huge-field-in-sheet": Case("sample,counts\nA," + "x" * 200_000 + "\n", {},
                                r"line 2: field larger than field limit"),
    "binary-count-file": Case(SHEET, {"a.tsv": random_bytes(2000, 2) + b"\x00"},
                              r"count file .*a\.tsv is not a text table"),
    "zip-count-file": Case(SHEET, {"a.tsv": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + random_bytes(200, 3)},
                           r"a\.tsv is not a text table"),
    "latin1-count-file": Case(SHEET, {"a.tsv": f"g\tc\n{E1}\t3\nG\u00e9ne\t4\n".encode("latin-1")},
                              r"count file .*a\.tsv is not UTF-8 text \(byte 0xe9"),
    "truncated-gzip": Case(SHEET, {"a.tsv": gz(GOOD * 50)[:40]}, r"count file .*a\.tsv cannot be read"),
    "corrupt-gzip": Case(SHEET, {"a.tsv": gz(GOOD)[:10] + b"\xff" * 40}, r"count file .*a\.tsv cannot be read"),
    "gzip-of-binary": Case(SHEET, {"a.tsv": gzip.compress(random_bytes(500, 4) + b"\x00")},
                           r"a\.tsv is not a text table"),
    "count-path-is-folder": Case(SHEET, {"a.tsv/x": GOOD}, r"line 2: count file 'a\.tsv' is a folder"),
    "count-path-too-long": Case("sample,counts\nA," + "a" * 5000 + "\n", {},
                                r"line 2: count file 'a{10}.*cannot be used"),
    "count-path-unknown-user": Case("sample,counts\nA,~nosuchuser1234/a.tsv\n", {},
                                    r"count file '~nosuchuser1234/a\.tsv'"),
    "gene-list-binary": Case(SHEET, {"a.tsv": GOOD, "genes.txt": b"\x00\x01\x02"},
                             r"gene list .*genes\.txt is not a text file", ["--genes", "{tmp}/genes.txt"]),
    "gene-list-folder": Case(SHEET, {"a.tsv": GOOD, "genes/x": "y"}, r"gene list .*genes is a folder",
                             ["--genes", "{tmp}/genes"]),
    "annotation-binary": Case(SHEET, {"a.tsv": GOOD, "ann.tsv": random_bytes(100, 5) + b"\x00"},
                              r"annotation .*ann\.tsv is not a text table", ["--annotation", "{tmp}/ann.tsv"]),
    "annotation-no-ensembl": Case(SHEET, {"a.tsv": GOOD, "ann.tsv": "entrez\tsymbol\n1\tA\n"}, r"no Ensembl id column",
                                  ["--annotation", "{tmp}/ann.tsv"]),
    "annotation-folder": Case(SHEET, {"a.tsv": GOOD, "ann/x": "y"}, r"annotation .*ann is a folder",
                              ["--annotation", "{tmp}/ann"]),
    # the output folder, checked before any work (the count file here is bad too: the outdir is named first)
    "outdir-is-file": Case(SHEET, {"a.tsv": big("-1"), "out": "a file"},
                           r"output folder .*out is a file, not a folder"),
    "outdir-under-file": Case(SHEET, {"a.tsv": big("-1"), "f": "a file"},
                              r"output folder .*f/out cannot be created: .*f is a file", ["--outdir", "{tmp}/f/out"]),
}


def build(tmp: Path, case: Case) -> Path:
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    sheet = tmp / "sheet.csv"
    sheet.write_bytes(case.sheet if isinstance(case.sheet, bytes) else case.sheet.encode())
    return sheet


def assert_one_line_error(result, match: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line matching `match`, no raw control bytes."""
    import re

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert re.search(match, errors[0]), errors[0]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", result.output), "raw control characters reached the terminal"
    return errors[0]


def no_debris(tmp: Path) -> None:
    left = [p.name for p in tmp.rglob("*") if ".partial-" in p.name or ".old-" in p.name]
    assert not left, f"staging left behind: {left}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(tmp_path, runner, name):
    case = CASES[name]
    sheet = build(tmp_path, case)
    outdir_given = "--outdir" in case.args
    args = ["ingest", "--samplesheet", str(sheet)] + ([] if outdir_given else ["--outdir", str(tmp_path / "out")])
    args += [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    assert_one_line_error(runner.invoke(app, args), case.match)
    if "out" not in case.files:
        assert not (tmp_path / "out").exists()
    no_debris(tmp_path)


def test_a_binary_count_file_is_never_echoed(tmp_path, runner):
    """A BAM-like file under a .tsv name: the message names it, its bytes never reach the terminal."""
    payload = b"BAM\x01" + random_bytes(5000, 7)
    build(tmp_path, Case(SHEET, {"a.tsv": gzip.compress(payload)}))
    result = runner.invoke(app, ["ingest", "-i", str(tmp_path / "sheet.csv"), "-o", str(tmp_path / "out")])
    line = assert_one_line_error(result, r"a\.tsv is not a text table")
    assert len(line) < 400


@pytest.mark.skipif(ROOT, reason="root reads files whatever their mode; the monkeypatched test below covers it")
@pytest.mark.parametrize("what", ["sheet", "count file"])
def test_unreadable_files(tmp_path, runner, what):
    sheet = build(tmp_path, Case(SHEET, {"a.tsv": GOOD}))
    (sheet if what == "sheet" else tmp_path / "a.tsv").chmod(0)
    result = runner.invoke(app, ["ingest", "-i", str(sheet), "-o", str(tmp_path / "out")])
    assert_one_line_error(result, r"cannot be read: permission denied")


@pytest.mark.parametrize("what", ["sample sheet", "count file"])
def test_permission_denied_is_one_line(tmp_path, runner, monkeypatch, what):
    """As root chmod cannot make a file unreadable: make `open` refuse it instead."""
    import builtins

    sheet = build(tmp_path, Case(SHEET, {"a.tsv": GOOD}))
    denied = sheet if what == "sample sheet" else tmp_path / "a.tsv"
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if Path(str(file)) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(Path, "read_bytes", lambda self: guarded(self, "rb").read())
    result = runner.invoke(app, ["ingest", "-i", str(sheet), "-o", str(tmp_path / "out")])
    assert_one_line_error(result, rf"{what} .*cannot be read: permission denied")


def test_read_only_outdir_fails_before_the_work(tmp_path, runner, monkeypatch):
    sheet = build(tmp_path, Case(SHEET, {"a.tsv": big("-1")}))
    locked = tmp_path / "locked"
    locked.mkdir()
    if ROOT:
        real_access = os.access
        monkeypatch.setattr(os, "access",
                            lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    else:
        locked.chmod(0o555)
    result = runner.invoke(app, ["ingest", "-i", str(sheet), "-o", str(locked / "out")])
    assert_one_line_error(result, r"output folder .*locked/out cannot be written: .*locked is read-only")
    assert list(locked.iterdir()) == []


COMMANDS = {
    "train": ["train", "--input", "{tmp}/nothing"],
    "represent": ["represent", "--model", "{tmp}/nothing", "--input", "{tmp}/nothing"],
    "de": ["de", "--model", "{tmp}/nothing", "--representations", "{tmp}/nothing", "--input", "{tmp}/nothing"],
    "filter": ["filter", "--input", "{tmp}/nothing"],
    "split": ["split", "--input", "{tmp}/nothing"],
    "run": ["run", "--samplesheet", "{tmp}/nothing.csv"],
    "simulate": ["simulate"],
    "evaluate": ["evaluate", "--run", "{tmp}/nothing"],
    "report": ["report", "--run", "{tmp}/nothing"],
    "cohort-de": ["cohort-de", "--input", "{tmp}/nothing", "--group", "g", "--contrast", "a,b"],
    "import-bulkdgd": ["import-bulkdgd", "--decoder", "{tmp}/d.pth", "--gmm", "{tmp}/g.pth", "--genes", "{tmp}/g.txt"],
    "gather": ["gather", "{tmp}/nothing"],
    "pathways": ["pathways", "--de", "{tmp}/nothing", "--gene-sets", "{tmp}/g.gmt", "--model", "{tmp}/nothing"],
}


@pytest.mark.parametrize("problem", ["is-a-file", "under-a-file"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_step_checks_its_outdir_first(tmp_path, runner, command, problem):
    """Even with inputs that do not exist, the output folder is what the step refuses first."""
    (tmp_path / "file").write_text("not a folder")
    outdir = tmp_path / "file" if problem == "is-a-file" else tmp_path / "file" / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]] + ["--outdir", str(outdir)]
    expected = r"is a file, not a folder" if problem == "is-a-file" else r"cannot be created: .*file is a file"
    assert_one_line_error(runner.invoke(app, args), expected)


def test_representations_that_are_not_parquet(tmp_path, runner, small_model):
    model, data = small_model
    reps = tmp_path / "reps"
    reps.mkdir()
    (reps / "representations.parquet").write_bytes(random_bytes(500, 8))
    result = runner.invoke(app, ["de", "--model", str(model), "--representations", str(reps), "--input", str(data),
                                 "--outdir", str(tmp_path / "de")])
    assert_one_line_error(result, r"representations file .*representations\.parquet is not a readable Parquet file")
    assert not (tmp_path / "de").exists()


def test_dataset_given_as_a_file_and_broken_dataset_files(tmp_path, runner, small_model):
    model, data = small_model
    result = runner.invoke(app, ["represent", "--model", str(model), "--input", str(data / "counts.parquet"),
                                 "--outdir", str(tmp_path / "r")])
    assert_one_line_error(result, r"counts\.parquet is a file: give the dataset's folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("counts.parquet", "genes.parquet", "samples.parquet"):
        (broken / name).write_bytes(random_bytes(100, 9))
    result = runner.invoke(app, ["represent", "--model", str(model), "--input", str(broken),
                                 "--outdir", str(tmp_path / "r")])
    assert_one_line_error(result, r"dataset file .*genes\.parquet is not a readable Parquet file")


@pytest.mark.parametrize(("content", "match"), [
    (random_bytes(1000, 10), r"decoder .*d\.pth is not a PyTorch file: neither torch\.save's zip archive nor a pickle"),
    (None, r"decoder .*d\.pth is a folder, not a file"),
])
def test_import_bulkdgd_explains_a_bad_pth(tmp_path, runner, content, match):
    if content is None:
        (tmp_path / "d.pth").mkdir()
    else:
        (tmp_path / "d.pth").write_bytes(content)
    (tmp_path / "g.pth").write_bytes(b"")
    (tmp_path / "genes.txt").write_text(E1)
    result = runner.invoke(app, ["import-bulkdgd", "--decoder", str(tmp_path / "d.pth"),
                                 "--gmm", str(tmp_path / "g.pth"), "--genes", str(tmp_path / "genes.txt"),
                                 "--outdir", str(tmp_path / "m")])
    assert_one_line_error(result, match)


def test_zero_library_sample_kept_on_request_is_left_out_of_represent(tmp_path, small_model):
    """`--min-library-size 0` keeps an empty sample; represent leaves it out and says why."""
    from nofone.inference.represent import SearchConfig
    from nofone.io.ingest import IngestOptions, ingest
    from nofone.steps.represent import represent

    model, data = small_model
    genes = Dataset(data).gene_ids[:40]
    rows = "".join(f"{g}\t{50 + i}\t0\n" for i, g in enumerate(genes))
    (tmp_path / "m.tsv").write_text("gene_id\tFULL\tEMPTY\n" + rows)
    (tmp_path / "s.csv").write_text("sample,counts\nFULL,m.tsv\nEMPTY,m.tsv\n")
    with pytest.raises(Exception, match=r"'EMPTY' \(0 counts"):
        ingest(tmp_path / "s.csv", tmp_path / "d", IngestOptions())
    ingest(tmp_path / "s.csv", tmp_path / "d", IngestOptions(min_library_size=0))
    search = SearchConfig(steps_first=2, steps_second=2)
    summary = represent(model, tmp_path / "d", tmp_path / "r", search, device="cpu")
    assert summary["n_samples"] == 1 and list(summary["left_out"]) == ["EMPTY"]
    assert "library size 0" in summary["left_out"]["EMPTY"]
    report = json.loads((tmp_path / "r" / "represent_report.json").read_text())
    assert report["left_out"] == summary["left_out"]


# ---------------------------------------------------------------- valid edge cases, exact values


def ingest_one(tmp: Path, text: str, *args: str, sheet: str = SHEET):
    from typer.testing import CliRunner

    build(tmp, Case(sheet, {"a.tsv": text}))
    result = CliRunner().invoke(app, ["ingest", "-i", str(tmp / "sheet.csv"), "-o", str(tmp / "out"), *args])
    assert result.exit_code == 0, result.output
    return Dataset(tmp / "out"), json.loads((tmp / "out" / "ingest_report.json").read_text())


@pytest.mark.parametrize(("text", "value"), [
    ("9223372036854775807", 2**63 - 1),
    ("9007199254740993", 2**53 + 1),
    ("9007199254740993.0", 2**53 + 1),
    ("9.007199254740993e15", 2**53 + 1),
    ("+5", 5), (" 5 ", 5), ("-0", 0), ("1e3", 1000), ("000123", 123),
])
def test_large_and_odd_integers_are_exact(tmp_path, text, value):
    data, report = ingest_one(tmp_path, f"g\tc\n{E1}\t{text}\n{E2}\t4\n{E3}\t9\n")
    assert int(data.read().counts[0, 0]) == value
    assert report["samples"][0]["library_size"] == value + 13


def test_an_exact_large_value_beside_fractions_is_not_rounded_through_a_float(tmp_path):
    data, report = ingest_one(tmp_path, f"g\tc\n{E1}\t9007199254740993\n{E2}\t2.5\n{E3}\t3.5\n", "--round-counts")
    assert data.read().counts[0].tolist() == [2**53 + 1, 2, 4]
    assert report["samples"][0]["values_rounded"] == 2


def test_a_library_beyond_int64_is_reported_exactly(tmp_path):
    _, report = ingest_one(tmp_path, f"g\tc\n{E1}\t{2**62}\n{E2}\t{2**62}\n{E3}\t{2**62}\n")
    assert report["samples"][0]["library_size"] == 3 * 2**62


def test_min_library_size_zero_keeps_an_empty_sample(tmp_path):
    data, report = ingest_one(tmp_path, f"g\tc\n{E1}\t0\n{E2}\t0\n", "--min-library-size", "0")
    assert data.read().counts.tolist() == [[0, 0]] and report["min_library_size"] == 0


def test_intersect_genes_accepts_a_small_file_and_names_it(tmp_path):
    files = {"a.tsv": "g\tc\n" + "".join(f"ENSG{i:011d}\t5\n" for i in range(200)), "b.tsv": f"g\tc\n{E1}\t900\n"}
    build(tmp_path, Case("sample,counts\nA,a.tsv\nB,b.tsv\n", files))
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["ingest", "-i", str(tmp_path / "sheet.csv"), "-o", str(tmp_path / "out"),
                                      "--intersect-genes", "--min-library-size", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["n_genes"] == 1
    assert report["genes"]["per_file"][0] == {"path": str(tmp_path / "b.tsv"), "genes": 1, "lacks": 199}
    assert any("b.tsv lacks the most (199)" in w for w in report["warnings"])


def test_mixed_ids_without_annotation_warn(tmp_path):
    rows = "".join(f"ENSG{i:011d}\t5\n" for i in range(20)) + "TP53\t7\nERCC-00002\t1\n"
    _, report = ingest_one(tmp_path, "g\tc\n" + rows)
    warning = next(w for w in report["warnings"] if "are not ensembl ids" in w)
    assert "2 of 22 ids in column 'g'" in warning and "'TP53'" in warning and "--annotation" in warning


def test_mixed_ids_with_annotation_are_mapped(tmp_path):
    (tmp_path / "ann.tsv").write_text(f"ensgene\tsymbol\n{E1}\tAAA\n{E2}\tTP53\n")
    data, report = ingest_one(tmp_path, f"g\tc\n{E1}\t5\nTP53\t7\n", "--annotation", str(tmp_path / "ann.tsv"))
    assert data.gene_ids == [E1, E2] and not report["warnings"]


@pytest.mark.parametrize("where", ["sheet", "option"])
def test_strandedness_on_a_two_column_file_warns(tmp_path, where):
    sheet = "sample,counts,strandedness\nA,a.tsv,reverse\n" if where == "sheet" else SHEET
    args = [] if where == "sheet" else ["--strandedness", "reverse"]
    _, report = ingest_one(tmp_path, GOOD, *args, sheet=sheet)
    assert any("strandedness 'reverse' is ignored" in w and "two-column" in w for w in report["warnings"])


def test_star_with_strandedness_does_not_warn(tmp_path):
    star = "N_unmapped\t1\t1\t1\nN_multimapping\t1\t1\t1\nN_noFeature\t1\t1\t1\nN_ambiguous\t1\t1\t1\n"
    star += f"{E1}\t10\t2\t8\n{E2}\t20\t3\t17\n"
    data, report = ingest_one(tmp_path, star, "--strandedness", "reverse")
    assert data.read().counts.tolist() == [[8, 17]] and not report["warnings"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A tiny trained DGD and its dataset (seconds on a CPU)."""
    from nofone.io.ingest import IngestOptions, ingest
    from nofone.models.dgd.config import load_config
    from nofone.simulate import SimulationConfig, simulate
    from nofone.steps.train import train

    root = tmp_path_factory.mktemp("model")
    simulate(root / "sim", SimulationConfig(tissues=2, samples_per_tissue=12, genes=300, cases=2, seed=5))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions())
    (root / "config.json").write_text(json.dumps({"latent_dim": 2, "hidden": [8], "gmm": {"n_components": 2},
                                                  "training": {"epochs": 3, "batch_size": 8}}))
    train(root / "data", root / "model", load_config(str(root / "config.json")), device="cpu")
    return root / "model", root / "data"
