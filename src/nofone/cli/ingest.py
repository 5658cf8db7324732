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
    annotation: Path | None = typer.Option(None, help="Gene annotation TSV(.gz) with Ensembl ids and symbols/Entrez ids: maps ids to Ensembl, adds names and biotypes."),
    genes: Path | None = typer.Option(None, help="Gene list (one id per line, or a model's genes.tsv): keep exactly these genes, in order (docs/inputs.md)."),
    round_counts: bool = typer.Option(False, "--round-counts", help="Round non-integer counts (RSEM expected counts, Salmon NumReads) instead of refusing them."),
    format: str = typer.Option("auto", "--format", help=f"Count file format for rows without a 'format' column: {', '.join(FORMATS)}."),
    strandedness: str = typer.Option("unstranded", help=f"STAR ReadsPerGene column for rows without a 'strandedness' column: {', '.join(STRANDEDNESS)}."),
    duplicates: str = typer.Option("sum", help="Genes that occur more than once after id mapping: sum, drop or error."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, min=1, help="Samples per Parquet row group; bounds memory."),
) -> None:
    """Read count files into one dataset, validating every value.

    Example: nofone ingest --samplesheet samplesheet.csv --outdir data/ --round-counts
    """
    from nofone.io.ingest import IngestOptions, ingest

    options = IngestOptions(format=format, strandedness=strandedness, round_counts=round_counts,
                            duplicates=duplicates, annotation=annotation, genes=genes,
                            chunk_size=chunk_size)
    report = ingest(samplesheet, outdir, options)
    dropped = ", ".join(f"{k} {v}" for k, v in report["genes"]["dropped"].items() if v) or "none"
    echo(f"ingested {report['n_samples']} samples x {report['n_genes']} genes into {outdir} "
         f"(genes dropped: {dropped}; missing from input: {report['genes']['n_missing_from_input']})")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
