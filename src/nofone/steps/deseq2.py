"""`nofone deseq2`: the classical baseline (pydeseq2, matched to Bioconductor DESeq2) on our datasets.

- `contrast`: a cohort comparison, any design over the sample metadata; writes
  `deseq2_results.tsv` (R's `results()` columns) and `deseq2_report.json`.
- `n_of_one`: each case sample against controls (all, or k drawn at random per repeat with a
  seeded generator per (case, repeat)); writes `deseq2.parquet` in the layout of `nofone de`
  (plus `repeat`, `n_controls`), `summary.tsv`, `controls.tsv` (the controls of every run) and
  `deseq2_report.json`. The controls are read once; cases stream one at a time.

Genes that a dataset marks as not measured in a sample of the comparison are left out of it
(never zero-filled) and counted in the report.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nofone import __version__
from nofone.baselines.deseq2 import RESULT_COLUMNS, default_n_cpus, fit_contrast
from nofone.baselines.deseq2 import n_of_one as deseq2_n_of_one
from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset
from nofone.models.registry import TRAIN_REPRESENTATIONS
from nofone.progress import progress
from nofone.steps.common import select_samples
from nofone.steps.de import ABNORMAL, DE_SCHEMA, SUMMARY_FILE

RESULTS_FILE = "deseq2_results.tsv"
REPORT_FILE = "deseq2_report.json"
NOF1_FILE = "deseq2.parquet"
CONTROLS_FILE = "controls.tsv"
NOF1_SCHEMA = DE_SCHEMA.append(pa.field("repeat", pa.int32())).append(pa.field("n_controls", pa.int32()))
CASE_CHUNK = 8


def _pydeseq2_version() -> str:
    from importlib.metadata import version

    return version("pydeseq2")


def _gene_names(data: Dataset) -> np.ndarray:
    return data.genes["gene_name"].astype(object).where(data.genes["gene_name"].notna(), "").to_numpy(dtype=object)


def parse_contrast(text: str | Sequence[str]) -> tuple[str, str, str]:
    """`"dex,treated,control"` (or a 3-sequence) -> (factor, level, reference)."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    if len(parts) != 3 or not all(parts):
        raise InputError(f"contrast {text!r}: give factor,level,reference (e.g. dex,treated,control)")
    return parts[0], parts[1], parts[2]


