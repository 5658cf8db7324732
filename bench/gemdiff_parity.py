"""GEMDiff's own example (16 breast genes) with its settings, beside the paper's Table 1 row.

Data: ../shared/data/gemdiff_breast16 (788 training, 393 test samples; 83% tumours), values
log2(FPKM) with unexpressed = NaN, taken to log2(FPKM + 1) as GEMDiff does (NaN -> 0).

The model: the `paper` preset (GEMDiff's network: width 8 x 16 = 128, 4 blocks, sinusoidal time
and a normal/tumour label embedding; cosine schedule, T = 1000, noise prediction, MSE, Adam
3e-5, batch 32, gradient clip 1, EMA 0.9999) trained on the 788 training samples for
`--epochs` (the paper: 10,001 epochs, about 250,000 steps), on GEMDiff's scale (one min-max
of the training set to [-1, 1]; the same scaler applied to the test set, which GEMDiff did
not do) or per-gene standardised (`--space standard`).

Figures, each beside the paper's where it has one:
- real train vs test: a linear SVM fitted on the whole training set (GEMDiff refitted it on
  every minibatch, so it was fitted on the last batch), accuracy and balanced accuracy on the
  test set (83% tumours: always saying tumour scores 81% accuracy, 50% balanced); MMD of train
  vs test with GEMDiff's kernel (RBF, gamma = 1 / genes, on the [-1, 1] scale) and with a
  median-heuristic bandwidth and its permutation p-value;
- synthetic (300 samples, labels drawn 50/50 as GEMDiff's sampler; DDPM ancestral sampling,
  1000 steps), per seed: the real-data SVM's accuracy on them (the paper's "accuracy"),
  balanced accuracy, MMD against the test set both ways, the classifier two-sample AUROC, and
  train-on-synthetic / test-on-real accuracy beside train-on-real;
- perturbation of the test tumours by GEMDiff's route (DDIM inversion under the tumour label to
  T, decoding under the normal label, 1000 steps each way): the share the real-data SVM then
  calls normal, how far they move toward the test normals (1 - distance of the perturbed
  tumours' centroid to the normals' centroid / the same before), and their MMD to the test
  normals before and after.

    OMP_NUM_THREADS=1 .venv/bin/python bench/gemdiff_parity.py [--epochs 1000 --lr 3e-4 --ema 0.9995]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nofone.evaluate.two_sample import c2st_auroc, classifier_scores, fit_classifier, mmd_test
from nofone.models.diffusion.augment import SampleClass, SamplerOptions, sample_points
from nofone.models.diffusion.bridge import BridgeOptions, bridge_points
from nofone.models.diffusion.config import load_config
from nofone.models.diffusion.model import Diffusion
from nofone.models.diffusion.module import NORMAL, TUMOUR
from nofone.models.diffusion.train import DiffusionPlan, train_diffusion
from nofone.models.training import TrainingData

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA

FOLDER = DATA / "gemdiff_breast16"
PAPER = {"real_accuracy": 0.8651, "real_mmd": 2.74e-4, "synthetic_mmd": 4.85e-3, "synthetic_accuracy": 0.80,
         "always_tumour_accuracy": 0.8117}


def read(part: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    values = pd.read_csv(FOLDER / f"example_{part}.txt", sep="\t", index_col=0)
    labels = pd.read_csv(FOLDER / f"example_{part}_labels.txt", sep="\t", header=None, index_col=0)
    labels.index = labels.index.astype(str).str.strip()
    y = labels.loc[values.index, 1].astype(str).str.strip().to_numpy()
    log2_fpkm1 = np.log2(np.exp2(values.to_numpy(dtype=np.float64)) + 1)
    return np.nan_to_num(log2_fpkm1, nan=0.0), np.where(y == "tumor", "tumour", y), list(values.columns)


class Scale:
    """GEMDiff's min-max to [-1, 1] (fitted on the training set) or per-gene standardisation."""

    def __init__(self, train: np.ndarray, kind: str):
        self.kind = kind
        if kind == "minmax":
            self.lo, self.hi = train.min(), train.max()  # one global min-max, as GEMDiff
        else:
            self.lo, self.hi = train.mean(0), train.std(0)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if self.kind == "minmax":
            return 2 * (v - self.lo) / (self.hi - self.lo) - 1
        return (v - self.lo) / self.hi

    def back(self, v: np.ndarray) -> np.ndarray:
        return (v + 1) / 2 * (self.hi - self.lo) + self.lo if self.kind == "minmax" else v * self.hi + self.lo


