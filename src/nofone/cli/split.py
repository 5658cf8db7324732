"""`nofone split`: seeded train/test split of the normal samples, stratified by tissue."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.choices import DEFAULT_CHUNK_SIZE
from nofone.cli.common import echo, handle_errors


@handle_errors
def split_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: train/ and test/ datasets and split.tsv."),
    test_fraction: float = typer.Option(0.1, help="Fraction of each stratum held out."),
    stratify: str = typer.Option("tissue", help="Sample column to stratify by ('' for none)."),
    seed: int = typer.Option(0, help="Random seed."),
    condition_column: str = typer.Option("condition", help="Column that marks normal samples."),
    normal_value: str = typer.Option("normal", help="Value of that column for normal samples."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, min=1, help="Samples per chunk; bounds memory."),
) -> None:
    """Split the normal samples into train and held-out test sets.

    Example: nofone split --input data/ --outdir split/ --test-fraction 0.15 --seed 1
    """
    from nofone.io.atomic import staged_outdir
    from nofone.io.dataset import Dataset, copy_subset
    from nofone.io.split import stratified_split

    data = Dataset(input)
    table = stratified_split(data.samples, test_fraction, seed, stratify or None,
                             condition_column, normal_value)
    with staged_outdir(outdir) as stage:
        for part in ("train", "test"):
            ids = table.loc[table["split"] == part, "sample_id"].tolist()
            (stage / part).mkdir()
            copy_subset(data, stage / part, sample_ids=ids, chunk_size=chunk_size)
        table.to_csv(stage / "split.tsv", sep="\t", index=False)
    counts = table["split"].value_counts().to_dict()
    echo(f"train {counts.get('train', 0)}, test {counts.get('test', 0)}, "
         f"excluded (not {normal_value}) {counts.get('excluded', 0)} -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("split")(split_command)
