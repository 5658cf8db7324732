"""`nofone simulate`: realistic simulated counts with known truth, for tests, demos, benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate

_DEFAULTS = SimulationConfig()


@handle_errors
def simulate_command(
    outdir: Path = typer.Option(
        ..., "--outdir", "-o",
        help="Output folder: samplesheet.csv, counts/, truth.tsv, genes.tsv, gene_params.tsv, "
        "latent.tsv, simulation.json.",
    ),
    tissues: int = typer.Option(
        _DEFAULTS.tissues, help="Number of tissues (one latent Gaussian component each)."
    ),
    samples_per_tissue: int = typer.Option(
        _DEFAULTS.samples_per_tissue, help="Atlas normals per tissue (condition 'normal')."
    ),
    genes: int = typer.Option(_DEFAULTS.genes, help="Number of genes."),
    cases: int = typer.Option(
        _DEFAULTS.cases,
        help="Case samples with planted DE (condition 'case'), one count file each.",
    ),
    heldout_per_tissue: int = typer.Option(
        _DEFAULTS.heldout_per_tissue,
        help="Held-out normals per tissue (condition 'heldout_normal'): negative controls.",
    ),
    seed: int = typer.Option(_DEFAULTS.seed, help="Random seed: same seed, same files."),
    de_fraction: float = typer.Option(
        _DEFAULTS.de_fraction,
        help="Fraction of a case's genes with true mean >= 5 that get a planted fold change.",
    ),
    lfc_min: float = typer.Option(_DEFAULTS.lfc_min, help="Smallest planted |log2 fold change|."),
    lfc_max: float = typer.Option(_DEFAULTS.lfc_max, help="Largest planted |log2 fold change|."),
    latent_dim: int = typer.Option(_DEFAULTS.latent_dim, help="Dimension of the true latent."),
    batches: int = typer.Option(
        _DEFAULTS.batches,
        help="Number of batch labels (b1, b2, ...), assigned at random; no batch effect.",
    ),
) -> None:
    """Simulate a normal atlas, held-out normals and cases with planted DE, with the truth.

    Example: nofone simulate --outdir sim/ --tissues 4 --genes 2000 --cases 8 --seed 1
    (then: nofone ingest --samplesheet sim/samplesheet.csv --outdir data/)
    """
    config = SimulationConfig(
        tissues=tissues, samples_per_tissue=samples_per_tissue, genes=genes, cases=cases,
        heldout_per_tissue=heldout_per_tissue, seed=seed, de_fraction=de_fraction,
        lfc_min=lfc_min, lfc_max=lfc_max, latent_dim=latent_dim, batches=batches,
    )
    summary = simulate(outdir, config)
    n = summary["n_samples"]
    de = summary["planted_de"]
    echo(f"simulated {sum(n['normal'].values())} normals + {sum(n['heldout_normal'].values())} "
         f"held-out normals in {config.tissues} tissues and {sum(n['case'].values())} cases x "
         f"{summary['n_genes']} genes into {outdir} (planted DE: {de['up']} up, {de['down']} down)")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)
