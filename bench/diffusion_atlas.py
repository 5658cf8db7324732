"""Cost and quality of the diffusion model on simulated atlases of ~2,000 and ~17,000 genes.

For each gene count: simulate an atlas of normals shaped like the real one (12 tissues x 30
normals in training, 3 per tissue held out for early stopping and calibration, 3 per tissue
never seen), train with the `cpu` preset on 2 threads, and report the training time (the
target: under 30 minutes on 2 CPU cores), the epochs and where early stopping stopped, the
held-out denoising error of the Gaussian part alone (epoch 0) and at the best epoch, t*, the
bridge's reconstruction error on the held-out normals, the bridge's cost per sample (the
default posterior-mean estimate and the DDIM end point), and, on the never-seen normals, the
false calls per normal (BH q < 0.05 against the calibrated outlier null, `nofone de`'s default,
and against the NB alone) and the recall of planted 4-fold changes (5% of the genes with a mean
of at least 5). Times are wall-clock and CPU time of the process (on a shared machine the CPU time is the honest one).

`--widths` adds the width sweep on the smaller atlas: the held-out denoising error and the
seconds per epoch of hidden widths 64 to 512 (docs/diffusion.md, "The width").

    OMP_NUM_THREADS=2 .venv/bin/python bench/diffusion_atlas.py [--genes 2000 17000] [--widths]

On a machine shared with other work use OMP_NUM_THREADS=1: with more OpenMP threads than free
cores torch's elementwise kernels spin against each other (measured here: an epoch 12 times
slower on 2 threads than on 1 at a load average of 12 on 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nofone.models.diffusion.bridge import BridgeOptions, closest_normal, decode
from nofone.models.diffusion.config import load_config
from nofone.models.diffusion.train import DiffusionPlan, train_diffusion
from nofone.models.training import TrainingData
from nofone.simulate import SimulationConfig
from nofone.simulate.atlas import stream
from nofone.simulate.cases import plant_de
from nofone.simulate.memory import calibration_split, draw_normal_counts
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import equal_tail_midp
from nofone.stats.outlier_null import OutlierNull, equal_tail_midp_outlier

REFERENCE_MINUTES = 30.0


def atlas(genes: int, tissues: int, per_tissue: int, seed: int = 0):
    sim = draw_normal_counts(SimulationConfig(tissues=tissues, samples_per_tissue=per_tissue, genes=genes,
                                              heldout_per_tissue=6, seed=seed, cases=0))
    keep, split, unseen = calibration_split(sim)
    data = TrainingData([sim.sample_ids[i] for i in keep], sim.counts[keep], split, sim.tissue[keep])
    return sim, data, unseen


def de_figures(module, card: dict, sim, unseen: np.ndarray, seed: int = 0) -> dict:
    """False calls per never-seen normal and recall of planted 4-fold changes (q < 0.05)."""
    rng = stream(seed, 77)
    clean = sim.counts[unseen]
    spiked, truth = clean.copy(), np.zeros(clean.shape, dtype=bool)
    size = sim.model.nb_size
    for i in range(len(unseen)):
        eligible = np.flatnonzero(sim.mean[unseen[i]] >= 5)
        genes = np.sort(rng.choice(eligible, max(1, round(0.05 * eligible.size)), replace=False))
        lfc = np.where(rng.random(genes.size) < 0.5, -2.0, 2.0)
        spiked[i] = plant_de(rng, clean[i], sim.mean[unseen[i]], size, genes, lfc)
        truth[i, genes] = True
    null = OutlierNull(**card["outlier_null"])
    bridged = {}
    tissues = list(sim.tissue[unseen]) if module.config.bridge.use_tissue else None
    for name, counts in (("normal", clean), ("spiked", spiked)):
        out = closest_normal(module, counts, options=BridgeOptions(tissues=tissues))
        relative, r = decode(module, out["latent"])
        bridged[name] = (counts, (relative * out["scale"].unsqueeze(-1)).numpy(), r.numpy())
    figures = {}
    for test in ("outlier", "nb"):
        calls = {}
        for name, (counts, mean, r) in bridged.items():
            p = equal_tail_midp_outlier(counts, mean, r, null) if test == "outlier" and null.pi > 0 \
                else equal_tail_midp(counts, mean, r)
            calls[name] = (bh_adjust(p, axis=1) < 0.05, np.log2((counts + 1) / (mean + 1)))
        called, lfc = calls["normal"]
        figures[test] = {"false_calls_per_normal": float(called.sum(1).mean()),
                         "false_calls_per_normal_lfc1": float((called & (np.abs(lfc) > 1)).sum(1).mean()),
                         "false_up": int((called & (lfc > 0)).sum()), "false_down": int((called & (lfc < 0)).sum()),
                         "recall_4fold": float(calls["spiked"][0][truth].mean())}
    return figures


def run_atlas(genes: int, args) -> dict:
    sim, data, unseen = atlas(genes, args.tissues, args.per_tissue)
    overrides = ({"training.epochs": args.epochs} if args.epochs else {}) | {"bridge.use_tissue": args.use_tissue}
    config = load_config("cpu", overrides)
    history: list[dict] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    def record(row: dict) -> None:
        history.append(row)
        if "heldout_denoising_mse" in row:
            print(f"  {genes} genes, epoch {row['epoch']}: held-out {row['heldout_denoising_mse']:.4f} "
                  f"({row['seconds']:.1f} s/epoch)", flush=True)

    result = train_diffusion(data, config, on_epoch=record)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    loop = sum(h["seconds"] for h in history)
    module, card = result.module, result.card
    scores = [h["heldout_denoising_mse"] for h in history if "heldout_denoising_mse" in h]
    timings = {}
    for name, options in (("tweedie", BridgeOptions()), ("ddim", BridgeOptions(estimate="ddim", draws=4))):
        t0, c0 = time.perf_counter(), time.process_time()
        closest_normal(module, sim.counts[unseen], options=options)
        timings[name] = (time.perf_counter() - t0) / len(unseen)
        timings[f"{name}_cpu"] = (time.process_time() - c0) / len(unseen)
    rank_grid = {row["rank"]: row["heldout_denoising_mse"] for row in card.get("gaussian_rank_grid", [])}
    return {
        "genes": genes, "use_tissue": args.use_tissue,
        "n_train": int((data.split == "train").sum()), "n_heldout": int((data.split == "test").sum()),
        "n_unseen": len(unseen), "epochs_run": len(history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "train_minutes": total / 60, "train_cpu_minutes": cpu / 60,
        "loop_minutes": loop / 60,
        "calibration_minutes": (total - loop) / 60, "seconds_per_epoch": loop / max(len(history), 1),
        "gaussian_rank": card["gaussian_rank"], "heldout_mse_gaussian_only": rank_grid.get(card["gaussian_rank"]),
        "heldout_mse_best": min(scores) if scores else None, "t_star": card["t_star"],
        "reconstruction_rmse": card["reconstruction_rmse"],
        "reconstruction_mean_abs_log2": card["reconstruction_mean_abs_log2"],
        "outlier_null": card["outlier_null"], "bridge_seconds_per_sample": timings,
        "parameters_millions": sum(p.numel() for p in module.denoiser.parameters()) / 1e6,
        "de": de_figures(module, card, sim, unseen),
    }


def width_sweep(genes: int, widths: list[int], epochs: int, args) -> list[dict]:
    """Held-out denoising error of the network at several widths (Gaussian part the same)."""
    _, data, _ = atlas(genes, args.tissues, args.per_tissue)
    rows = []
    for width in widths:
        config = load_config("cpu", {"network.hidden": width, "training.epochs": epochs, "training.eval_every": 10})
        plan = DiffusionPlan(data, config, "cpu")
        generator = torch.Generator().manual_seed(0)
        scores = {0: plan.heldout_score()}
        started = time.perf_counter()
        for epoch in range(1, epochs + 1):
            plan.train_epoch(epoch - 1, generator)
            if epoch % 10 == 0:
                scores[epoch] = plan.heldout_score()
        seconds = (time.perf_counter() - started) / epochs
        best = min(scores, key=scores.get)
        rows.append({"hidden": width, "seconds_per_epoch": seconds, "heldout_mse_epoch0": scores[0],
                     "heldout_mse_best": scores[best], "best_epoch": best, "heldout_mse_last": scores[epochs],
                     "parameters_millions": sum(p.numel() for p in plan.online.parameters()) / 1e6})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, nargs="+", default=[2000, 17000])
    parser.add_argument("--tissues", type=int, default=12)
    parser.add_argument("--per-tissue", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=0, help="override the preset's epochs (0: preset)")
    parser.add_argument("--widths", action="store_true", help="also run the width sweep")
    parser.add_argument("--use-tissue", action="store_true", help="bridge (and calibrate) with the tissue labels")
    parser.add_argument("--width-genes", type=int, default=2000)
    parser.add_argument("--width-epochs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    report: dict = {"threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()}
    if args.widths:
        report["widths"] = width_sweep(args.width_genes, [64, 128, 256, 512], args.width_epochs, args)
    report["atlases"] = []
    for genes in args.genes:
        row = run_atlas(genes, args)
        report["atlases"].append(row)
        print(json.dumps(row, indent=1, default=float), flush=True)
    report["load_average_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_atlas.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\n{'genes':>6} {'train min':>9} {'cpu min':>7} {'(target)':>8} {'epochs':>6} {'best':>5} "
          f"{'s/epoch':>7} {'t*':>4} "
          f"{'rmse':>5} {'bridge s':>8} {'false/normal':>12} {'recall 4x':>9} {'false, NB':>9} {'recall, NB':>10}")
    for r in report["atlases"]:
        print(f"{r['genes']:>6} {r['train_minutes']:>9.1f} {r['train_cpu_minutes']:>7.1f} {REFERENCE_MINUTES:>8.0f} "
              f"{r['epochs_run']:>6} "
              f"{r['best_epoch']!s:>5} {r['seconds_per_epoch']:>7.2f} {r['t_star']:>4} "
              f"{r['reconstruction_rmse']:>5.2f} "
              f"{r['bridge_seconds_per_sample']['tweedie']:>8.3f} "
              f"{r['de']['outlier']['false_calls_per_normal']:>12.1f} "
              f"{r['de']['outlier']['recall_4fold']:>9.2f} {r['de']['nb']['false_calls_per_normal']:>9.1f} "
              f"{r['de']['nb']['recall_4fold']:>10.2f}")
    print(f"load average (1, 5, 15 min) at start {report['load_average_at_start']}, "
          f"at end {report['load_average_at_end']}")


if __name__ == "__main__":
    main()
