"""`nofone ingest`: count files named by a sample sheet -> a Parquet dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.choices import DEFAULT_CHUNK_SIZE, FORMATS, STRANDEDNESS
from nofone.cli.common import echo, handle_errors


@handle_errors
def ingest_command(
    samplesheet: Path = typer.Option(..., "--samplesheet", "-i", help="CSV with columns sample,counts[,condition,tissue,batch,column,...]."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder: counts/genes/samples.parquet and ingest_report.json."),
    annotation: list[Path] | None = typer.Option(None, help="Gene annotation TSV(.gz): an Ensembl table and/or the NCBI gene alias table; repeatable. Maps symbols and Entrez ids to Ensembl (rule: docs/input.md)."),
    genes: Path | None = typer.Option(None, help="Gene list (one id per line, or a model's genes.tsv): keep exactly these genes, in order (docs/input.md)."),
    round_counts: bool = typer.Option(False, "--round-counts", help="Round non-integer counts (RSEM expected counts, Salmon NumReads) instead of refusing them."),
    format: str = typer.Option("auto", "--format", help=f"Count file format for rows without a 'format' column: {', '.join(FORMATS)}."),
    strandedness: str | None = typer.Option(None, help=f"STAR ReadsPerGene column for rows without a 'strandedness' column: {', '.join(STRANDEDNESS)} (default unstranded)."),
    duplicates: str = typer.Option("sum", help="Genes that occur more than once after id mapping: sum, drop or error."),
    min_library_size: int | None = typer.Option(None, min=0, help="Refuse samples with fewer counts (default: one per gene kept; 0 keeps every sample). See docs/input.md."),
    intersect_genes: bool = typer.Option(False, "--intersect-genes", help="Keep the genes every file has even when one file has far fewer than the others (refused by default)."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, min=1, help="Samples per Parquet row group; bounds memory."),
) -> None:
    """Read count files into one dataset, validating every value.

    Example: nofone ingest --samplesheet samplesheet.csv --outdir data/ --round-counts
    """
    from nofone.io.ingest import IngestOptions, ingest

    options = IngestOptions(format=format, strandedness=strandedness, round_counts=round_counts,
                            duplicates=duplicates, annotation=annotation or None, genes=genes,
                            chunk_size=chunk_size, min_library_size=min_library_size,
                            intersect_genes=intersect_genes)
    report = ingest(samplesheet, outdir, options)
    dropped = ", ".join(f"{k} {v}" for k, v in report["genes"]["dropped"].items() if v) or "none"
    echo(f"ingested {report['n_samples']} samples x {report['n_genes']} genes into {outdir} "
         f"(genes dropped: {dropped}; missing from input: {report['genes']['n_missing_from_input']}; "
         f"warnings: {len(report['warnings'])}, in {outdir}/ingest_report.json)")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
