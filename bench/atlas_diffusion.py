"""The diffusion model on the real normal atlas beside the DGD: N-of-one DE on the same samples.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python bench/atlas_diffusion.py \
        --atlas ../main/bench/out/atlas [--out bench/out/atlas_diffusion] [--stage all|train|score]

Inputs: the folder bench/atlas_dgd.py (and the research scripts named in bench/atlas_frontier.py)
wrote: `train/` (the 325 training normals, 16,956 filtered protein-coding genes), `model/` (the
DGD trained on them), `eval.npz` (the 58 never-trained normals, the 87 rectal tumours and the
normals with spike-ins 2-, 4- and 8-fold in 5% of their expressed genes, up and down, each with
the DGD's closest normal: NB mean and dispersion), `cohort_deseq2.tsv` and `cohort_scored.json`
(DESeq2 on 43 tumours against the colon/rectum normals; the other 44 tumours are scored).

1. train: `nofone train --model-type diffusion --config cpu` on `train/` (the same 295/30 split
   as the DGD: test_fraction 0.1, seed 0, stratified by tissue), one thread; wall and CPU time.
2. score: the eval rows written as a dataset, `nofone represent` and `nofone de` (its default
   null and `--null nb`) with the diffusion model; `represent` timed per sample for both models
   on the same never-trained normals, in this run. Both models are scored by one function on
   their (count, NB mean, dispersion) matrices: DE genes per never-trained normal (q < 0.01,
   |log2 FC| > 1), recall of the spike-ins at 2, 4 and 8-fold, and the rectal-tumour control
   (calls per tumour, the share whose direction the cohort DESeq2 calls, the share of the
   cohort's |LFC| > 3 genes called), under the NB alone and each model's own outlier null.
Writes atlas_diffusion.json and prints the table (docs/diffusion.md, "On the atlas").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch
from common import REPO

Q, LFC = 0.01, 1.0


def train_model(atlas: Path, out: Path, epochs: int | None) -> dict:
    from nofone.models.registry import model_class
    from nofone.steps.train import train

    config = model_class("diffusion").settings("cpu", {"training.epochs": epochs})
    wall, cpu = time.perf_counter(), time.process_time()
    summary = train(atlas / "train", out / "model", config, device="cpu")
    timing = {"train_wall_s": time.perf_counter() - wall, "train_cpu_s": time.process_time() - cpu,
              "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
    (out / "train_timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps({k: summary.get(k) for k in ("n_train", "n_test", "epochs_run", "best_epoch",
                                                 "stopped_early", "t_star", "gaussian_rank", "seconds")}
                     | timing, indent=2), flush=True)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=REPO / "bench" / "out" / "atlas")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "atlas_diffusion")
    parser.add_argument("--stage", choices=("all", "train", "score"), default="all")
    parser.add_argument("--epochs", type=int, default=None, help="override the cpu preset's epochs")
    parser.add_argument("--timing-samples", type=int, default=20,
                        help="never-trained normals both models represent for the cost per sample")
    args = parser.parse_args()
    needed = [args.atlas / n for n in ("train", "model/config.json", "eval.npz", "cohort_deseq2.tsv",
                                       "cohort_scored.json")]
    if missing := [str(p) for p in needed if not p.exists()]:
        sys.exit(f"missing inputs (see the docstring): {', '.join(missing)}")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "train"):
        train_model(args.atlas, args.out, args.epochs)
    if args.stage in ("all", "score"):
        score(args)


def write_eval(atlas: Path, folder: Path, ev: dict) -> list[str]:
    """The eval rows as a nofone dataset (sample ids: group and row), on the training genes."""
    from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, Dataset, write_tables

    ids = [f"{g}_{i:03d}" for i, g in enumerate(ev["group"])]
    if not (folder / COUNTS_FILE).is_file():
        genes = Dataset(atlas / "train").genes
        assert genes["gene_id"].tolist() == ev["gene_ids"].tolist(), "eval.npz and train/ disagree on the genes"
        folder.mkdir(parents=True, exist_ok=True)
        with CountWriter(folder / COUNTS_FILE, ev["x"].shape[1]) as writer:
            writer.write(CountChunk(ids, ev["x"].astype(np.int64)))
        write_tables(folder, genes, pd.DataFrame({"sample_id": ids, "condition": ev["group"], "source": ev["source"]}))
    return ids


def timed(step, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = step(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def de_matrices(folder: Path, ids: list[str], n_genes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(NB mean, dispersion, q-value) [N, G] from `nofone de`'s table (every gene tested)."""
    table = pd.read_parquet(folder / "de.parquet", columns=["sample_id", "normal_mean", "dispersion", "q_value"])
    order = pd.unique(table["sample_id"])
    assert list(order) == ids and len(table) == len(ids) * n_genes, "de.parquet: not every sample x gene"
    return tuple(table[c].to_numpy().reshape(len(ids), n_genes) for c in ("normal_mean", "dispersion", "q_value"))


