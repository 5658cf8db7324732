"""Property-based tests (hypothesis) of every count-file reader, the sample sheet, gene lists and
annotations: any bytes give either exact values or a one-line InputError, never a traceback.

Bounded: a few dozen examples per property, no deadline (the machine is shared), about a
second or two each. `NOFONE_FUZZ_SCALE=20` tries twenty times as many.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nofone.errors import InputError
from nofone.io.dataset import Dataset
from nofone.io.gene_ids import Annotation, read_gene_list
from nofone.io.ingest import IngestOptions, ingest
from nofone.io.samplesheet import SAMPLE_ID_PATTERN, read_samplesheet
from nofone.io.values import INT64_MAX, BadCount, parse_counts

SCALE = float(os.environ.get("NOFONE_FUZZ_SCALE", "1"))


def bounded(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


FAST = bounded(20)
COUNTS = st.one_of(st.integers(0, 1000), st.integers(0, INT64_MAX),
                   st.sampled_from([0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**62, INT64_MAX - 1, INT64_MAX]))


def ensembl_ids(n: int):
    return st.lists(st.integers(1, 10**11 - 1), min_size=n, max_size=n, unique=True).map(
        lambda xs: [f"ENSG{x:011d}" for x in xs])


@st.composite
def tables(draw):
    """A genes x samples table of exact counts: gene ids, sample names, values[gene][sample]."""
    n_genes = draw(st.integers(2, 6))
    n_samples = draw(st.integers(1, 3))
    genes = draw(ensembl_ids(n_genes))
    values = draw(st.lists(st.lists(COUNTS, min_size=n_samples, max_size=n_samples), min_size=n_genes,
                           max_size=n_genes))
    return genes, [f"S{j + 1}" for j in range(n_samples)], values


def render(fmt: str, genes: list[str], samples: list[str], values: list[list[int]], strand: int) -> str:
    """The table written in a reader's format (per-sample formats use the first sample)."""
    first = [row[0] for row in values]
    if fmt == "two-column":
        return "gene_id\tcount\n" + "".join(f"{g}.3\t{v}\n" for g, v in zip(genes, first))
    if fmt == "htseq":
        return "".join(f"{g}\t{v}\n" for g, v in zip(genes, first)) + "__no_feature\t9\n__ambiguous\t2\n"
    if fmt == "star":
        head = "".join(f"N_{k}\t1\t1\t1\n" for k in ("unmapped", "multimapping", "noFeature", "ambiguous"))
        return head + "".join(f"{g}\t" + "\t".join(str(v if k == strand else 7) for k in range(3)) + "\n"
                              for g, v in zip(genes, first))
    if fmt == "salmon":
        return "Name\tLength\tEffectiveLength\tTPM\tNumReads\n" + "".join(
            f"{g}\t1000\t800.5\t1.25\t{v}\n" for g, v in zip(genes, first))
    body = ["\t".join([g, *map(str, row)]) for g, row in zip(genes, values)]
    if fmt == "featurecounts":
        header = "Geneid\tChr\tStart\tEnd\tStrand\tLength\t" + "\t".join(f"/bam/{s}.bam" for s in samples)
        rows = ["\t".join([g, "chr1", "1", "100", "+", "100", *map(str, row)]) for g, row in zip(genes, values)]
        return "# Program:featureCounts v2.0.3\n" + header + "\n" + "\n".join(rows) + "\n"
    if fmt == "nfcore":
        rows = ["\t".join([g, f"SYM{i}", *map(str, row)]) for i, (g, row) in enumerate(zip(genes, values))]
        return "gene_id\tgene_name\t" + "\t".join(samples) + "\n" + "\n".join(rows) + "\n"
    if fmt == "gct":
        rows = ["\t".join([g, "na", *map(str, row)]) for g, row in zip(genes, values)]
        return f"#1.2\n{len(genes)}\t{len(samples)}\nName\tDescription\t" + "\t".join(samples) + "\n" + \
            "\n".join(rows) + "\n"
    if fmt == "matrix-csv":
        return "gene," + ",".join(samples) + "\n" + "\n".join(b.replace("\t", ",") for b in body) + "\n"
    if fmt == "samples-by-genes":
        rows = [",".join([s, *(str(values[g][j]) for g in range(len(genes)))]) for j, s in enumerate(samples)]
        return "," + ",".join(genes) + "\n" + "\n".join(rows) + "\n"
    return "gene_id\t" + "\t".join(samples) + "\n" + "\n".join(body) + "\n"


FORMATS = ["two-column", "htseq", "star", "salmon", "featurecounts", "nfcore", "gct", "matrix", "matrix-csv",
           "samples-by-genes"]
PER_SAMPLE = {"two-column", "htseq", "star", "salmon"}


