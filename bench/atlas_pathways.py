"""Pathway calls for one sample on the atlas: false set calls in never-trained normals and the
rectal tumours' recovery of a cohort analysis's Hallmark calls (issue 16, item 4).

    OMP_NUM_THREADS=2 .venv/bin/python bench/atlas_pathways.py --atlas /work/main/bench/out/atlas

Inputs (from the 16,956-gene atlas model of bench/atlas_dgd.py and bench/research/prepare_eval.py):
`crossfit_5/fold*.npz` (the 325 cross-fit calibration normals: counts x, closest normals' mean
and dispersion r, each from a fold model that never trained on them), `eval.npz` (58 normals
never used in training or development, 87 rectal tumours, with their closest normals), the
cohort DESeq2 of half of the tumours against colon/rectum normals (`cohort_deseq2.tsv`) and the
tumours it left out (`cohort_scored.json`: the ones scored here). The local null is fitted from
the calibration normals with the product's `fit_local_null`, the sets tested with
`gene_set_tests`, every variant below with the same code path as `nofone pathways`.

Targets: at most 0.05 false set calls (q < 0.01) per never-trained normal; per rectal tumour at
least 50% of the Hallmark sets the cohort calls at q < 0.01 (Mann-Whitney of the cohort DESeq2
statistic, set vs the other genes, BH) called at q < 0.01 in the same direction.
Writes bench/out/atlas_pathways/variants.tsv and result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import pandas as pd
from scipy import stats

from nofone.enrichment.gene_sets import match_gene_sets, read_gmt
from nofone.stats.gene_set_test import MIN_GENES, SetTestOptions, gene_set_tests
from nofone.stats.local_null import LocalNull, fit_local_null, normal_scores
from nofone.stats.multiple_testing import bh_adjust

HALLMARK = Path("/work/shared/data/annotation/h.all.v7.0.symbols.gmt")
TARGET_FP, TARGET_RECOVERY, Q = 0.05, 0.50, 0.01
def median_centred(z: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's (and calibration normal's) median score subtracted: a robust competitive test."""
    return z - np.median(z, 1, keepdims=True), scores - np.median(scores, 1, keepdims=True)


PLAIN = SetTestOptions(centred=False, factors=0)
CENTRED = SetTestOptions(factors=0)
#: (label, options, transform of (sample scores, calibration scores) or None): the default first
VARIANTS = [
    ("default: centred, 3 factors, max(global sd, local RMS k=120)", SetTestOptions()),
    ("research form: mean score, no centring, no factors", PLAIN),
    ("  global sd alone", replace(PLAIN, local_scale=False)),
    *[(f"  local k={k}", replace(PLAIN, k=k)) for k in (30, 60, 240)],
    ("  inverse-sd gene weights", replace(PLAIN, weighting="inverse-sd")),
    ("  3 healthy factors removed", replace(PLAIN, factors=3)),
    ("  10 healthy factors removed", replace(PLAIN, factors=10)),
    ("centred, no factors", CENTRED),
    ("  global sd alone", replace(CENTRED, local_scale=False)),
    *[(f"  local k={k}", replace(CENTRED, k=k)) for k in (90, 160)],
    ("  inverse-sd gene weights", replace(CENTRED, weighting="inverse-sd")),
    *[(f"  scores clipped at {c:g}", replace(CENTRED, clip=c)) for c in (3, 4)],
    ("  median- instead of mean-centred", PLAIN, median_centred),
    *[(f"centred, {f} healthy factors removed", replace(CENTRED, factors=f)) for f in (1, 2, 5, 10)],
    *[(f"centred, 3 factors, local k={k}", SetTestOptions(k=k)) for k in (90, 160)],
    ("centred, 3 factors, global sd alone", SetTestOptions(local_scale=False)),
    ("centred, 3 factors, inverse-sd weights", SetTestOptions(weighting="inverse-sd")),
    *[(f"centred, 3 factors, scores clipped at {c:g}", SetTestOptions(clip=c)) for c in (2, 3, 4)],
    ("median-centred, 3 factors", replace(PLAIN, factors=3), median_centred),
]