def calls(x: np.ndarray, mean: np.ndarray, r: np.ndarray, null) -> np.ndarray:
    """[N, G] calls (q < Q, |log2 FC| > LFC) under the NB (`null` None) or an outlier null."""
    from nofone.stats.multiple_testing import bh_adjust
    from nofone.stats.nb_tests import equal_tail_midp, log2_fold_change
    from nofone.stats.outlier_null import equal_tail_midp_outlier

    p = equal_tail_midp(x, mean, r) if null is None or null.pi <= 0 else equal_tail_midp_outlier(x, mean, r, null)
    return (bh_adjust(p, axis=1) < Q) & (np.abs(log2_fold_change(x, mean)) > LFC)


def figures(ev: dict, mean: np.ndarray, r: np.ndarray, null, sign: np.ndarray, strong: np.ndarray,
            scored: np.ndarray) -> dict:
    """False calls per never-trained normal, spike-in recall, the rectal-tumour control."""
    group, x = ev["group"], ev["x"].astype(np.float64)
    called = calls(x, mean, r, null)
    normal = called[group == "normal"]
    out = {"false_calls_per_normal": float(normal.sum(1).mean()),
           "false_calls_per_normal_median": float(np.median(normal.sum(1))),
           "normals_with_a_call": float((normal.sum(1) > 0).mean())}
    for level in (1, 2, 3):
        rows = group == f"spike{level}"
        planted = ev["effect"][rows] != 0
        out[f"recall_{2 ** level}fold"] = float((called[rows] & planted).sum() / planted.sum())
    from nofone.stats.nb_tests import log2_fold_change

    tumour = group == "tumour"
    c = called[tumour][scored]
    lfc = log2_fold_change(x[tumour][scored], mean[tumour][scored])
    agree = c & (np.sign(lfc) == sign[None, :]) & (sign[None, :] != 0)
    n = c.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n > 0, agree.sum(1) / n, np.nan)
    out |= {"calls_per_tumour": float(n.mean()), "tumour_precision": float(np.nanmean(precision)),
            "tumour_precision_enrichment": float(np.nanmean(precision) / (sign != 0).mean()),
            "tumour_recall_lfc3": float(((c & strong[None, :]).sum(1) / strong.sum()).mean())}
    return out