def run_ingest(folder: Path, content: bytes, sheet: str, **options):
    path = folder / "c.txt"
    path.write_bytes(content)
    (folder / "sheet.csv").write_text(sheet)
    ingest(folder / "sheet.csv", folder / "out", IngestOptions(min_library_size=0, **options))
    return Dataset(folder / "out")


@pytest.mark.parametrize("fmt", FORMATS)
@FAST
@given(table=tables(), strand=st.integers(0, 2), compress=st.booleans(), crlf=st.booleans())
def test_every_reader_gives_the_exact_counts(fmt, table, strand, compress, crlf):
    genes, samples, values = table
    if fmt in PER_SAMPLE:
        samples, values = samples[:1], [row[:1] for row in values]
    text = render(fmt, genes, samples, values, strand)
    if crlf:
        text = text.replace("\n", "\r\n")
    content = gzip.compress(text.encode()) if compress else text.encode()
    sheet = "sample,counts\n" + "".join(f"{s},c.txt\n" for s in samples)
    strandedness = ["unstranded", "forward", "reverse"][strand] if fmt == "star" else None
    with tempfile.TemporaryDirectory() as tmp:
        data = run_ingest(Path(tmp), content, sheet, strandedness=strandedness)
        assert data.gene_ids == genes
        chunk = data.read(samples)
        got = [[int(chunk.counts[j, g]) for j in range(len(samples))] for g in range(len(genes))]
        assert got == values


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + delete:]
    return data


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 4), st.binary(max_size=4)), max_size=6)
VALID = {fmt: render(fmt, ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"], ["S1", "S2"],
                     [[5, 6], [7, 8], [9, 10]], 0).encode() for fmt in FORMATS}


def ingest_or_input_error(content: bytes, sheet: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = run_ingest(Path(tmp), content, sheet)
        except InputError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            return
        assert data.n_samples >= 1
        assert (data.read().counts >= 0).all()


@pytest.mark.parametrize("fmt", FORMATS)
@bounded(20)
@given(edits=EDITS, compress=st.booleans())
def test_a_damaged_count_file_is_read_or_refused(fmt, edits, compress):
    content = mutate(VALID[fmt], edits)
    sheet = "sample,counts\nS1,c.txt\n" if fmt in PER_SAMPLE else "sample,counts\nS1,c.txt\nS2,c.txt\n"
    ingest_or_input_error(gzip.compress(content) if compress else content, sheet)


@bounded(60)
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
def test_any_bytes_as_a_count_file_are_read_or_refused(content):
    ingest_or_input_error(content, "sample,counts\nS1,c.txt\n")


SHEET = b"sample,counts,condition,tissue\nA,c.txt,normal,colon\nB,c.txt,tumour,\"rec,tum\"\n"


@bounded(80)
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=120).map(str.encode),
                         EDITS.map(lambda e: mutate(SHEET, e))))
def test_any_bytes_as_a_sample_sheet_are_parsed_or_refused(content):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.txt").write_text("x\t1\n")
        path = Path(tmp) / "sheet.csv"
        path.write_bytes(content)
        try:
            rows = read_samplesheet(path)
        except InputError as exc:
            assert str(exc)
            return
        for row in rows:
            assert SAMPLE_ID_PATTERN.fullmatch(row.sample) and "\n" not in row.sample
            assert row.counts.is_file()


@bounded(40)
@given(content=st.one_of(st.binary(max_size=200), EDITS.map(
    lambda e: mutate(b"ensgene\tsymbol\tbiotype\nENSG00000000001\tA\tprotein_coding\n", e))))
def test_any_bytes_as_an_annotation_or_gene_list_are_read_or_refused(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tsv"
        path.write_bytes(content)
        for reader in (Annotation.read, read_gene_list):
            try:
                reader(path)
            except InputError as exc:
                assert str(exc)


@bounded(200)
@given(n=st.integers(0, 2**70))
def test_count_text_is_exact_or_refused(n):
    forms = [str(n), f"{n}.0", f"+{n}", f" {n} ", f"{n}e0"]
    for text in forms:
        if n <= INT64_MAX:
            values, _ = parse_counts(pa.array([text, "1.5"]), round_counts=True)
            assert int(values[0]) == n, text
        else:
            with pytest.raises(BadCount, match="does not fit a 64-bit integer"):
                parse_counts(pa.array([text]), round_counts=False)


@bounded(200)
@given(text=st.text(alphabet="0123456789+-.eE xX_,naif\u0663\x00", max_size=25))
def test_any_count_text_is_a_count_or_a_bad_count(text):
    try:
        values, _ = parse_counts(pa.array([text]), round_counts=False)
    except BadCount as bad:
        assert bad.row == 0 and bad.reason
        return
    assume(len(values))
    assert 0 <= int(values[0]) <= INT64_MAX
