"""DEcode on the real atlas: how well regulator binding predicts tissue DE, median expression and
the DE prior, beside ridge and boosted trees, and which regulators explain the rectal tumours.

    .venv/bin/python bench/regulators_atlas.py [--atlas bench/out/atlas] [--out bench/out/regulators]
                                               [--seeds 10] [--reuse]

Features (../shared/data/regulators): GTRD TF ChIP-seq peaks per gene (321 TFs), TargetScan
miRNA target scores (217 families), gene structure (7 columns). No RNA-binding proteins: no
RBP matrix is available here (the paper had 171 from POSTAR2).

1. Tissue DE from the atlas dataset (`<atlas>/data`, written by `bench/atlas_dgd.py`; ingested
   here when absent): 22 normal tissues, each tissue's log2 mean CPM minus the gene's median over
   tissues, plus the median. `nofone regulators train` with chromosome 1 held out; Spearman per
   tissue on the test genes (paper: mean 0.34 over 53 GTEx tissues with TF, RBP and miRNA
   features) and of the median expression (paper 0.81), each beside ridge and boosted trees.
2. The DE prior (Crow et al. 2019): AUROC of its top decile on the test genes (paper 0.81) and
   Spearman (paper 0.53).
3. With `<atlas>/de` (the DGD's `nofone de` of held-out normals and rectal tumours): `nofone
   explain` on every sample with the tissue model; the top regulators per tumour, their agreement
   across tumours, the held-out normals as a negative control, and the comparison with a
   cohort-level fit: the same head fitted to DESeq2's log fold changes of all tumours against the
   colon and rectum normals (pydeseq2).
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
import torch
from common import DATA, REPO, atlas_sheet

REGULATORS = DATA / "regulators"
ANNOTATION = DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"
FEATURES = [REGULATORS / "tf_chipseq_gtrd_by_gene.tsv.gz", REGULATORS / "mirna_targetscan_by_gene.tsv.gz"]
STRUCTURE = [REGULATORS / "gene_structure_by_gene.tsv.gz"]
PAPER = {"tissue_de_mean_spearman": 0.34, "median_expression_spearman": 0.81, "de_prior_auroc": 0.81,
         "de_prior_spearman": 0.53}
METHODS = ("decode", "ridge", "boosted_trees")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=REPO / "bench" / "out" / "atlas")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "regulators")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--reuse", action="store_true", help="reuse models and tables already in --out")
    args = parser.parse_args()
    if not REGULATORS.is_dir():
        print(f"skipped: the regulator tables are not at {REGULATORS}")
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"features": [p.name for p in FEATURES + STRUCTURE], "paper": PAPER, "seeds": args.seeds}
    timings: dict = {}
    data = atlas_dataset(args.atlas, out)
    result["tissue_de"] = train(out / "tissue_model", "tissue-de", data, args, timings)
    result["de_prior"] = train(out / "de_prior_model", "de-prior", REGULATORS / "de_prior_crow2019.tsv", args, timings)
    if (args.atlas / "de" / "de.parquet").is_file():
        result["tumours"] = tumours(args.atlas, data, out, args, timings)
    else:
        print(f"no {args.atlas / 'de'}: run bench/atlas_dgd.py --out {args.atlas} for the tumour part")
    result["timings_s"] = timings
    (out / "regulators_atlas.json").write_text(json.dumps(result, indent=2, default=float))
    print_figures(result)


def atlas_dataset(atlas: Path, out: Path) -> Path:
    """The atlas as a nofone dataset: the one atlas_dgd.py wrote, or ingested here."""
    if (atlas / "data" / "samples.parquet").is_file():
        return atlas / "data"
    from nofone.io.ingest import IngestOptions, ingest

    if not (out / "data" / "samples.parquet").is_file():
        ingest(atlas_sheet(out / "atlas.csv")[0], out / "data", IngestOptions(round_counts=True, annotation=ANNOTATION))
    return out / "data"


def train(folder: Path, targets: str, source: Path, args, timings: dict) -> dict:
    from nofone.regulators.network import NetworkConfig
    from nofone.regulators.train import REPORT_FILE, TrainOptions, train_regulators

    started = time.perf_counter()
    if not (args.reuse and (folder / REPORT_FILE).is_file()):
        train_regulators(folder, TrainOptions(features=FEATURES, structure=STRUCTURE, targets=targets, input=source,
                                              annotation=ANNOTATION, network=NetworkConfig(seeds=args.seeds)))
        timings[f"train_{targets}_s"] = round(time.perf_counter() - started, 1)
    report = json.loads((folder / REPORT_FILE).read_text())
    performance = pd.read_csv(folder / "performance.tsv", sep="\t")
    return {"report": {k: report[k] for k in ("genes", "seeds", "best_seed", "attribution_checks", "seconds")},
            "samples_per_tissue": report["targets"].get("samples_per_tissue"),
            "features": {"n_features": report["features"]["n_features"],
                         "n_regulators": report["features"]["n_regulators"],
                         "dropped_bound_to_too_few_genes": len(report["features"]["dropped"]["bound_to_too_few_genes"]),
                         "tables": report["features"]["tables"]},
            "performance": performance.to_dict(orient="records")}


def tumours(atlas: Path, data: Path, out: Path, args, timings: dict) -> dict:
    from nofone.io.dataset import Dataset
    from nofone.regulators.explain import ExplainContext, ExplainOptions, explain_profile
    from nofone.regulators.explain_step import REPORT_FILE, explain
    from nofone.regulators.model import RegulatorModel

    samples = Dataset(data).samples.set_index("sample_id")
    explain_dir = out / "explain"
    started = time.perf_counter()
    if not (args.reuse and (explain_dir / REPORT_FILE).is_file()):
        explain(out / "tissue_model", atlas / "de", explain_dir, ExplainOptions())
        timings["explain_s"] = round(time.perf_counter() - started, 1)
    long = pd.read_parquet(explain_dir / "regulators.parquet")
    summary = pd.read_csv(explain_dir / "summary.tsv", sep="\t").set_index("sample_id")
    condition = samples["condition"].reindex(summary.index)
    tumour_ids = summary.index[condition == "tumour"].tolist()
    normal_ids = summary.index[condition == "normal"].tolist()
    from nofone.regulators.explain_step import cohort_table, sample_agreement

    tumour_long = long[long["sample_id"].isin(tumour_ids)]
    per_tumour = cohort_table(tumour_long, 0.05)
    regulators = per_tumour[per_tumour["kind"] == "regulator"]

    cohort_lfc = cohort_deseq2(data, tumour_ids, out, args)
    context = ExplainContext(RegulatorModel.load(out / "tissue_model"), ExplainOptions())
    genes = cohort_lfc.reset_index().rename(columns={"index": "gene_id"})
    se2 = cohort_lfc["lfcSE"].to_numpy() ** 2
    y = cohort_lfc["log2FoldChange"].to_numpy()
    spread = (1.4826 * np.median(np.abs(y - np.median(y)))) ** 2
    weights = 1.0 / (se2 + max(spread - np.median(se2), 0.05 * spread))
    cohort = explain_profile(context, genes[["gene_id"]].assign(gene_name=""), y, weights, "cohort DESeq2")
    cohort_table_ = cohort["regulators"]
    cohort_table_.to_csv(out / "cohort_fit_regulators.tsv", sep="\t", index=False)
    cohort_regs = cohort_table_[cohort_table_["kind"] == "regulator"].set_index("feature")
    median_z = tumour_long[tumour_long["kind"] == "regulator"].groupby("feature")["z"].median()
    common = cohort_regs.index.intersection(median_z.index)
    from scipy.stats import spearmanr

    top_cohort = set(cohort_regs.nsmallest(20, "rank").index)
    top_tumours = set(regulators.head(20)["feature"])
    significant_cohort = cohort_regs.index[cohort_regs["q_value"] < 0.05]
    share_in_tumours = regulators.set_index("feature").reindex(significant_cohort)["n_significant"] / len(tumour_ids)
    return {
        "n_tumours": len(tumour_ids), "n_heldout_normals": len(normal_ids),
        "heldout_spearman_tumours_median": float(summary.loc[tumour_ids, "heldout_spearman"].median()),
        "heldout_spearman_features_only_tumours_median": float(
            summary.loc[tumour_ids, "heldout_spearman_features_only"].median()),
        "heldout_spearman_normals_median": float(summary.loc[normal_ids, "heldout_spearman"].median()),
        "significant_per_tumour_median": float(summary.loc[tumour_ids, "n_significant"].median()),
        "significant_per_normal_median": float(summary.loc[normal_ids, "n_significant"].median()),
        "significant_per_normal_mean": float(summary.loc[normal_ids, "n_significant"].mean()),
        "n_regulators": int((long.drop_duplicates("feature")["kind"] == "regulator").sum()),
        "agreement_between_tumours": sample_agreement(tumour_long),
        "agreement_between_normals": sample_agreement(long[long["sample_id"].isin(normal_ids)]),
        "top_regulators_over_tumours": regulators.head(15)[
            ["feature", "source", "n_significant_up", "n_significant_down", "median_z", "median_rank"]
        ].to_dict(orient="records"),
        "checks": {"completeness_max_abs": float(summary["deeplift_completeness_max_abs"].max()),
                   "ig_spearman_median": float(summary["ig_spearman"].median())},
        "cohort_fit": {
            "heldout_spearman": cohort["summary"]["heldout_spearman"],
            "n_significant": cohort["summary"]["n_significant"],
            "top": cohort_regs.nsmallest(15, "rank")[["source", "direction", "z", "q_value"]].reset_index().to_dict(
                orient="records"),
            "spearman_z_vs_median_tumour_z": float(spearmanr(cohort_regs.loc[common, "z"], median_z[common]).statistic),
            "top20_overlap_with_tumours": len(top_cohort & top_tumours),
            "cohort_significant_share_of_tumours_median": float(share_in_tumours.median())
            if len(share_in_tumours) else None,
        },
    }


def cohort_deseq2(data: Path, tumour_ids: list[str], out: Path, args) -> pd.DataFrame:
    """DESeq2 (pydeseq2) of all tumours against the colon and rectum normals of the dataset."""
    path = out / "cohort_deseq2.tsv"
    if args.reuse and path.is_file():
        return pd.read_csv(path, sep="\t", index_col=0)
    from nofone.baselines.deseq2 import group_contrast
    from nofone.io.dataset import Dataset

    dataset = Dataset(data)
    samples = dataset.samples
    normals = samples.loc[(samples["condition"] == "normal") & samples["tissue"].isin(["coad", "read"]),
                          "sample_id"].tolist()
    chunk = dataset.read(tumour_ids + normals)
    expressed = chunk.counts.sum(0) >= 10 * len(chunk.sample_ids)
    counts = pd.DataFrame(chunk.counts[:, expressed], index=chunk.sample_ids,
                          columns=np.asarray(dataset.gene_ids)[expressed])
    status = pd.DataFrame({"status": ["tumour" if s in set(tumour_ids) else "normal" for s in chunk.sample_ids]},
                          index=chunk.sample_ids)
    result = group_contrast(counts, status, "~ status", ("status", "tumour", "normal"))
    result = result.dropna(subset=["log2FoldChange", "lfcSE"])
    result.to_csv(path, sep="\t")
    return result


def print_figures(result: dict) -> None:
    tissue = pd.DataFrame(result["tissue_de"]["performance"])
    wide = tissue.pivot(index="target", columns="method", values="spearman").reindex(columns=METHODS)
    median = wide.loc["median_expression"]
    tissues = wide.drop(index="median_expression")
    features = result["tissue_de"]["features"]
    print(f"\nfeatures: {', '.join(result['features'])}: {features['n_regulators']} regulators bound to >= 30 genes "
          f"(+ structure), {features['dropped_bound_to_too_few_genes']} dropped; no RBPs")
    genes = result["tissue_de"]["report"]["genes"]
    print(f"genes: {genes['n']} ({genes['train']} train, {genes['validation']} validation, "
          f"{genes['test']} test on chromosome 1); best of {result['seeds']} seeds\n")
    print(f"{'Spearman on held-out chr1 genes':40s}{'DEcode':>10s}{'ridge':>10s}{'boosted':>10s}{'paper':>10s}")
    per_tissue = result["tissue_de"].get("samples_per_tissue") or {}
    for name, row in tissues.iterrows():
        label = f"{name} ({per_tissue.get(name, '?')} normals)"
        print(f"  {label:38s}{row['decode']:10.3f}{row['ridge']:10.3f}{row['boosted_trees']:10.3f}")
    print(f"{'tissue DE, mean over ' + str(len(tissues)) + ' tissues':40s}{tissues['decode'].mean():10.3f}"
          f"{tissues['ridge'].mean():10.3f}{tissues['boosted_trees'].mean():10.3f}"
          f"{PAPER['tissue_de_mean_spearman']:10.2f}")
    print(f"{'median expression':40s}{median['decode']:10.3f}{median['ridge']:10.3f}{median['boosted_trees']:10.3f}"
          f"{PAPER['median_expression_spearman']:10.2f}")
    best = tissues.idxmax(axis=1)
    print(f"tissues where DEcode is not the best: {int((best != 'decode').sum())} of {len(tissues)} "
          f"(ridge best in {int((best == 'ridge').sum())}, boosted trees in {int((best == 'boosted_trees').sum())})")
    prior = pd.DataFrame(result["de_prior"]["performance"]).set_index("method").reindex(METHODS)
    print(f"{'DE prior, AUROC of the top decile':40s}" + "".join(f"{v:10.3f}" for v in prior["auroc"])
          + f"{PAPER['de_prior_auroc']:10.2f}")
    print(f"{'DE prior, Spearman':40s}" + "".join(f"{v:10.3f}" for v in prior["spearman"])
          + f"{PAPER['de_prior_spearman']:10.2f}")
    checks = result["tissue_de"]["report"]["attribution_checks"]
    print(f"attribution checks (tissue model, test genes): completeness error max "
          f"{checks['completeness_max_abs']:.2g}, DeepLIFT vs IG Spearman median {checks['ig_spearman_median']:.3f}, "
          f"between seeds {checks['seed_spearman_median']:.3f}")
    tumour = result.get("tumours")
    if not tumour:
        return
    print(f"\nrectal tumours ({tumour['n_tumours']}) and held-out normals ({tumour['n_heldout_normals']}), "
          f"explained by the tissue model's trunk; {tumour['n_regulators']} regulators")
    print(f"{'':52s}{'tumours':>10s}{'normals':>10s}")
    print(f"{'held-out-chromosome Spearman, median':52s}{tumour['heldout_spearman_tumours_median']:10.3f}"
          f"{tumour['heldout_spearman_normals_median']:10.3f}")
    features_only = tumour["heldout_spearman_features_only_tumours_median"]
    print(f"{'  features-only head, median (tumours)':52s}{features_only:10.3f}")
    print(f"{'regulators with q < 0.05 per sample, median':52s}{tumour['significant_per_tumour_median']:10.0f}"
          f"{tumour['significant_per_normal_median']:10.0f}")
    agree, agree_n = tumour["agreement_between_tumours"], tumour["agreement_between_normals"]
    print(f"{'agreement: mean pairwise Spearman of z':52s}{agree['mean_spearman_z']:10.3f}"
          f"{agree_n['mean_spearman_z']:10.3f}")
    print(f"{'agreement: mean Jaccard of the top 10':52s}{agree['mean_jaccard_top10']:10.3f}"
          f"{agree_n['mean_jaccard_top10']:10.3f}")
    print("most often significant over the tumours (n up / n down, median z):")
    for row in tumour["top_regulators_over_tumours"][:10]:
        print(f"  {row['feature']:22s}{row['source']:28s}{row['n_significant_up']:4d} /{row['n_significant_down']:4d}"
              f"{row['median_z']:8.2f}")
    fit = tumour["cohort_fit"]
    print(f"cohort fit (DESeq2 log fold changes, all tumours vs colon/rectum normals): held-out Spearman "
          f"{fit['heldout_spearman']:.3f}, {fit['n_significant']} regulators with q < 0.05")
    print(f"  its z against the tumours' median z: Spearman {fit['spearman_z_vs_median_tumour_z']:.3f}; "
          f"top-20 overlap {fit['top20_overlap_with_tumours']} of 20")
    print("  cohort top: " + ", ".join(f"{r['feature']} ({r['direction']}, z {r['z']:.1f})" for r in fit["top"][:8]))


if __name__ == "__main__":
    if not DATA.is_dir():
        print(f"skipped: no shared data at {DATA}")
        sys.exit(0)
    main()