def score(args) -> None:
    from nofone.inference.represent import SearchConfig
    from nofone.stats.outlier_null import OutlierNull
    from nofone.steps.de import DEOptions, differential_expression
    from nofone.steps.represent import represent

    atlas, out = args.atlas, args.out
    ev = dict(np.load(atlas / "eval.npz"))
    ids = write_eval(atlas, out / "eval", ev)
    n_genes = ev["x"].shape[1]
    timing: dict = json.loads((out / "train_timing.json").read_text()) if (out / "train_timing.json").is_file() else {}
    subset = [s for s, g in zip(ids, ev["group"]) if g == "normal"][: args.timing_samples]
    for name, model in (("diffusion", out / "model"), ("dgd", atlas / "model")):
        folder = out / f"reps_timing_{name}"
        if folder.exists():
            import shutil
            shutil.rmtree(folder)
        _, wall, cpu = timed(represent, model, out / "eval", folder, SearchConfig(), subset, device="cpu")
        timing[f"represent_{name}_wall_s_per_sample"] = wall / len(subset)
        timing[f"represent_{name}_cpu_s_per_sample"] = cpu / len(subset)
        print(f"represent, {name}: {wall / len(subset):.3f} s wall, {cpu / len(subset):.3f} s CPU per sample "
              f"({len(subset)} never-trained normals)", flush=True)
    if not (out / "reps" / "representations.parquet").is_file():
        _, timing["represent_diffusion_all_wall_s"], _ = timed(represent, out / "model", out / "eval", out / "reps",
                                                                 SearchConfig(), device="cpu")
    for name, null in (("de", "auto"), ("de_nb", "nb")):
        if not (out / name / "de.parquet").is_file():
            differential_expression(out / "model", out / "reps", out / "eval", out / name,
                                    DEOptions(device="cpu", write_tsv=False, null=null))
    mean, r, q_default = de_matrices(out / "de", ids, n_genes)
    cohort = pd.read_csv(atlas / "cohort_deseq2.tsv", sep="\t", index_col=0)
    sign = cohort["sign"].reindex(ev["gene_ids"]).fillna(0).to_numpy()
    strong = cohort["strong"].reindex(ev["gene_ids"]).fillna(False).to_numpy(dtype=bool)
    scored = np.isin(ev["source"][ev["group"] == "tumour"], json.loads((atlas / "cohort_scored.json").read_text())
                     ["scored"])
    nulls = {"dgd": OutlierNull.stored_in(json.loads((atlas / "model" / "config.json").read_text())),
             "diffusion": OutlierNull.stored_in(json.loads((out / "model" / "config.json").read_text()))}
    matrices = {"dgd": (ev["mean"], ev["r"]), "diffusion": (mean, r)}
    counts = {str(g): int((ev["group"] == g).sum()) for g in np.unique(ev["group"])} | {"scored": int(scored.sum())}
    result: dict = {"timing": timing, "outlier_null": {k: v.to_dict() for k, v in nulls.items() if v}, "n": counts}
    for model, (m, disp) in matrices.items():
        for null_name, null in (("outlier", nulls[model]), ("nb", None)):
            result[f"{model}_{null_name}"] = figures(ev, m, disp, null, sign, strong, scored)
            print(model, null_name, json.dumps(result[f"{model}_{null_name}"]), flush=True)
    agree = calls(ev["x"].astype(np.float64), mean, r, nulls["diffusion"]) == (
        (q_default < Q) & (np.abs(np.log2((ev["x"] + 1.0) / (mean + 1.0))) > LFC))
    result["check_de_step_agrees"] = float(agree.mean())
    model_config = json.loads((out / "model" / "config.json").read_text())
    result["diffusion_training"] = {k: model_config["training"].get(k) for k in (
        "n_train", "n_test", "epochs_run", "best_epoch", "stopped_early", "t_star", "gaussian_rank", "seconds")}
    card = model_config["training"].get("dispersion_calibration") or {}
    result["diffusion_training"] |= {k: card.get(k) for k in ("reconstruction_rmse", "reconstruction_mean_abs_log2")}
    (out / "atlas_diffusion.json").write_text(json.dumps(result, indent=2, default=float))
    show(result)


def show(result: dict) -> None:
    rows = [("DE genes per never-trained normal (mean)", "false_calls_per_normal", "%.2f"),
            ("DE genes per never-trained normal (median)", "false_calls_per_normal_median", "%.0f"),
            ("spike-in recall, 2-fold", "recall_2fold", "%.3f"), ("spike-in recall, 4-fold", "recall_4fold", "%.3f"),
            ("spike-in recall, 8-fold", "recall_8fold", "%.3f"),
            ("calls per rectal tumour", "calls_per_tumour", "%.1f"),
            ("tumour calls the cohort DESeq2 calls, same sign", "tumour_precision", "%.3f"),
            ("cohort |LFC| > 3 genes called per tumour", "tumour_recall_lfc3", "%.3f")]
    heads = [("dgd", "outlier"), ("diffusion", "outlier"), ("dgd", "nb"), ("diffusion", "nb")]
    print(f"\n{'q < 0.01, |log2 FC| > 1':48s}" + "".join(f"{m + ' ' + n:>19s}" for m, n in heads))
    for label, key, fmt in rows:
        print(f"{label:48s}" + "".join(f"{fmt % result[f'{m}_{n}'][key]:>19s}" for m, n in heads))
    t = result["timing"]
    cost = {m: f"{t[f'represent_{m}_wall_s_per_sample']:.2f} / {t[f'represent_{m}_cpu_s_per_sample']:.2f}"
            for m in ("dgd", "diffusion")}
    print(f"{'represent, s per sample (wall / CPU)':48s}{cost['dgd']:>19s}{cost['diffusion']:>19s}")
    if "train_cpu_s" in t:
        print(f"diffusion training: {t['train_wall_s'] / 60:.1f} min wall, {t['train_cpu_s'] / 60:.1f} min CPU, "
              f"{t['threads']} thread(s), load average at the end {t['load_average'][0]:.1f}")


if __name__ == "__main__":
    main()
