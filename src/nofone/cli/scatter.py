"""`nofone chunk` and `nofone gather`: scatter samples over cluster jobs and merge the results."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors


@handle_errors
def chunk_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Folder for chunk_0001.txt, chunk_0002.txt, ..."),
    chunk_size: int = typer.Option(16, min=1, help="Samples per chunk."),
    condition: str | None = typer.Option(None, help="Only samples whose 'condition' is this value."),
    exclude_training: Path | None = typer.Option(None, help="Model folder: leave out the samples it trained on."),
) -> None:
    """List the samples to test in chunks, one file per cluster job.

    Example: nofone chunk --input data/ --outdir chunks/ --chunk-size 32 --exclude-training model/
    """
    from nofone.io.dataset import Dataset
    from nofone.steps.common import select_samples
    from nofone.steps.scatter import write_chunks
    from nofone.steps.train import TRAIN_REPRESENTATIONS

    data = Dataset(input)
    ids = select_samples(data, condition=condition)
    if exclude_training is not None:
        import pyarrow.parquet as pq

        path = Path(exclude_training) / TRAIN_REPRESENTATIONS
        if path.is_file():
            table = pq.read_table(path, columns=["sample_id", "split"]).to_pandas()
            trained = set(table.loc[table["split"] == "train", "sample_id"])
            ids = [s for s in ids if s not in trained]
    if not ids:
        from nofone.errors import InputError

        raise InputError(f"{input}: every sample was used to train the model: nothing left to test")
    files = write_chunks(ids, outdir, chunk_size)
    echo(f"{len(ids)} samples in {len(files)} chunks -> {outdir}")


@handle_errors
def gather_command(
    parts: list[Path] = typer.Argument(..., help="Folders of represent and/or de outputs, one per chunk."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Merged output folder."),
) -> None:
    """Merge per-chunk representations and DE tables into the cohort's.

    Example: nofone gather de_chunk1/ de_chunk2/ --outdir de/
    """
    from nofone.steps.scatter import gather

    counts = gather(list(parts), outdir)
    echo(f"gathered {counts['representations']} representations and {counts['de_samples']} DE samples -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("chunk")(chunk_command)
    app.command("gather")(gather_command)
