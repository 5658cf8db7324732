"""The evaluation measures of the paper, on tables: DE calls, enrichment, tissue association, AUROC.

All functions take and return pandas tables; none reads files or runs a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu


def count_calls(de: pd.DataFrame, q_thresholds: Sequence[float], lfc_threshold: float,
                keys: Sequence[str] = ("sample_id",)) -> pd.DataFrame:
    """DE genes per sample (and per any other key) at each q threshold: n_up, n_down, n_de.

    `de` has the columns of `nofone de` (q_value, log2_fold_change). Untested genes (NaN q) are
    never calls.
    """
    rows = []
    keys = list(keys)
    for q in q_thresholds:
        significant = (de["q_value"] < q).to_numpy()
        lfc = de["log2_fold_change"].to_numpy()
        up = significant & (lfc > lfc_threshold)
        down = significant & (lfc < -lfc_threshold)
        table = de[keys].assign(n_up=up, n_down=down).groupby(keys, sort=False)[["n_up", "n_down"]].sum()
        table = table.reset_index().assign(q_threshold=q)
        rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    out["n_de"] = out["n_up"] + out["n_down"]
    return out


def summarise_calls(calls: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean (sd) and median DE genes per sample, mean up and down, and the up:down ratio of the
    totals. The median beside the mean: a few samples far from every training state can carry
    most of the calls, for the model and for DESeq2 alike."""
    grouped = calls.groupby(list(by), sort=False)
    out = grouped.agg(n_samples=("n_de", "size"), mean_de=("n_de", "mean"), sd_de=("n_de", "std"),
                      median_de=("n_de", "median"), mean_up=("n_up", "mean"), mean_down=("n_down", "mean"),
                      total_up=("n_up", "sum"), total_down=("n_down", "sum")).reset_index()
    out["up_down_ratio"] = (out["total_up"] / out["total_down"].replace(0, np.nan)).round(3)
    return out.drop(columns=["total_up", "total_down"]).fillna({"sd_de": 0.0})


def enrichment_scores(de: pd.DataFrame, gene_sets: dict[str, set[str]], q_threshold: float,
                      lfc_threshold: float, keys: Sequence[str] = ("sample_id",)) -> pd.DataFrame:
    """The paper's enrichment score per sample and gene set.

    ES = (marker DEGs x tested genes) / (DEGs x markers among tested genes): the fraction of
    markers among the calls over the fraction of markers among all tested genes (1 = none).
    Genes match a set by gene_name or gene_id. NaN when there are no calls or no tested markers.
    """
    keys = list(keys)
    rows = []
    for key, table in de.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        tested = table[table["q_value"].notna()]
        called = (tested["q_value"] < q_threshold) & (tested["log2_fold_change"].abs() > lfc_threshold)
        names = tested["gene_name"].fillna("").astype(str).to_numpy()
        ids = tested["gene_id"].astype(str).to_numpy()
        for name, members in gene_sets.items():
            is_marker = np.fromiter((n in members or i in members for n, i in zip(names, ids)), bool, len(ids))
            n_markers, n_de = int(is_marker.sum()), int(called.sum())
            hits = int((is_marker & called.to_numpy()).sum())
            score = hits * len(ids) / (n_de * n_markers) if n_de and n_markers else np.nan
            rows.append(dict(zip(keys, key)) | {"gene_set": name, "n_genes": len(ids), "n_markers": n_markers,
                                                "n_de": n_de, "n_markers_de": hits, "enrichment_score": score})
    return pd.DataFrame(rows)


def read_gene_sets(paths: Iterable[str]) -> dict[str, set[str]]:
    """GMT files (name, description, genes...) or lists (one gene per line; the file name is the set);
    either may be gzipped (.gz)."""
    import gzip
    from pathlib import Path

    from nofone.errors import InputError

    sets: dict[str, set[str]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"gene set file {path} does not exist")
        gzipped = path.suffix.lower() == ".gz"
        try:
            text = gzip.decompress(path.read_bytes()).decode() if gzipped else path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"gene set file {path}: not a text file ({exc})") from None
        lines = [ln.rstrip("\n\r") for ln in text.splitlines() if ln.strip()]
        stem = Path(path.stem) if gzipped else path  # h.all.gmt.gz -> h.all.gmt
        if stem.suffix.lower() == ".gmt" or (lines and len(lines[0].split("\t")) > 2):
            for number, line in enumerate(lines, start=1):
                fields = line.split("\t")
                if len(fields) < 3:
                    raise InputError(f"gene set file {path}, line {number}: a GMT line has name, description, genes")
                sets[fields[0]] = {g.strip() for g in fields[2:] if g.strip()}
        else:
            genes = {ln.split("\t")[0].split(",")[0].strip() for ln in lines}
            genes.discard("gene_id")
            genes.discard("gene_name")
            sets[stem.stem] = genes
    if not sets:
        raise InputError("no gene sets read")
    return sets


def association_matrix(tissue: Sequence[str], component: Sequence[int]) -> pd.DataFrame:
    """Counts of samples per tissue (rows) and mixture component (columns)."""
    table = pd.crosstab(pd.Series(list(tissue), name="tissue"), pd.Series(list(component), name="component"))
    return table


def component_tissue(tissue: Sequence[str], component: Sequence[int]) -> pd.Series:
    """Each component's majority tissue among the samples assigned to it."""
    frame = pd.DataFrame({"tissue": list(tissue), "component": list(component)})
    return frame.groupby("component")["tissue"].agg(lambda s: s.value_counts().index[0])


def assignment_accuracy(groups: Sequence[str], tissue: Sequence[str], component: Sequence[int],
                        majority: pd.Series) -> pd.DataFrame:
    """Fraction of samples whose component's majority tissue is their own, per group and tissue."""
    frame = pd.DataFrame({"group": list(groups), "tissue": list(tissue), "component": list(component)})
    frame["assigned"] = frame["component"].map(majority)
    frame["correct"] = frame["assigned"] == frame["tissue"]
    out = frame.groupby(["group", "tissue"]).agg(n=("correct", "size"), accuracy=("correct", "mean")).reset_index()
    total = frame.groupby("group").agg(n=("correct", "size"), accuracy=("correct", "mean")).reset_index()
    return pd.concat([out, total.assign(tissue="all")], ignore_index=True)


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counted half: Mann-Whitney U / (n1 n2).

    Values that are not finite are left out (a model without a latent prior has NaN latent NLLs);
    NaN when either side has none."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    positive, negative = positive[np.isfinite(positive)], negative[np.isfinite(negative)]
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    return float(mannwhitneyu(positive, negative, alternative="two-sided").statistic / (len(positive) * len(negative)))


def thin_spike_ins(counts: np.ndarray, log2_fold_change: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Binomial thinning that changes gene g's relative abundance by 2^lfc_g, exactly in law.

    Every gene is kept with probability 2^lfc_g / max_j 2^lfc_j: down genes directly, and up genes
    relative to all the others (thinned more), which leaves the sample a little shallower but
    every ratio between genes as asked. Thinning NB(m, r) gives NB(p m, r), so unchanged genes
    keep their distribution up to the depth.
    """
    factor = np.exp2(np.asarray(log2_fold_change, dtype=np.float64))
    keep = factor / factor.max(axis=-1, keepdims=True)
    return rng.binomial(np.asarray(counts, dtype=np.int64), keep)
