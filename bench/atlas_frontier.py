"""The sensitivity frontier on the normal atlas: every null on the same closest normals.

    .venv/bin/python bench/atlas_frontier.py [--atlas bench/out/atlas] [--out bench/out/atlas/frontier]

Inputs (made by bench/atlas_dgd.py's model, 16,956 genes, and the research scripts of issue 16
kept in the commit history: prepare_eval.py, crossfit.py, es_residuals.py):
- eval.npz: the 58 never-trained normals, 87 rectal tumours and the normals with spike-ins
  (2-, 4- and 8-fold in 5% of expressed genes, up and down), each with its closest normal's NB
  mean and dispersion from the atlas model;
- es_null/fold0.npz: the model's 30 early-stopping normals (what calibrates a model trained
  without cross-fitting);
- crossfit_5/fold*.npz: the 325 training normals, each with its closest normal from the fold
  model that never saw it (`nofone train --cross-fit 5` does the same);
- cohort_deseq2.tsv, cohort_scored.json: DESeq2 (pydeseq2) on 43 tumours against colon/rectum
  normals; the 44 other tumours are scored against it (precision: calls whose direction the
  cohort calls at padj < 0.01 and |LFC| > 1; recall: of the cohort's |LFC| > 3 genes).

Prints the frontier (q < 0.001, 0.01, 0.05, 0.1) beside the issue's targets and writes
frontier.tsv, tumour_control.tsv and frontier.png (the report's figure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import pandas as pd
from common import REPO

TARGETS = {"4-fold recall": 0.40, "2-fold recall": 0.10, "tumour recall (|LFC| > 3)": 0.10,
           "tumour precision": 0.75}


def _load_folds(folder: Path) -> dict[str, np.ndarray]:
    parts = [np.load(p) for p in sorted(folder.glob("fold*.npz"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("x", "mean", "r")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=REPO / "bench" / "out" / "atlas")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--k", type=int, default=None, help="neighbours of the local null (default: the product's)")
    parser.add_argument("--replot", action="store_true", help="only redraw and print from the written tables")
    parser.add_argument("--de", type=Path, default=None,
                        help="another model's `de` folder on the same samples (bench/atlas_diffusion.py's de/, "
                             "sample ids <group>_<row>): its closest normals replace the DGD's; nulls nb, "
                             "model-error and its own outlier null")
    parser.add_argument("--oracle", action="store_true",
                        help="only the ceiling: each normal tested with its own (pi, tau), fitted on its unspiked self")
    args = parser.parse_args()
    out = args.out or args.atlas / "frontier"
    needed = [args.atlas / n for n in ("eval.npz", "es_null/fold0.npz", "crossfit_5", "cohort_deseq2.tsv",
                                       "model/config.json")]
    if missing := [str(p) for p in needed if not p.exists()]:
        sys.exit(f"missing inputs (see the docstring): {', '.join(missing)}")
    from nofone.evaluate.frontier import frontier_of_matrices, positive_control
    from nofone.stats.local_null import NEIGHBOURS
    from nofone.stats.nulls import Null
    from nofone.stats.outlier_null import OutlierNull

    ev = dict(np.load(args.atlas / "eval.npz"))
    if args.de is not None:
        _use_other_model(ev, args.de)
    group = ev["group"]
    matrices = {name: {"count": ev["x"][group == name].astype(np.float64), "normal_mean": ev["mean"][group == name],
                       "dispersion": ev["r"][group == name]} for name in ("normal", "tumour")}
    spiked = np.char.startswith(group, "spike")
    spiked_m = {"count": ev["x"][spiked].astype(np.float64), "normal_mean": ev["mean"][spiked],
                "dispersion": ev["r"][spiked]}
    planted = ev["effect"][spiked] != 0
    spike_lfc = np.array([float(g.removeprefix("spike")) for g in group[spiked]])
    if args.oracle:
        _oracle(ev)
        return
    k = args.k or NEIGHBOURS
    cohort = pd.read_csv(args.atlas / "cohort_deseq2.tsv", sep="\t", index_col=0)
    scored = np.isin(ev["source"][group == "tumour"], json.loads((args.atlas / "cohort_scored.json").read_text())
                     ["scored"])
    tumours = {key: value[scored] for key, value in matrices["tumour"].items()}
    sign = cohort["sign"].reindex(ev["gene_ids"]).fillna(0).to_numpy()
    strong = cohort["strong"].reindex(ev["gene_ids"]).fillna(False).to_numpy(dtype=bool)
    if args.replot:
        _show(pd.read_csv(out / "frontier.tsv", sep="\t"), pd.read_csv(out / "tumour_control.tsv", sep="\t"), out,
              k, group, scored, spiked)
        return
    if args.de is not None:
        outlier = OutlierNull(**json.loads((args.de / "de_report.json").read_text())["outlier_null"])
        nulls = {"nb": Null("nb"), "model-error": Null("model-error"),
                 "outlier, its 30 early-stopping normals (default)": Null("outlier", outlier=outlier)}
    else:
        nulls = _dgd_nulls(args.atlas, k)
    curves, controls = [], []
    for label, null in nulls.items():
        curves.append(frontier_of_matrices([null], matrices["normal"], spiked_m, planted, spike_lfc).assign(
            null=label, default="default" in label))
        controls.append(positive_control([null], tumours, sign, strong).assign(
            null=label, default="default" in label))
        print(f"scored {label}", flush=True)
    curve, control = pd.concat(curves, ignore_index=True), pd.concat(controls, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "frontier.tsv", sep="\t", index=False)
    control.to_csv(out / "tumour_control.tsv", sep="\t", index=False)
    _show(curve, control, out, k, group, scored, spiked)


def _dgd_nulls(atlas: Path, k: int) -> dict:
    """The DGD's nulls: the stored outlier null, and local nulls from its early-stopping normals
    and from the cross-fit normals."""
    from nofone.stats.local_null import fit_local_null
    from nofone.stats.nulls import Null
    from nofone.stats.outlier_null import OutlierNull

    info = json.loads((atlas / "model" / "config.json").read_text())
    es = dict(np.load(atlas / "es_null" / "fold0.npz"))
    cross = _load_folds(atlas / "crossfit_5")
    return {
        "nb": Null("nb"),
        "model-error": Null("model-error"),
        "outlier, 30 early-stopping normals (default)": Null("outlier", outlier=OutlierNull.stored_in(info)),
        "local, 30 early-stopping normals": Null("local", local=fit_local_null(es["x"], es["mean"], es["r"], k=k)),
        "local, 325 cross-fit normals (default with --cross-fit)": Null(
            "local", local=fit_local_null(cross["x"], cross["mean"], cross["r"], k=k)),
    }


def _use_other_model(ev: dict, de_dir: Path) -> None:
    """Replace the closest normals' mean and dispersion in `ev` by those of another model's de."""
    table = pd.read_parquet(de_dir / "de.parquet", columns=["sample_id", "gene_id", "normal_mean", "dispersion"])
    genes = {g: j for j, g in enumerate(ev["gene_ids"])}
    rows = table["sample_id"].str.rsplit("_", n=1).str[1].astype(int).to_numpy()
    cols = table["gene_id"].map(genes)
    if cols.isna().any():
        sys.exit(f"{de_dir}: genes outside the atlas model's")
    cols = cols.to_numpy(dtype=int)
    for key, column in (("mean", "normal_mean"), ("r", "dispersion")):
        values = np.full(ev["x"].shape, np.nan)
        values[rows, cols] = table[column].to_numpy()
        ev[key] = values


def _show(curve: pd.DataFrame, control: pd.DataFrame, out: Path, k: int, group: np.ndarray, scored: np.ndarray,
          spiked: np.ndarray) -> None:
    from nofone.report.figures.frontier import frontier_figure

    (out / "frontier.png").write_bytes(frontier_figure(curve, control))
    wide = curve.pivot_table(index=["null", "nominal_q"], columns="spike_lfc", values="recall")
    wide.columns = [f"recall {2 ** c:g}-fold" for c in wide.columns]
    fp = curve.groupby(["null", "nominal_q"])["false_calls_per_normal"].first()
    table = pd.concat([fp, wide], axis=1).join(control.set_index(["null", "nominal_q"])[
        ["calls_per_tumour", "precision", "recall"]].rename(columns={"precision": "tumour precision",
                                                                     "recall": "tumour recall |LFC|>3"}))
    pd.set_option("display.width", 200)
    print(f"\nneighbours k = {k}; {int((group == 'normal').sum())} never-trained normals, {int(scored.sum())} "
          f"scored tumours, {int(spiked.sum())} spiked normals\n")
    print(table.round(3).to_string())
    print("\ntargets at <= 1.0 false calls per normal, q < 0.01: "
          + ", ".join(f"{name} >= {value:.0%}" for name, value in TARGETS.items()))
    print(f"written: {out}/frontier.tsv, tumour_control.tsv, frontier.png")


def _oracle(ev: dict) -> None:
    """The ceiling of any per-sample mixture null: every normal (and its spiked copies) tested
    against the (pi, tau) fitted on that normal's own unspiked genes, which no real null can know."""
    from nofone.stats.multiple_testing import bh_adjust
    from nofone.stats.nb_tests import log2_fold_change
    from nofone.stats.outlier_null import equal_tail_midp_mixture, fit_outlier_null

    group, source = ev["group"], ev["source"]
    own = {source[i]: fit_outlier_null(ev["x"][i:i + 1], ev["mean"][i:i + 1], ev["r"][i:i + 1])
           for i in np.flatnonzero(group == "normal")}
    rows = np.flatnonzero(group != "tumour")
    x, mean, r = ev["x"][rows].astype(np.float64), ev["mean"][rows], ev["r"][rows]
    pi = np.array([own[s].pi for s in source[rows]])[:, None]
    tau = np.array([max(own[s].tau, 1e-3) for s in source[rows]])[:, None]
    p = equal_tail_midp_mixture(x, mean, r, pi, np.broadcast_to(tau, x.shape))
    q = bh_adjust(p, axis=1)
    big = np.abs(log2_fold_change(x, mean)) > 1
    g = group[rows]
    print("oracle: each normal's own (pi, tau)")
    for level in (0.001, 0.01, 0.05, 0.1):
        call = (q < level) & big
        line = [f"q < {level:g}: false calls per normal {call[g == 'normal'].sum(1).mean():.2f}"]
        for spike in ("spike1", "spike2", "spike3"):
            planted = ev["effect"][rows][g == spike] != 0
            line.append(f"{2 ** int(spike[-1])}-fold recall {(call[g == spike] & planted).sum() / planted.sum():.3f}")
        print(", ".join(line))


if __name__ == "__main__":
    main()
