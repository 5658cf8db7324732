"""`nofone perturb`, `nofone augment`, `nofone screen-gene-sets`: GEMDiff's analyses (docs/diffusion.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors


@handle_errors
def perturb_command(
    model: Path = typer.Option(..., "--model", "-m", help="Diffusion model folder."),
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder holding the tumour samples."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder: genes.tsv, sets.tsv, core.tsv, perturb_report.json."),
    gene_sets: Path | None = typer.Option(None, "--gene-sets", help="GMT file (gene ids or symbols); default: all genes as one set."),
    column: str = typer.Option("condition", help="Sample column that marks the tumours."),
    value: str | None = typer.Option(None, help="Tumour value of --column (default: every sample not --normal)."),
    normal: str = typer.Option("normal", help="Normal value of --column."),
    k: float = typer.Option(1.0, help="GEMDiff's rule: perturbed when d > mean + k SD over the set."),
    core_k: float = typer.Option(2.0, help="GEMDiff's core genes: d > mean + core-k SD over every scored gene."),
    alpha: float = typer.Option(0.05, help="Calibrated rule: q-value below this."),
    route: str | None = typer.Option(None, help="Bridge: sdedit or invert (tumour-labelled models; GEMDiff's). Default: the model's."),
    t_star: int | None = typer.Option(None, help="Bridge step t* (default: the model's, chosen at training)."),
    seed: int | None = typer.Option(None, help="Bridge seed (default: the model's)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Tumour-to-normal shift per gene, GEMDiff's rule and the calibrated one, core genes.

    Example: nofone perturb -m model/ -i tumours/ -o perturb/ --gene-sets h.all.v7.0.symbols.gmt
    """
    from nofone.models.diffusion.bridge import BridgeOptions
    from nofone.models.diffusion.perturb import PerturbOptions
    from nofone.steps.diffusion_tasks import perturb_step

    options = PerturbOptions(k=k, core_k=core_k, alpha=alpha, bridge=BridgeOptions(route=route, t_star=t_star, seed=seed))
    report = perturb_step(model, input, outdir, column=column, value=value, normal=normal, gmt=gene_sets,
                          options=options, device=device)
    echo(f"{report['n_tumours']} tumours, {report['n_sets']} gene sets: {report['n_rule_core']} core genes by GEMDiff's "
         f"rule, {report['n_calibrated_core']} calibrated (q < {alpha}) ({outdir})")


@handle_errors
def augment_command(
    model: Path = typer.Option(..., "--model", "-m", help="Diffusion model folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output dataset folder of synthetic counts, with quality.tsv and augment_report.json."),
    n_per_class: int = typer.Option(100, help="Synthetic samples per class."),
    classes: list[str] = typer.Option([], "--class", help="Classes to generate (repeat; default: every class of the model: its tissues, or normal and tumour)."),
    real_test: Path | None = typer.Option(None, help="Dataset of held-out real samples to score the synthetic ones against."),
    real_train: Path | None = typer.Option(None, help="Dataset of real training samples, for the train-on-real baseline."),
    class_column: str = typer.Option("tissue", help="Sample column of the real datasets holding the class."),
    steps: int = typer.Option(100, min=1, help="Sampler steps."),
    eta: float = typer.Option(1.0, min=0.0, help="1: ancestral (DDPM-like) sampling; 0: deterministic DDIM."),
    seed: int = typer.Option(0, help="Seed of the synthetic set (quality seeds follow it)."),
    quality_seeds: int = typer.Option(3, min=1, help="Synthetic sets scored for quality."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Synthetic count samples per class, with MMD, C2ST and train-on-synthetic quality.

    Example: nofone augment -m model/ -o synthetic/ --n-per-class 50 --real-test heldout/
    """
    from nofone.models.diffusion.augment import SamplerOptions
    from nofone.steps.diffusion_tasks import augment_step

    report = augment_step(model, outdir, n_per_class=n_per_class, classes=classes or None,
                          sampler=SamplerOptions(steps=steps, eta=eta, seed=seed), real_test=real_test,
                          real_train=real_train, class_column=class_column, quality_seeds=quality_seeds, device=device)
    echo(f"{report['n_samples']} synthetic samples of {len(report['classes'])} classes ({outdir})")


@handle_errors
def screen_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder with normal and tumour samples."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder: screen.tsv, random_sets.tsv, screen.png, screen_report.json."),
    gene_sets: Path = typer.Option(..., "--gene-sets", help="GMT file (gene ids or symbols)."),
    column: str = typer.Option("condition", help="Sample column of the two groups."),
    normal: str = typer.Option("normal", help="Value of --column for the normals."),
    other: str | None = typer.Option(None, help="Value of the other group (default: every sample not --normal)."),
    n_random: int = typer.Option(100, min=1, help="Random gene sets per set size."),
    embedding: list[str] = typer.Option(["umap", "pca"], "--embedding", help="umap and/or pca (repeat)."),
    n_neighbors: int = typer.Option(90, min=2, help="UMAP n_neighbors (GEMDiff: 90)."),
    min_dist: float = typer.Option(0.3, help="UMAP min_dist (GEMDiff: 0.3)."),
    min_size: int = typer.Option(3, min=2, help="Smallest gene set scored."),
    seed: int = typer.Option(0, help="Seed of the random sets and of UMAP."),
) -> None:
    """Normal vs tumour silhouette per gene set in 2-D UMAP and PCA, against random sets.

    Example: nofone screen-gene-sets -i data/ -o screen/ --gene-sets h.all.v7.0.symbols.gmt
    """
    from nofone.errors import InputError
    from nofone.evaluate.gene_set_screen import EMBEDDINGS, ScreenOptions
    from nofone.steps.diffusion_tasks import screen_step

    unknown = sorted(set(embedding) - set(EMBEDDINGS))
    if unknown:
        raise InputError(f"--embedding {unknown[0]!r}: use umap or pca")
    options = ScreenOptions(n_random=n_random, n_neighbors=n_neighbors, min_dist=min_dist,
                            embeddings=tuple(dict.fromkeys(embedding)), min_size=min_size, seed=seed)
    report = screen_step(input, outdir, gene_sets, column=column, normal=normal, other=other, options=options)
    echo(f"{report['n_sets']} gene sets screened; p < 0.05: {report['n_significant']} ({outdir})")


def register(app: typer.Typer) -> None:
    app.command("perturb")(perturb_command)
    app.command("augment")(augment_command)
    app.command("screen-gene-sets")(screen_command)