def train_model(x: np.ndarray, labels: np.ndarray, epochs: int, space: str, seed: int, lr: float, ema: float):
    overrides = {"training.epochs": epochs, "training.seed": seed, "training.lr": lr, "training.ema_decay": ema,
                 # GEMDiff's clip_denoised range on its [-1, 1] scale; +-8 sd per-gene standardised
                 "clamp": 1.0 if space == "minmax" else 8.0}
    config = load_config("paper", overrides)
    tumour = labels == "tumour"
    started = time.perf_counter()
    last = [started]

    def progress(record: dict) -> None:
        if record["epoch"] % 500 == 0 or record["epoch"] == epochs:
            now = time.perf_counter()
            print(f"  epoch {record['epoch']}: loss {record['loss_train']:.4f} ({now - last[0]:.0f} s)", flush=True)
            last[0] = now

    result = train_diffusion(_points_data(x), config, tumour=tumour, points=torch.as_tensor(x, dtype=torch.float32),
                             on_epoch=progress)
    minutes = (time.perf_counter() - started) / 60
    steps = epochs * -(-len(x) // config.training.batch_size)
    return result.module, {"epochs": epochs, "steps": steps, "minutes": minutes, "space": space,
                           "lr": lr, "ema_decay": ema, "final_loss": result.history[-1]["loss_train"]}


def _points_data(x: np.ndarray, split: np.ndarray | None = None) -> TrainingData:
    """GEMDiff's values (not counts) as training data; the plan is given them as its points."""
    split = np.full(len(x), "train") if split is None else split
    return TrainingData([f"s{i}" for i in range(len(x))], x, split)


def network_vs_gaussian(x: np.ndarray, labels: np.ndarray, epochs: int) -> dict:
    """Held-out denoising MSE of the Gaussian part alone (epoch 0) and with the network trained
    on top (the `cpu` preset's design on 16 genes, width 128), on 20% of the training samples
    held out: does the network learn anything a class-conditional factor model does not?"""
    rng = np.random.default_rng(0)
    split = np.where(rng.random(len(x)) < 0.2, "test", "train")
    tumour = labels == "tumour"
    config = load_config("cpu", {"network.hidden": 128, "training.epochs": epochs, "training.eval_every": 10})
    plan = DiffusionPlan(_points_data(x, split), config, "cpu", tumour=tumour,
                         points=torch.as_tensor(x, dtype=torch.float32))
    plan.test_rows = torch.as_tensor(np.flatnonzero(split == "test"))  # tumours held out too
    plan._heldout_draws = plan._fixed_draws(config.training.eval_draws, config.training.seed + 1)
    generator = torch.Generator().manual_seed(0)
    scores = {0: plan.heldout_score()}
    for epoch in range(1, epochs + 1):
        plan.train_epoch(epoch - 1, generator)
        if epoch % 10 == 0:
            scores[epoch] = plan.heldout_score()
    best = min(scores, key=scores.get)
    return {"gaussian_rank": plan.config.network.gaussian_rank, "heldout_mse_gaussian_only": scores[0],
            "heldout_mse_best": scores[best], "best_epoch": best, "epochs": epochs}


def paper_mmd(a: np.ndarray, b: np.ndarray, to_paper: Scale) -> float:
    """GEMDiff's MMD: RBF with gamma = 1 / genes on the [-1, 1] scale (V-statistic)."""
    return mmd_test(to_paper(a), to_paper(b), gamma=1.0 / a.shape[1], permutations=0)["mmd2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10001, help="the paper: 10001 (about 250,000 steps)")
    parser.add_argument("--lr", type=float, default=3e-5, help="the paper: 3e-5")
    parser.add_argument("--ema", type=float, default=0.9999, help="the paper: 0.9999")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the synthetic sets")
    parser.add_argument("--space", choices=("minmax", "standard"), default="minmax")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--load", action="store_true", help="reuse the model a previous run saved in --out")
    parser.add_argument("--network-check", type=int, default=0, metavar="EPOCHS",
                        help="also compare the network with the Gaussian part on held-out training samples")
    args = parser.parse_args()
    if not FOLDER.is_dir():
        print(f"skipped: {FOLDER} not found (the shared data is not here)")
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    x_train, y_train, genes = read("train")
    x_test, y_test, _ = read("test")
    to_paper = Scale(x_train, "minmax")
    scale = Scale(x_train, args.space)
    report: dict = {"paper": PAPER, "genes": genes, "n_train": len(x_train), "n_test": len(x_test)}

    # real train vs test
    svm = fit_classifier(x_train, y_train, "linear_svm")
    rng = np.random.default_rng(0)
    last_batch = rng.permutation(len(x_train))[-(len(x_train) % 32 or 32):]
    gemdiff_svm = fit_classifier(x_train[last_batch], y_train[last_batch], "linear_svm")
    report["real"] = {"svm_whole_train": classifier_scores(svm, x_test, y_test),
                      "svm_last_minibatch_as_gemdiff": classifier_scores(gemdiff_svm, x_test, y_test),
                      "always_tumour": classifier_scores(_Always(), x_test, y_test),
                      "mmd_paper_kernel": paper_mmd(x_train, x_test, to_paper),
                      "mmd_median": mmd_test(x_train, x_test, permutations=500)}
    print("real:", json.dumps(report["real"], default=float), flush=True)

    if args.network_check:
        report["network_vs_gaussian"] = network_vs_gaussian(scale(x_train), y_train, args.network_check)
        print("network vs Gaussian part:", report["network_vs_gaussian"], flush=True)
    saved = args.out / f"gemdiff_parity_{args.space}_model"
    if args.load:
        model = Diffusion.load(saved)
        module, report["training"] = model.module, model.info["training"]
    else:
        module, report["training"] = train_model(scale(x_train), y_train, args.epochs, args.space, 0, args.lr,
                                                 args.ema)
        if saved.exists():
            shutil.rmtree(saved)
        Diffusion(module, pd.DataFrame({"gene_id": genes, "gene_name": genes}),
                  {"training": report["training"]}).save(saved)
    print("training:", report["training"], flush=True)

    # synthetic sets
    rows = []
    for seed in range(args.seeds):
        labels = np.where(np.random.default_rng(seed).random(300) < 0.5, "normal", "tumour")
        points = np.empty((300, len(genes)))
        for name, value in (("normal", NORMAL), ("tumour", TUMOUR)):
            chosen = labels == name
            sampled = sample_points(module, int(chosen.sum()), SampleClass(name, condition=value),
                                    SamplerOptions(steps=1000, eta=1.0), seed=seed * 10 + value)
            points[chosen] = scale.back(sampled.numpy())
        tstr = fit_classifier(points, labels, "linear_svm")
        per_class = {name: mmd_test(points[labels == name], x_test[y_test == name], permutations=500, seed=seed)
                     for name in ("normal", "tumour")}
        rows.append({"seed": seed, "svm_real_on_synthetic": classifier_scores(svm, points, labels),
                     "mmd_paper_kernel": paper_mmd(points, x_test, to_paper),
                     "mmd_paper_kernel_per_class": {name: paper_mmd(points[labels == name], x_test[y_test == name],
                                                                    to_paper) for name in ("normal", "tumour")},
                     "mmd_median_per_class": per_class,
                     "mmd_median": mmd_test(points, x_test, permutations=500, seed=seed),
                     "c2st_auroc": c2st_auroc(x_test, points, seed=seed),
                     "tstr": classifier_scores(tstr, x_test, y_test)})
        print("synthetic:", json.dumps(rows[-1], default=float), flush=True)
    report["synthetic"] = rows

    # perturbation of the test tumours
    tumours, normals = x_test[y_test == "tumour"], x_test[y_test == "normal"]
    moved, _ = bridge_points(module, torch.as_tensor(scale(tumours), dtype=torch.float32),
                             BridgeOptions(route="invert", t_star=1000, steps=1000, source=TUMOUR))
    perturbed = scale.back(moved.numpy())
    centre = normals.mean(0)
    before, after = np.linalg.norm(tumours.mean(0) - centre), np.linalg.norm(perturbed.mean(0) - centre)
    calls = svm.predict(perturbed)
    report["perturbation"] = {
        "n_tumours": len(tumours), "share_called_normal_before": float((svm.predict(tumours) == "normal").mean()),
        "share_called_normal_after": float((calls == "normal").mean()),
        "centroid_distance_to_normals_before": float(before), "centroid_distance_to_normals_after": float(after),
        "fraction_of_the_way_to_normals": float(1 - after / before),
        "mmd_to_normals_before": mmd_test(tumours, normals, permutations=200),
        "mmd_to_normals_after": mmd_test(perturbed, normals, permutations=200)}
    print("perturbation:", json.dumps(report["perturbation"], default=float), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gemdiff_parity_{args.space}.json").write_text(json.dumps(report, indent=1, default=float))
    print_table(report)


class _Always:
    def predict(self, v):
        return np.full(len(v), "tumour")


def print_table(report: dict) -> None:
    real, synth, p = report["real"], report["synthetic"], report["perturbation"]

    def mean(key, sub=None):
        values = [(r[key][sub] if sub else r[key]) for r in synth]
        return f"{np.mean(values):.4g} +- {np.std(values):.2g}"

    print(f"\ntraining: {report['training']}")
    print(f"{'figure':<58} {'paper':>10}  measured")
    print(f"{'real: accuracy, SVM on the last minibatch (GEMDiff)':<58} {'86.51%':>10}  "
          f"{real['svm_last_minibatch_as_gemdiff']['accuracy']:.2%}")
    print(f"{'real: accuracy / balanced, SVM on the whole training set':<58} {'':>10}  "
          f"{real['svm_whole_train']['accuracy']:.2%} / {real['svm_whole_train']['balanced_accuracy']:.2%}")
    print(f"{'real: always tumour':<58} {'81.17%':>10}  {real['always_tumour']['accuracy']:.2%}")
    print(f"{'real: MMD train vs test (gamma 1/16, [-1, 1])':<58} {'2.74e-4':>10}  {real['mmd_paper_kernel']:.3g}")
    print(f"{'real: MMD median heuristic (p)':<58} {'':>10}  {real['mmd_median']['mmd2']:.3g} "
          f"(p {real['mmd_median']['p_value']:.3f})")
    print(f"{'synthetic: MMD vs test (gamma 1/16, [-1, 1])':<58} {'4.85e-3':>10}  {mean('mmd_paper_kernel')}")
    print(f"{'synthetic: MMD median heuristic':<58} {'':>10}  {mean('mmd_median', 'mmd2')} "
          f"(p {mean('mmd_median', 'p_value')})")
    for name in ("normal", "tumour"):
        paper_k = np.mean([r["mmd_paper_kernel_per_class"][name] for r in synth])
        median = [r["mmd_median_per_class"][name] for r in synth]
        print(f"{'synthetic ' + name + 's vs test ' + name + 's: MMD gamma 1/16; median (p)':<58} {'':>10}  "
              f"{paper_k:.3g}; {np.mean([m['mmd2'] for m in median]):.3g} "
              f"(p {np.mean([m['p_value'] for m in median]):.3g})")
    print(f"{'synthetic: real-data SVM accuracy on them':<58} {'80.00%':>10}  "
          f"{mean('svm_real_on_synthetic', 'accuracy')}")
    print(f"{'synthetic: ... balanced accuracy':<58} {'':>10}  {mean('svm_real_on_synthetic', 'balanced_accuracy')}")
    print(f"{'synthetic: C2ST AUROC (0.5: alike)':<58} {'':>10}  {mean('c2st_auroc')}")
    print(f"{'train on synthetic, test on real: accuracy / balanced':<58} {'':>10}  {mean('tstr', 'accuracy')} / "
          f"{mean('tstr', 'balanced_accuracy')}")
    print(f"{'perturbed test tumours called normal (before)':<58} {'':>10}  {p['share_called_normal_after']:.2%} "
          f"({p['share_called_normal_before']:.2%})")
    print(f"{'fraction of the way to the normals (centroid)':<58} {'':>10}  {p['fraction_of_the_way_to_normals']:.2f}")
    print(f"{'MMD to test normals after (before)':<58} {'':>10}  {p['mmd_to_normals_after']['mmd2']:.3g} "
          f"({p['mmd_to_normals_before']['mmd2']:.3g})")


if __name__ == "__main__":
    main()
