"""The DGD on the real normal atlas (../shared/data/normal_atlas), end to end, with its figures.

    .venv/bin/python bench/atlas_dgd.py [--out bench/out/atlas] [--config small] [--epochs N]

Protocol (issue "The DGD"): all 22 normal files and the rectal tumours ingested with symbols
mapped to Ensembl and RSEM counts rounded; 15% of each tissue's normals held out and never
seen by training (training holds out a further 10% of the rest for early stopping); genes
filtered by edgeR filterByExpr on the training normals (group tissue) and to protein-coding;
the model trained on 2 CPU threads; held-out normals and tumours represented and tested.
Printed: training time, DE genes per held-out normal (q < 0.01, |log2FC| > 1) with the
up:down ratio next to the paper's and R DESeq2's figures, tumour assignment to colon/rectum
components, and the AUROC of the per-gene NLL (tumours vs held-out normals).

Then the default test (the outlier null calibrated at training) beside `--null nb` (the paper's
NB test; same model, same representations), with a positive control in the spirit of the
paper's enrichment score: DESeq2 (pydeseq2) on half the rectal tumours against the colon/rectum
normals gives the cohort's DE genes (padj < 0.01, |LFC| > 1); for each tumour of the other
half, the share of its single-sample calls that are cohort DE genes of the same direction
(precision, and its ratio to the share of such genes among all tested: enrichment), and the
share of the cohort's strongest changes (|LFC| > 3) it calls (recall). `--dispersion latent`
trains r as a function of the latent point instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from common import DATA, REPO, atlas_sheet


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u / (len(positive) * len(negative)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "atlas")
    parser.add_argument("--config", default="small")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-fraction", type=float, default=0.15)
    parser.add_argument("--dispersion", choices=["gene", "latent"], default=None,
                        help="override the config's dispersion (default: the preset's, per gene)")
    args = parser.parse_args()
    if not (DATA / "normal_atlas").is_dir():
        sys.exit(f"the normal atlas is not at {DATA / 'normal_atlas'}")
    torch.set_num_threads(2)
    from nofone.inference.represent import SearchConfig
    from nofone.io.dataset import Dataset, copy_subset
    from nofone.io.ingest import IngestOptions, ingest
    from nofone.io.split import stratified_split
    from nofone.models.dgd.config import load_config
    from nofone.steps.de import DEOptions, differential_expression
    from nofone.steps.filter import filter_dataset
    from nofone.steps.represent import represent
    from nofone.steps.train import train

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    annotation = DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"
    timings = {}
    t = time.perf_counter()
    ingest(atlas_sheet(out / "atlas.csv")[0], out / "data", IngestOptions(round_counts=True, annotation=annotation))
    timings["ingest_s"] = time.perf_counter() - t
    data = Dataset(out / "data")
    split = stratified_split(data.samples, args.heldout_fraction, args.seed)
    heldout = split.loc[split["split"] == "test", "sample_id"].tolist()
    tumours = data.samples.loc[data.samples["condition"] == "tumour", "sample_id"].tolist()
    training_ids = split.loc[split["split"] == "train", "sample_id"].tolist()
    (out / "train_raw").mkdir(exist_ok=True)
    copy_subset(data, out / "train_raw", sample_ids=training_ids)
    filter_dataset(out / "train_raw", out / "train", group=["tissue"], protein_coding=True, annotation=annotation)
    genes = Dataset(out / "train").gene_ids
    keep = np.flatnonzero(np.isin(data.gene_ids, genes))
    (out / "eval").mkdir(exist_ok=True)
    copy_subset(data, out / "eval", gene_index=keep, sample_ids=heldout + tumours)
    config = load_config(args.config, {"training.epochs": args.epochs, "training.seed": args.seed,
                                       "dispersion": args.dispersion})
    t = time.perf_counter()
    summary = train(out / "train", out / "model", config, device="cpu")
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    represent(out / "model", out / "eval", out / "reps", SearchConfig(), device="cpu")
    timings["represent_s"] = time.perf_counter() - t
    t = time.perf_counter()
    de = differential_expression(out / "model", out / "reps", out / "eval", out / "de",
                                 DEOptions(device="cpu", write_tsv=False))
    timings["de_s"] = time.perf_counter() - t
    t = time.perf_counter()
    de_nb = differential_expression(out / "model", out / "reps", out / "eval", out / "de_nb", DEOptions(device="cpu",
                                    write_tsv=False, null="nb"))
    timings["de_nb_null_s"] = time.perf_counter() - t

    normals = de[de["sample_id"].isin(heldout)]
    tumour_rows = de[de["sample_id"].isin(tumours)]
    training_reps = pq.read_table(out / "model" / "training_representations.parquet").to_pandas()
    majority = (training_reps[training_reps["split"] == "train"].groupby("component")["tissue"]
                .agg(lambda s: s.value_counts().index[0]))
    reps = pq.read_table(out / "reps" / "representations.parquet").to_pandas().set_index("sample_id")
    tumour_tissue = reps.loc[tumours, "component"].map(majority)
    heldout_tissue = reps.loc[heldout, "component"].map(majority)
    truth = data.samples.set_index("sample_id").loc[heldout, "tissue"]
    colorectal = tumour_tissue.isin(["coad", "read"]).mean()
    result = {
        "n_train_normals": summary["n_train"], "n_early_stopping_normals": summary["n_test"],
        "n_heldout_normals": len(heldout), "n_tumours": len(tumours), "n_genes": summary["n_genes"],
        "config": args.config, "epochs_run": len(pd.read_csv(out / "model" / "history.tsv", sep="\t")),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "degs_per_heldout_normal": float(normals["n_de"].mean()),
        "degs_per_heldout_normal_median": float(normals["n_de"].median()),
        "up_down_heldout": [int(normals["n_up"].sum()), int(normals["n_down"].sum())],
        "degs_per_tumour": float(tumour_rows["n_de"].mean()),
        "up_down_tumour": [int(tumour_rows["n_up"].sum()), int(tumour_rows["n_down"].sum())],
        "tumours_in_colorectal_components": float(colorectal),
        "tumour_component_tissues": tumour_tissue.value_counts().to_dict(),
        "heldout_normal_component_matches_tissue": float((heldout_tissue.to_numpy() == truth.to_numpy()).mean()),
        "nll_per_gene_auroc_tumour_vs_heldout": auroc(reps.loc[tumours, "nll_per_gene"].to_numpy(),
                                                      reps.loc[heldout, "nll_per_gene"].to_numpy()),
        "latent_nll_auroc_tumour_vs_heldout": auroc(reps.loc[tumours, "latent_nll"].to_numpy(),
                                                    reps.loc[heldout, "latent_nll"].to_numpy()),
        "training": {k: summary[k] for k in ("components_used", "largest_component_fraction",
                                             "tissue_purity_train", "tissue_purity_test", "dispersion_range")},
    }
    result["outlier_null"] = summary["outlier_null"]
    normals_nb = de_nb[de_nb["sample_id"].isin(heldout)]
    tumours_nb = de_nb[de_nb["sample_id"].isin(tumours)]
    result["nb_null"] = {
        "degs_per_heldout_normal": float(normals_nb["n_de"].mean()),
        "degs_per_heldout_normal_median": float(normals_nb["n_de"].median()),
        "up_down_heldout": [int(normals_nb["n_up"].sum()), int(normals_nb["n_down"].sum())],
        "degs_per_tumour": float(tumours_nb["n_de"].mean()),
    }
    result["tumour_positive_control"] = tumour_positive_control(
        data, out, tumours, args.seed, {"default": out / "de", "nb_null": out / "de_nb"})
    (out / "atlas_result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print()
    print(f"{'':42s}{'nofone DGD':>14s}{'paper DGD':>12s}{'R DESeq2 (20-40 ctrl)':>24s}{'bulkdgd 2.0.1':>16s}")
    degs = result["degs_per_heldout_normal"]
    print(f"{'DE genes per held-out normal':42s}{degs:14.2f}{4.25:12.2f}{8:24.0f}{60:16.0f}")
    up, down = result["up_down_heldout"]
    print(f"{'up : down calls on held-out normals':42s}{f'{up}:{down}':>14s}{'':>12s}{'':>24s}{'22873:2':>16s}")
    auc = result["nll_per_gene_auroc_tumour_vs_heldout"]
    print(f"{'NLL AUROC tumour vs held-out normal':42s}{auc:14.3f}{'':>12s}{'':>24s}{0.97:16.2f}")
    print(f"{'tumours in colon/rectum components':42s}{colorectal:14.1%}")
    print(f"{'training time (2 CPU threads)':42s}{timings['train_s'] / 60:13.1f}m")
    print()
    control = result["tumour_positive_control"]
    print(f"same model and representations; tumour calls against the cohort DESeq2 of {control['n_truth_tumours']} "
          f"other tumours vs {control['n_truth_normals']} colon/rectum normals")
    fitted = result["outlier_null"] or {}
    print(f"outlier null fitted at training on {fitted.get('n_samples')} early-stopping normals: "
          f"pi {100 * fitted.get('pi', 0):.2f}% of genes, log-sd {fitted.get('tau', 0):.2f}")
    print(f"{'':48s}{'default':>14s}{'--null nb':>16s}")
    print(f"{'':48s}{'(outlier null)':>14s}{'(the paper)':>16s}")
    nb = result["nb_null"]
    rows = [("DE genes per held-out normal: mean", "%.2f", result["degs_per_heldout_normal"],
             nb["degs_per_heldout_normal"]),
            ("DE genes per held-out normal: median", "%.0f", result["degs_per_heldout_normal_median"],
             nb["degs_per_heldout_normal_median"]),
            ("DE genes per tumour: mean", "%.1f", result["degs_per_tumour"], nb["degs_per_tumour"]),
            ("de seconds (all samples, 2 threads)", "%.1f", timings["de_s"], timings["de_nb_null_s"])]
    rows += [(label, fmt, control["default"][key], control["nb_null"][key])
             for label, fmt, key in [("tumour calls that are cohort DE, same sign", "%.3f", "precision"),
                                     ("  enrichment over chance", "%.2f", "enrichment"),
                                     ("cohort |LFC| > 3 genes called per tumour", "%.3f", "recall_lfc3")]]
    for label, fmt, a, b in rows:
        print(f"{label:48s}{fmt % a:>14s}{fmt % b:>16s}")


def tumour_positive_control(data, out: Path, tumours: list[str], seed: int, runs: dict[str, Path]) -> dict:
    """Single-tumour calls scored against a cohort DESeq2 of the other half of the tumours."""
    from nofone.baselines.deseq2 import group_contrast

    order = np.random.default_rng(seed).permutation(sorted(tumours))
    truth_ids, scored = sorted(order[: len(order) // 2]), set(order[len(order) // 2:])
    samples = data.samples
    normals = samples.loc[(samples["condition"] == "normal") & samples["tissue"].isin(["coad", "read"]),
                          "sample_id"].tolist()
    genes = pd.read_parquet(runs["default"] / "de.parquet", columns=["gene_id"])["gene_id"].unique()
    keep = np.flatnonzero(np.isin(data.gene_ids, genes))
    chunk = data.read(truth_ids + normals)
    counts = pd.DataFrame(chunk.counts[:, keep], index=chunk.sample_ids, columns=np.asarray(data.gene_ids)[keep])
    status = pd.DataFrame({"status": ["tumour" if s in truth_ids else "normal" for s in chunk.sample_ids]},
                          index=chunk.sample_ids)
    cohort = group_contrast(counts, status, "~ status", ("status", "tumour", "normal"))
    de_sign = np.sign(cohort["log2FoldChange"]).where((cohort["padj"] < 0.01) & (cohort["log2FoldChange"].abs() > 1), 0)
    strong = (cohort["padj"] < 0.01) & (cohort["log2FoldChange"].abs() > 3)
    chance = float((de_sign != 0).mean())
    result: dict = {"n_truth_tumours": len(truth_ids), "n_truth_normals": len(normals),
                    "n_scored_tumours": len(scored), "cohort_de_genes": int((de_sign != 0).sum()),
                    "cohort_lfc3_genes": int(strong.sum())}
    for name, folder in runs.items():
        table = pd.read_parquet(folder / "de.parquet", columns=["sample_id", "gene_id", "log2_fold_change", "q_value"])
        calls = table[table["sample_id"].isin(scored) & (table["q_value"] < 0.01)
                      & (table["log2_fold_change"].abs() > 1)]
        agree = de_sign.reindex(calls["gene_id"]).to_numpy() == np.sign(calls["log2_fold_change"].to_numpy())
        per = pd.DataFrame({"sample_id": calls["sample_id"].to_numpy(), "agree": agree,
                            "strong": strong.reindex(calls["gene_id"]).to_numpy()}).groupby("sample_id")
        precision = float(per["agree"].mean().reindex(sorted(scored)).mean())
        result[name] = {"precision": precision, "enrichment": precision / chance,
                        "recall_lfc3": float(per["strong"].sum().reindex(sorted(scored), fill_value=0).mean()
                                             / max(1, strong.sum()))}
    return result


if __name__ == "__main__":
    main()
