"""Simulated regulators with planted effects, for tests: feature tables, an annotation, tissue
targets and a `nofone de`-shaped output whose profiles a few regulators really drive.

- genes on 22 chromosomes in proportion to human gene counts (chromosome 1 about 10%);
- TF peak counts keyed by symbol, with a per-gene "open promoter" factor shared by all TFs
  (real promoters hold peaks of many TFs at once, so unplanted TFs correlate with planted ones);
  miRNA target scores (0-1) keyed by Ensembl id, genes without a site left out as in the real
  table; gene structure (lengths, exon count, GC) keyed by Ensembl id;
- tissue targets: each tissue driven by a few regulators (through log1p of binding) and
  structure, plus noise; the median expression driven by structure and openness;
- DE profiles: per sample a few planted regulators shift the log2 fold change of the genes they
  bind; noise is heavy-tailed (t, 4 df); counts are negative binomial around a normal mean with
  the realistic spread of low-count genes, so the per-gene weights matter; some samples have no
  planted regulator at all (every call on them is a false positive).

`truth.tsv` lists every (sample, regulator) with its planted effect (0 for unplanted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import equal_tail_midp, log2_fold_change, min_pvalue_down

#: Human protein-coding genes per chromosome 1..22 (Ensembl, rounded): chromosome sizes for the draw.
CHROMOSOME_GENES = (2050, 1300, 1080, 760, 880, 1040, 920, 690, 780, 740, 1300, 1030, 320, 610, 600, 850,
                    1180, 270, 1470, 540, 230, 440)


@dataclass
class RegulatorSimulation:
    genes: int = 3000
    tfs: int = 40
    mirnas: int = 30
    tissues: int = 6
    regulators_per_tissue: int = 5
    planted_samples: int = 3
    null_samples: int = 1
    planted_per_sample: int = 4
    effect: float = 0.6  # log2 fold change per unit of log1p(binding), sign random
    noise_sd: float = 0.4  # scale of the t(4) noise of a profile, log2 units
    seed: int = 0


def simulate_regulators(outdir: Path, config: RegulatorSimulation | None = None) -> dict:
    """Write the simulation into `outdir` (atomically); returns the file paths and the truth."""
    config = config or RegulatorSimulation()
    rng = np.random.default_rng(config.seed)
    n = config.genes
    weights = np.array(CHROMOSOME_GENES, float)
    chromosome = rng.choice([str(c) for c in range(1, 23)], n, p=weights / weights.sum())
    gene_ids = np.array([f"ENSG{i + 1:011d}" for i in range(n)], dtype=object)
    symbols = np.array([f"GENE{i + 1}" for i in range(n)], dtype=object)
    openness = rng.gamma(1.0, 1.0, n)
    tf_rate = rng.uniform(0.03, 0.3, config.tfs)
    tf = rng.poisson(rng.gamma(0.5, 4.0, (n, config.tfs)) * openness[:, None]) * (
        rng.random((n, config.tfs)) < tf_rate[None, :])
    mirna = np.where(rng.random((n, config.mirnas)) < rng.uniform(0.02, 0.15, config.mirnas)[None, :],
                     rng.beta(1.0, 4.0, (n, config.mirnas)), 0.0)
    structure = pd.DataFrame({
        "gene_id": gene_ids, "intron_length": np.round(rng.lognormal(9, 1.2, n)),
        "tr_length": np.round(rng.lognormal(7.5, 0.6, n)), "exon_num": rng.poisson(6, n) + 1.0,
        "gc_content_exon": rng.beta(20, 20, n),
    })
    tf_names = [f"TF{j + 1}" for j in range(config.tfs)]
    mirna_names = [f"miRNA_{j + 1}" for j in range(config.mirnas)]
    regulators = tf_names + mirna_names
    binding = np.log1p(np.hstack([tf, mirna * 5.0]))  # the effect scale of a score of 1 ~ 2 peaks
    standard_structure = (np.log(structure[["intron_length", "tr_length"]].to_numpy()) - [9, 7.5]) / [1.2, 0.6]

    targets = {}
    for t in range(config.tissues):
        active = rng.choice(len(regulators), config.regulators_per_tissue, replace=False)
        beta = rng.choice([-1, 1], len(active)) * rng.uniform(0.3, 1.0, len(active))
        targets[f"tissue{t + 1}"] = (binding[:, active] @ beta + standard_structure @ rng.normal(0, 0.3, 2)
                                     + rng.normal(0, 0.5, n))
    targets["median_expression"] = (1.5 * standard_structure[:, 1] - 0.5 * standard_structure[:, 0]
                                    + np.log1p(openness) + rng.normal(0, 0.7, n))

    normal_mean = np.exp(rng.normal(np.log(60), 1.8, n))
    size = 1.0 / (0.04 + rng.gamma(2.0, 0.04, n))
    samples, truth, tables = [], [], []
    for s in range(config.planted_samples + config.null_samples):
        name = f"S{s + 1}"
        lfc = rng.standard_t(4, n) * config.noise_sd
        effects = np.zeros(len(regulators))
        if s < config.planted_samples:
            planted = rng.choice(len(regulators), config.planted_per_sample, replace=False)
            effects[planted] = rng.choice([-1, 1], len(planted)) * config.effect
            lfc = lfc + binding @ effects
        truth += [{"sample_id": name, "feature": r, "planted": bool(e != 0), "effect": float(e)}
                  for r, e in zip(regulators, effects)]
        mean = normal_mean * 2.0**lfc
        counts = rng.negative_binomial(size, size / (size + mean))
        p = equal_tail_midp(counts, normal_mean, size)
        tables.append(pd.DataFrame({
            "sample_id": name, "gene_id": gene_ids, "gene_name": symbols, "count": counts.astype(np.int64),
            "normal_mean": normal_mean, "dispersion": size, "log2_fold_change": log2_fold_change(counts, normal_mean),
            "p_value": p, "q_value": bh_adjust(p), "can_call_down": min_pvalue_down(normal_mean, size) < 0.01,
        }))
        samples.append(name)

    outdir = Path(outdir)
    with staged_outdir(outdir) as stage:
        annotation = pd.DataFrame({"ensgene": gene_ids, "symbol": symbols, "biotype": "protein_coding",
                                   "chr": chromosome, "start": rng.integers(1, 10**8, n)})
        annotation.to_csv(stage / "annotation.tsv", sep="\t", index=False)
        pd.DataFrame(tf, columns=tf_names).assign(gene_name=symbols)[["gene_name", *tf_names]].to_csv(
            stage / "tf_peaks.tsv", sep="\t", index=False)
        has_site = (mirna > 0).any(1)
        pd.DataFrame(mirna[has_site], columns=mirna_names).assign(gene_id=gene_ids[has_site])[
            ["gene_id", *mirna_names]].to_csv(stage / "mirna_scores.tsv", sep="\t", index=False)
        structure.to_csv(stage / "gene_structure.tsv", sep="\t", index=False)
        pd.DataFrame({"gene_id": gene_ids, **targets}).to_csv(stage / "targets.tsv", sep="\t", index=False)
        (stage / "de").mkdir()
        pq.write_table(pa.Table.from_pandas(pd.concat(tables, ignore_index=True), preserve_index=False),
                       stage / "de" / "de.parquet")
        pd.DataFrame(truth).to_csv(stage / "truth.tsv", sep="\t", index=False)
        write_json_atomic(stage / "simulation.json", asdict(config))
    return {"annotation": outdir / "annotation.tsv", "tf": outdir / "tf_peaks.tsv",
            "mirna": outdir / "mirna_scores.tsv", "structure": outdir / "gene_structure.tsv",
            "targets": outdir / "targets.tsv", "de": outdir / "de", "truth": pd.DataFrame(truth),
            "samples": samples, "regulators": regulators}