def cohort_calls(stat: np.ndarray, index: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's set calls (q < Q) and directions: Mann-Whitney of the DESeq2 statistic."""
    ok = np.isfinite(stat)
    p, direction = [], []
    for genes in index:
        inside = np.zeros(len(stat), dtype=bool)
        inside[genes] = True
        a, b = stat[inside & ok], stat[~inside & ok]
        p.append(stats.mannwhitneyu(a, b).pvalue)
        direction.append(np.sign(np.median(a) - np.median(b)))
    return bh_adjust(np.asarray(p)) < Q, np.asarray(direction)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--atlas", type=Path, default=Path("/work/main/bench/out/atlas"))
    parser.add_argument("--gene-sets", type=Path, default=HALLMARK)
    parser.add_argument("--out", type=Path, default=Path("bench/out/atlas_pathways"))
    parser.add_argument("--only-default", action="store_true", help="Measure the default alone.")
    parser.add_argument("--match", default="", help="Only the variants whose label contains this.")
    args = parser.parse_args()
    started = time.perf_counter()
    folds = [np.load(f) for f in sorted((args.atlas / "crossfit_5").glob("fold*.npz"))]
    xn = np.concatenate([f["x"] for f in folds]).astype(np.float64)
    mn = np.concatenate([f["mean"] for f in folds])
    rn = np.concatenate([f["r"] for f in folds])
    cache = args.out / "local_null.npz"  # the fit takes minutes; delete the file to refit
    if cache.is_file():
        saved = dict(np.load(cache))
        null = LocalNull(tau=float(saved.pop("tau")), k=int(saved.pop("k")), global_pi=float(saved.pop("global_pi")),
                         **saved)
    else:
        null = fit_local_null(xn, mn, rn)
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f: getattr(null, f) for f in ("tau", "k", "global_pi", "shares", "coords", "centre",
                                                          "basis", "scores")})
    print(f"local null from {len(xn)} cross-fit calibration normals ({time.perf_counter() - started:.0f} s)",
          flush=True)
    ev = dict(np.load(args.atlas / "eval.npz"))
    keep = np.isin(ev["group"], ["normal", "tumour"])
    group, source = ev["group"][keep], ev["source"][keep]
    x, mean, r = ev["x"][keep].astype(np.float64), ev["mean"][keep], ev["r"][keep]
    z = normal_scores(x, mean, r)
    gene_ids = ev["gene_ids"]
    names = pd.read_parquet(args.atlas / "eval" / "genes.parquet").set_index("gene_id")["gene_name"]
    names = names.reindex(gene_ids).fillna("").to_numpy()
    sets = match_gene_sets(read_gmt(args.gene_sets), gene_ids, names, MIN_GENES)
    index = list(sets.values())
    cohort = pd.read_csv(args.atlas / "cohort_deseq2.tsv", sep="\t", index_col=0)
    called, direction = cohort_calls(cohort["stat"].reindex(gene_ids).to_numpy(), index)
    scored = set(json.loads((args.atlas / "cohort_scored.json").read_text())["scored"])
    normal = group == "normal"
    tumour = (group == "tumour") & np.isin(source, list(scored))
    print(f"{len(index)} gene sets with >= {MIN_GENES} model genes; the cohort calls {called.sum()} at q < {Q} "
          f"({(called & (direction > 0)).sum()} up); {normal.sum()} never-trained normals, {tumour.sum()} scored "
          f"rectal tumours", flush=True)
    rows = []
    chosen = VARIANTS[:1] if args.only_default else [v for v in VARIANTS if args.match in v[0]]
    for label, options, *transform in chosen:
        z_used, tested = z, null
        if transform:
            z_used, scores = transform[0](z, np.asarray(null.scores, dtype=np.float64))
            tested = replace(null, scores=scores)
        res = gene_set_tests(z_used, mean, tested, index, options=options)
        hit = res.q_value < Q
        fp = hit[normal].sum(1)
        same = hit[tumour] & (np.sign(res.standardized[tumour]) == direction) & called
        recovery = same.sum(1) / max(called.sum(), 1)
        rows.append({"variant": label, "false_set_calls_per_normal": fp.mean(), "max_per_normal": int(fp.max()),
                     "normals_p_below_0.05": float((res.p_value[normal] < 0.05).mean()),
                     "normals_p_below_0.01": float((res.p_value[normal] < 0.01).mean()),
                     "tumour_recovery": float(recovery.mean()), "tumour_recovery_median": float(np.median(recovery)),
                     "tumour_calls": float(hit[tumour].sum(1).mean()),
                     "tumour_calls_outside_cohort": float((hit[tumour] & ~same).sum(1).mean())})
        row = rows[-1]
        print(f"{label:42s} false set calls/normal {row['false_set_calls_per_normal']:.3f} (target <= {TARGET_FP}); "
              f"recovery per tumour {row['tumour_recovery']:.1%} (target >= {TARGET_RECOVERY:.0%}); "
              f"normals p<0.05 {row['normals_p_below_0.05']:.3f}, p<0.01 {row['normals_p_below_0.01']:.4f}; "
              f"calls/tumour {row['tumour_calls']:.1f} ({row['tumour_calls_outside_cohort']:.1f} outside)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "variants.tsv", sep="\t", index=False, float_format="%.4g")
    (args.out / "result.json").write_text(json.dumps({
        "n_sets": len(index), "cohort_called": int(called.sum()), "n_normals": int(normal.sum()),
        "n_tumours": int(tumour.sum()), "targets": {"false_set_calls_per_normal": TARGET_FP,
                                                    "tumour_recovery": TARGET_RECOVERY},
        "variants": rows, "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    print(f"-> {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
