"""`nofone train` and `nofone import-bulkdgd`: make a model artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors
from nofone.models.registry import DEFAULT_MODEL_TYPE, MODEL_TYPES, presets_help

BULKDGD_FORMATS = ("auto", "v1", "v2")  # = nofone.models.dgd.bulkdgd.FORMATS, without importing torch here


@handle_errors
def train_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder (normal samples are used)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Model folder to write."),
    model_type: str | None = typer.Option(None, "--model-type", help=f"Model to train: {', '.join(MODEL_TYPES)} (default: the JSON config's \"model_type\", else {DEFAULT_MODEL_TYPE})."),
    config: str | None = typer.Option(None, help=f"Preset ({presets_help()}) or a JSON file of settings."),
    epochs: int | None = typer.Option(None, min=1, help="Override the number of epochs."),
    batch_size: int | None = typer.Option(None, min=1, help="Override the batch size."),
    seed: int | None = typer.Option(None, help="Override the random seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    checkpoint_dir: Path | None = typer.Option(None, help="Where checkpoints go (default: OUTDIR/checkpoints)."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep checkpoints after success."),
    cross_fit: int = typer.Option(0, "--cross-fit", min=0, help="Also train K fold models so that every normal calibrates the local null (K more trainings; 0: none). docs/null.md."),
    condition_column: str = typer.Option("condition", help="Sample column that marks normal samples."),
    normal_value: str = typer.Option("normal", help="Value of that column for normal samples."),
    stratify: str = typer.Option("tissue", help="Column to stratify the held-out split by ('' for none)."),
) -> None:
    """Train a model of normal expression (the DGD, an NB-VAE or a diffusion model) on the normal samples of a dataset.

    Example: nofone train --input data/ --outdir model/ --config small --epochs 200
    Example: nofone train --model-type nbvae --input data/ --outdir model/
    Example: nofone train --model-type diffusion --config cpu --input data/ --outdir model/
    """
    from nofone.models.registry import model_class
    from nofone.steps.train import train

    cls = model_class(resolve_model_type(model_type, config))
    overrides = {"training.epochs": epochs, "training.batch_size": batch_size, "training.seed": seed}
    summary = train(input, outdir, cls.settings(config, overrides), condition_column=condition_column,
                    normal_value=normal_value, stratify=stratify or None, device=device, resume=resume,
                    checkpoint_dir=checkpoint_dir, keep_checkpoints=keep_checkpoints, cross_fit=cross_fit)
    test = summary["final_loss_test"]
    note = cls.fit_note(summary)
    echo(f"trained on {summary['n_train']} samples ({summary['n_test']} held out) in {summary['seconds']} s: "
         f"loss/sample {summary['final_loss_train']:.1f}" + (f", held-out {test:.1f}" if test else "")
         + (f"; {note}" if note else "") + f" -> {outdir}")


def resolve_model_type(asked: str | None, config: str | None) -> str:
    """--model-type, else the "model_type" of a JSON config file, else the default model; a
    conflict is an error."""
    if asked is not None and asked not in MODEL_TYPES:
        raise typer.BadParameter(f"use one of {', '.join(MODEL_TYPES)}", param_hint="--model-type")
    in_file = None
    if config and Path(config).is_file():
        import json

        try:
            data = json.loads(Path(config).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None  # the config loader reports it
        in_file = data.get("model_type") if isinstance(data, dict) else None
        if in_file is not None and in_file not in MODEL_TYPES:
            raise typer.BadParameter(f"{config}: model_type {in_file!r} is not one of {', '.join(MODEL_TYPES)}",
                                     param_hint="--config")
    if asked and in_file and asked != in_file:
        raise typer.BadParameter(f"--model-type {asked} but {config} is a {in_file} config", param_hint="--model-type")
    return asked or in_file or DEFAULT_MODEL_TYPE


@handle_errors
def import_bulkdgd_command(
    decoder: Path = typer.Option(..., help="bulkDGD decoder state dict (v1 dec.pth, or a 2.x decoder .pth)."),
    gmm: Path = typer.Option(..., help="bulkDGD GMM file (v1 gmm.pth, or a 2.x gmm.pth)."),
    genes: Path = typer.Option(..., help="The model's gene list (genes_v1.txt, 2.x genes.txt), in decoder order."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Model folder to write."),
    fmt: str = typer.Option("auto", "--format", help=f"bulkDGD version of the files: {', '.join(BULKDGD_FORMATS)} (auto: from the files' keys; v2 means 2.x)."),
) -> None:
    """Import a bulkDGD model, v1 or 2.x (loaded with weights_only=True: no code runs).

    The files do not record the decoder's activations; they are taken to be ReLU and softplus, as in every bulkDGD config. 2.x mixtures must have a diagonal covariance type.

    Example: nofone import-bulkdgd --decoder dec.pth --gmm gmm_v1.pth --genes genes_v1.txt --outdir bulkdgd_v1/
    Example: nofone import-bulkdgd --decoder dec.pth --gmm gmm.pth --genes genes.txt --format v2 --outdir bulkdgd_v2/
    """
    if fmt not in BULKDGD_FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(BULKDGD_FORMATS)}", param_hint="--format")
    from nofone.io.atomic import staged_outdir
    from nofone.io.gene_ids import read_gene_list
    from nofone.models.dgd.bulkdgd import Labels
    from nofone.models.dgd.model import DGD, load_torch_state

    model = DGD.from_bulkdgd(
        load_torch_state(decoder, "decoder"), load_torch_state(gmm, "GMM", scalars=True), read_gene_list(genes),
        fmt, source={"decoder": str(decoder), "gmm": str(gmm), "genes": str(genes)},
        labels=Labels(f"decoder {decoder}", f"GMM {gmm}", f"gene list {genes}"),
    )
    with staged_outdir(outdir) as stage:
        model.save(stage)
    c, source = model.config, model.info["source"]
    echo(f"imported bulkDGD {source['format'].removeprefix('bulkdgd-')} ({source['output_module']}, "
         f"{source['latent_type']} {source['covariance_type']}): latent {c.latent_dim}, hidden {list(c.hidden)}, "
         f"{model.n_components} components, {len(model.gene_ids)} genes -> {outdir}")
    if c.dispersion == "latent":
        echo("note: this model's dispersion depends on the latent point: `nofone represent` and `nofone de` "
             "use r at each sample's closest normal; it cannot be trained further")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("import-bulkdgd")(import_bulkdgd_command)
