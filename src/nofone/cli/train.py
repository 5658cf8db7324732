"""`nofone train` and `nofone import-bulkdgd`: make a model artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.choices import PRESETS
from nofone.cli.common import echo, handle_errors


@handle_errors
def train_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder (normal samples are used)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Model folder to write."),
    config: str = typer.Option("small", help=f"Preset ({', '.join(PRESETS)}) or a JSON file of settings."),
    epochs: int | None = typer.Option(None, min=1, help="Override the number of epochs."),
    batch_size: int | None = typer.Option(None, min=1, help="Override the batch size."),
    seed: int | None = typer.Option(None, help="Override the random seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    checkpoint_dir: Path | None = typer.Option(None, help="Where checkpoints go (default: OUTDIR/checkpoints)."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep checkpoints after success."),
    condition_column: str = typer.Option("condition", help="Sample column that marks normal samples."),
    normal_value: str = typer.Option("normal", help="Value of that column for normal samples."),
    stratify: str = typer.Option("tissue", help="Column to stratify the held-out split by ('' for none)."),
) -> None:
    """Train the DGD on the normal samples of a dataset.

    Example: nofone train --input data/ --outdir model/ --config small --epochs 200
    """
    from nofone.models.dgd.config import load_config
    from nofone.steps.train import train

    overrides = {"training.epochs": epochs, "training.batch_size": batch_size, "training.seed": seed}
    settings = load_config(config, overrides)
    summary = train(input, outdir, settings, condition_column=condition_column, normal_value=normal_value,
                    stratify=stratify or None, device=device, resume=resume, checkpoint_dir=checkpoint_dir,
                    keep_checkpoints=keep_checkpoints)
    test = summary["final_loss_test"]
    echo(f"trained on {summary['n_train']} samples ({summary['n_test']} held out) in {summary['seconds']} s: "
         f"loss/sample {summary['final_loss_train']:.1f}" + (f", held-out {test:.1f}" if test else "")
         + f"; {summary['components_used']} components used -> {outdir}")


@handle_errors
def import_bulkdgd_command(
    decoder: Path = typer.Option(..., help="bulkDGD v1 decoder state dict (dec.pth)."),
    gmm: Path = typer.Option(..., help="bulkDGD v1 GMM state dict (gmm.pth)."),
    genes: Path = typer.Option(..., help="The model's gene list (genes_v1.txt), in decoder order."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Model folder to write."),
) -> None:
    """Import the published bulkDGD v1 model (loaded with weights_only=True: no code runs).

    Example: nofone import-bulkdgd --decoder dec.pth --gmm gmm_v1.pth --genes genes_v1.txt --outdir bulkdgd_v1/
    """
    from nofone.io.atomic import staged_outdir
    from nofone.io.gene_ids import read_gene_list
    from nofone.models.dgd.model import DGD, load_torch_state

    model = DGD.from_bulkdgd_v1(
        load_torch_state(decoder, "decoder"), load_torch_state(gmm, "GMM"), read_gene_list(genes),
        source={"format": "bulkdgd-v1", "decoder": str(decoder), "gmm": str(gmm), "genes": str(genes)},
    )
    with staged_outdir(outdir) as stage:
        model.save(stage)
    c = model.config
    echo(f"imported bulkDGD v1: latent {c.latent_dim}, hidden {list(c.hidden)}, {model.n_components} "
         f"components, {len(model.gene_ids)} genes -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("import-bulkdgd")(import_bulkdgd_command)