def contrast(input_dir: Path, outdir: Path, design: str, contrast: str | Sequence[str], alpha: float = 0.05,
             n_cpus: int | None = None) -> dict:
    """DESeq2 on a whole dataset for one contrast; returns the report (also written)."""
    started = time.perf_counter()
    factor, level, reference = parse_contrast(contrast)
    data = Dataset(input_dir)
    chunk = data.read()
    measured = chunk.measured_mask().all(axis=0)
    gene_ids = np.asarray(data.gene_ids, dtype=object)
    counts = pd.DataFrame(chunk.counts[:, measured], index=chunk.sample_ids, columns=gene_ids[measured])
    metadata = data.samples.set_index("sample_id")
    fit = fit_contrast(counts, metadata, design, (factor, level, reference), alpha, n_cpus or default_n_cpus())
    results = fit.results
    table = pd.DataFrame({"gene_id": gene_ids[measured], "gene_name": _gene_names(data)[measured]})
    for column in RESULT_COLUMNS:
        table[column] = results[column].to_numpy()
    significant = results["padj"] < alpha
    levels = metadata.loc[counts.index, factor].astype(str).value_counts()
    report = {
        "nofone_version": __version__, "pydeseq2_version": _pydeseq2_version(),
        "input": str(Path(input_dir).resolve()), "design": design,
        "contrast": {"factor": factor, "level": level, "reference": reference}, "alpha": alpha,
        "n_samples": len(counts), "n_samples_per_level": {str(k): int(v) for k, v in levels.sort_index().items()},
        "size_factors": {s: float(v) for s, v in fit.size_factors.items()},
        "n_genes": int(measured.sum()), "n_genes_not_measured_everywhere": int((~measured).sum()),
        "n_all_zero": int((results["baseMean"] == 0).sum()),
        "n_cooks_outliers": int((results["baseMean"] > 0).sum() - results["pvalue"].notna().sum()),
        "n_independently_filtered": int((results["pvalue"].notna() & results["padj"].isna()).sum()),
        "n_significant": int(significant.sum()),
        "n_up": int((significant & (results["log2FoldChange"] > 0)).sum()),
        "n_down": int((significant & (results["log2FoldChange"] < 0)).sum()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    with staged_outdir(outdir) as stage:
        table.to_csv(stage / RESULTS_FILE, sep="\t", index=False, na_rep="NA")
        write_json_atomic(stage / REPORT_FILE, report)
    return report


def _require_selection(side: str, ids: Sequence[str] | None, condition: str | None, other: bool = False) -> None:
    if not ids and condition is None and not other:
        flag = "--case" if side == "cases" else "--control"
        more = " or --cases-except-condition" if side == "cases" else " or --controls-trained-by"
        raise InputError(f"no {side} named: give {flag} sample ids, --{side}-condition{more}")


def _select(data: Dataset, side: str, ids: Sequence[str] | None, condition: str | None, column: str,
            other: bool = False) -> list[str]:
    _require_selection(side, ids, condition, other)
    try:
        return select_samples(data, list(ids or []), None, condition, column)
    except InputError as exc:
        if "no samples selected" in str(exc):
            what = f"{column} {condition!r}" if condition is not None else "the ids given"
            raise InputError(f"{data.root}: no {side} selected ({what})") from None
        raise


def _cases_except(data: Dataset, cases: list[str], conditions: Sequence[str], column: str) -> list[str]:
    """The cases whose condition is none of `conditions` (a sample without a condition stays a case)."""
    if not conditions:
        return cases
    if column not in data.samples.columns:
        raise InputError(f"{data.root}: no '{column}' column for --cases-except-condition")
    excluded = set(data.samples.loc[data.samples[column].astype("string").isin(list(conditions)), "sample_id"])
    kept = [s for s in cases if s not in excluded]
    if not kept:
        raise InputError(f"{data.root}: no cases selected (every sample's {column} is one of "
                         f"{sorted(conditions)}, given by --cases-except-condition)")
    return kept


def _trained_by(data: Dataset, controls: list[str], model_dir: Path | None) -> list[str]:
    """The controls that the model in `model_dir` trained on (its training representations, split 'train')."""
    if model_dir is None:
        return controls
    path = Path(model_dir) / TRAIN_REPRESENTATIONS
    if not path.is_file():
        raise InputError(f"--controls-trained-by {model_dir}: no {TRAIN_REPRESENTATIONS} (expected a model folder "
                         "from `nofone train`)")
    table = pq.read_table(path, columns=["sample_id", "split"]).to_pandas()
    trained = set(table.loc[table["split"] == "train", "sample_id"].astype(str))
    kept = [s for s in controls if s in trained]
    if not kept:
        raise InputError(f"{data.root}: no controls selected: none of the samples that {model_dir} trained on "
                         "is among them (--controls-trained-by)")
    return kept


def plan_controls(data: Dataset, cases: list[str], controls: list[str], *, same_tissue: bool,
                  tissue_column: str, n_controls: int | None) -> dict[str, list[str]]:
    """Eligible controls per case (dataset order): never the case itself; its tissue's with same_tissue."""
    tissue_of: dict[str, str | None] = {}
    if same_tissue:
        if tissue_column not in data.samples.columns:
            raise InputError(f"{data.root}: --same-tissue needs a '{tissue_column}' column in the sample metadata")
        tissue_of = {s: None if pd.isna(t) else str(t)
                     for s, t in zip(data.samples["sample_id"].astype(str), data.samples[tissue_column])}
    plan = {}
    for case in cases:
        eligible = [c for c in controls if c != case]
        where = ""
        if same_tissue:
            tissue = tissue_of[case]
            if tissue is None:
                raise InputError(f"{data.root}: case {case} has no {tissue_column}; it cannot use --same-tissue")
            eligible = [c for c in eligible if tissue_of[c] == tissue]
            where = f" of {tissue_column} {tissue!r}"
        if not eligible:
            raise InputError(f"{data.root}: no controls{where} for case {case}")
        if len(eligible) < 2:
            raise InputError(f"{data.root}: case {case} has {len(eligible)} control{where}; DESeq2 needs at least 2")
        if n_controls is not None and n_controls > len(eligible):
            raise InputError(f"{data.root}: --n-controls {n_controls} is larger than the {len(eligible)} controls"
                             f"{where} available for case {case}")
        plan[case] = eligible
    return plan


def draw_controls(eligible: list[str], n_controls: int | None, case: str, repeat: int, seed: int) -> list[str]:
    """All eligible controls, or k of them drawn with a generator seeded by (seed, case, repeat)."""
    if n_controls is None:
        return list(eligible)
    rng = np.random.default_rng([seed, zlib.crc32(case.encode()), repeat])
    chosen = np.sort(rng.choice(len(eligible), size=n_controls, replace=False))
    return [eligible[i] for i in chosen]


@dataclass
class NOfOneOptions:
    """Which samples `n_of_one` tests against which controls, and how (`nofone deseq2 n-of-one --help`).

    Cases: the ids, the samples of `cases_condition`, and/or the samples whose condition is none of
    `cases_except_conditions`. Controls: the ids and/or the samples of `controls_condition`, kept to
    those the model in `controls_trained_by` trained on (all of them when nothing else is given).
    """

    cases: Sequence[str] | None = None
    cases_condition: str | None = None
    cases_except_conditions: Sequence[str] = ()
    controls: Sequence[str] | None = None
    controls_condition: str | None = None
    controls_trained_by: Path | None = None
    same_tissue: bool = False        # only controls of the case's own tissue
    n_controls: int | None = None    # k random controls per case and repeat; None: all of them
    repeats: int = 1
    seed: int = 0
    alpha: float = 0.05              # DESeq2's independent filtering
    q_threshold: float = 0.01        # calls in summary.tsv
    lfc_threshold: float = 1.0
    condition_column: str = "condition"
    tissue_column: str = "tissue"
    n_cpus: int | None = None        # None: `default_n_cpus()`


def _check(options: NOfOneOptions) -> None:
    if options.n_controls is not None and options.n_controls < 2:
        raise InputError(f"--n-controls must be at least 2 (DESeq2 needs 2 controls), got {options.n_controls}")
    if options.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {options.repeats}")
    if options.repeats > 1 and options.n_controls is None:
        raise InputError("--repeats above 1 needs --n-controls: with all controls every repeat is the same")
    if not 0 < options.alpha < 1:
        raise InputError(f"--alpha must lie strictly between 0 and 1, got {options.alpha}")


def _cases_and_controls(data: Dataset, options: NOfOneOptions) -> tuple[list[str], dict[str, list[str]]]:
    """The cases, and each case's eligible controls."""
    column = options.condition_column
    case_ids = _select(data, "cases", options.cases, options.cases_condition, column,
                       bool(options.cases_except_conditions))
    case_ids = _cases_except(data, case_ids, options.cases_except_conditions, column)
    control_ids = _select(data, "controls", options.controls, options.controls_condition, column,
                          options.controls_trained_by is not None)
    control_ids = _trained_by(data, control_ids, options.controls_trained_by)
    plan = plan_controls(data, case_ids, control_ids, same_tissue=options.same_tissue,
                         tissue_column=options.tissue_column, n_controls=options.n_controls)
    return case_ids, plan


def n_of_one(input_dir: Path, outdir: Path, options: NOfOneOptions) -> pd.DataFrame:
    """DESeq2 for each case against controls; returns the summary (also written to summary.tsv)."""
    started = time.perf_counter()
    _check(options)
    data = Dataset(input_dir)
    case_ids, plan = _cases_and_controls(data, options)
    n_cpus = options.n_cpus or default_n_cpus()
    needed = sorted(set().union(*plan.values()), key={s: i for i, s in enumerate(data.sample_ids)}.get)
    pool = data.read(needed)  # the controls, read once
    row_of = {s: i for i, s in enumerate(pool.sample_ids)}
    pool_measured = pool.measured_mask()
    gene_ids = np.asarray(data.gene_ids, dtype=object)
    gene_names = _gene_names(data)
    summaries, drawn = [], []
    with staged_outdir(outdir) as stage, \
            pq.ParquetWriter(stage / NOF1_FILE, NOF1_SCHEMA, compression="zstd") as writer, \
            progress("DESeq2 n-of-one", len(case_ids) * options.repeats) as advance:
        for chunk in data.iter_chunks(CASE_CHUNK, sample_ids=case_ids):
            case_measured = chunk.measured_mask()
            for i, case in enumerate(chunk.sample_ids):
                for repeat in range(options.repeats):
                    chosen = draw_controls(plan[case], options.n_controls, case, repeat, options.seed)
                    rows = np.array([row_of[c] for c in chosen])
                    genes = case_measured[i] & pool_measured[rows].all(axis=0)
                    case_counts = pd.Series(chunk.counts[i, genes], index=gene_ids[genes], name=case)
                    control_counts = pd.DataFrame(pool.counts[np.ix_(rows, np.flatnonzero(genes))],
                                                  index=chosen, columns=gene_ids[genes])
                    result = deseq2_n_of_one(case_counts, control_counts, options.alpha, n_cpus)
                    table = _de_table(case, repeat, len(chosen), gene_ids[genes], gene_names[genes], result,
                                      options.q_threshold, options.lfc_threshold)
                    writer.write_table(pa.Table.from_pandas(table, schema=NOF1_SCHEMA, preserve_index=False))
                    summaries.append(_summary(case, repeat, len(chosen), table, options.q_threshold,
                                              options.lfc_threshold)
                                     | {"size_factor": result.attrs["size_factors"][case],
                                        "n_not_measured": int((~genes).sum())})
                    drawn += [(case, repeat, c) for c in chosen]
                    advance(1)
        summary = pd.DataFrame(summaries)
        summary.to_csv(stage / SUMMARY_FILE, sep="\t", index=False)
        pd.DataFrame(drawn, columns=["sample_id", "repeat", "control_id"]).to_csv(
            stage / CONTROLS_FILE, sep="\t", index=False)
        trained_by = options.controls_trained_by
        write_json_atomic(stage / REPORT_FILE, {
            "nofone_version": __version__, "pydeseq2_version": _pydeseq2_version(),
            "input": str(Path(input_dir).resolve()), "design": "~ group", "contrast": ["group", "case", "control"],
            "n_cases": len(case_ids), "cases_except_conditions": list(options.cases_except_conditions),
            "controls_condition": options.controls_condition,
            "controls_trained_by": str(trained_by) if trained_by is not None else None,
            "n_control_pool": len(needed),
            "same_tissue": options.same_tissue,
            "n_controls": options.n_controls or "all", "repeats": options.repeats, "seed": options.seed,
            "alpha": options.alpha, "q_threshold": options.q_threshold, "lfc_threshold": options.lfc_threshold,
            "seconds": round(time.perf_counter() - started, 2),
        })
    return summary


def _de_table(case: str, repeat: int, n_controls: int, gene_ids: np.ndarray, gene_names: np.ndarray,
              result: pd.DataFrame, q: float, lfc: float) -> pd.DataFrame:
    """The shared DE layout; the NB tier does not apply to DESeq2 (`p_value_nb`, `q_value_nb`
    empty) and its calls are the "abnormal" tier."""
    with np.errstate(divide="ignore"):
        size = 1.0 / result["dispersion"].to_numpy()
    padj, fold = result["padj"].to_numpy(), result["log2FoldChange"].to_numpy()
    with np.errstate(invalid="ignore"):
        called = (padj < q) & (np.abs(fold) > lfc)
    return pd.DataFrame({
        "sample_id": case, "gene_id": gene_ids, "gene_name": gene_names,
        "count": result["count"].to_numpy(dtype=np.int64), "normal_mean": result["normal_mean"].to_numpy(),
        "dispersion": size, "log2_fold_change": result["log2FoldChange"].to_numpy(),
        "p_value": result["pvalue"].to_numpy(), "q_value": result["padj"].to_numpy(),
        "can_call_down": True, "p_value_nb": np.nan, "q_value_nb": np.nan,
        "call": np.where(called, ABNORMAL, "").astype(object),
        "repeat": np.int32(repeat), "n_controls": np.int32(n_controls),
    })


def _summary(case: str, repeat: int, n_controls: int, table: pd.DataFrame, q: float, lfc: float) -> dict:
    sig = table["q_value"] < q
    up = sig & (table["log2_fold_change"] > lfc)
    down = sig & (table["log2_fold_change"] < -lfc)
    return {
        "sample_id": case, "repeat": repeat, "n_controls": n_controls,
        "n_tested": int(table["p_value"].notna().sum()),
        "n_up": int(up.sum()), "n_down": int(down.sum()), "n_de": int((up | down).sum()),
    }
