"""Find and read what the report shows: the outputs of `nofone run` (or of the single steps).

Nothing here fails because an output is missing: each reader returns None and the section that
needs it says so. Paths the user named explicitly must exist (an InputError names them).
Only pandas and pyarrow are used: the report needs no torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nofone.errors import InputError
from nofone.models.registry import HISTORY, TRAIN_REPRESENTATIONS
from nofone.regulators.outputs import COHORT_FILE, LONG_FILE, REGULATORS_DIR, REPORT_FILE, SUMMARY_FILE
from nofone.report.style import TRAINING, heldout_label

log = logging.getLogger(__name__)

# file names written by the steps (kept here so that the report does not import torch)
MODEL_CONFIG = "config.json"
REPRESENTATIONS = "representations.parquet"
DE_FILE = "de.parquet"
DE_SUMMARY = "summary.tsv"
DE_REPORT = "de_report.json"
GATHER_REPORT = "gather_report.json"  # `nofone gather` (Nextflow's GATHER): the chunks' reports
SAMPLES = "samples.parquet"
EVALUATION_FILES = ("negative_control_summary.tsv", "spike_ins_summary.tsv", "frontier.tsv", "tumour_control.tsv",
                    "enrichment_summary.tsv", "assignment.tsv", "nll_auroc.tsv")
# written by `nofone cohort-de` (nofone.steps.cohort_de, not imported: it needs torch)
COHORT_RESULTS = "cohort_de.tsv"
COHORT_REPORT = "cohort_de_report.json"
COHORT_LATENT = "latent.tsv"
COHORT_ENRICHMENT = "enrichment_*.tsv"
# written by `nofone pathways` (nofone.steps.pathways)
PATHWAYS_TABLE, PATHWAYS_SUMMARY, PATHWAYS_REPORT = "pathways.parquet", "summary.tsv", "pathways_report.json"
COHORT_REQUIRED_COLUMNS = ("gene_id", "log2_fold_change")
EXPLAIN_DIR = "explain"  # `nofone explain` inside a run folder (`nofone run --regulators`)
EXPLAIN_SUMMARY_COLUMNS = ("sample_id", "heldout_spearman", "n_significant")
EXPLAIN_REGULATOR_COLUMNS = ("feature", "kind", "rank", "mean_attribution", "direction", "z", "q_value")


@dataclass
class ReportPaths:
    """The folders the report reads; None where there is none."""

    run: Path | None = None
    model: Path | None = None
    representations: Path | None = None
    de: Path | None = None
    data: Path | None = None
    evaluation: Path | None = None
    cohort_de: Path | None = None
    explain: Path | None = None
    pathways: Path | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in self.__dict__.items()}


def _folder(path: Path | None, option: str) -> Path | None:
    """An explicit option: the folder must exist (a file inside it is accepted for its folder)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file() and option != "--run":
        return path.parent
    if not path.is_dir():
        what = {"--run": "the output folder of `nofone run` or `nofone demo`",
                "--evaluation": "the output folder of `nofone evaluate`",
                "--cohort-de": "the output folder of `nofone cohort-de`",
                "--explain": "the output folder of `nofone explain`",
                "--pathways": "the output folder of `nofone pathways`"}.get(option, "a folder")
        raise InputError(f"{option} {path} does not exist (expected {what})")
    return path


def resolve_paths(run: Path | None = None, model: Path | None = None, representations: Path | None = None,
                  de: Path | None = None, data: Path | None = None,
                  evaluation: Path | None = None, cohort_de: Path | None = None,
                  explain: Path | None = None, pathways: Path | None = None) -> ReportPaths:
    """Folders of a `nofone run` output, each replaceable by an explicit option.

    `cohort_de` (the output folder of `nofone cohort-de`) is independent of the run and may come
    alone, as may `explain` (of `nofone explain`, found as RUN/explain when the run made it) and
    `pathways` (of `nofone pathways`, found as RUN/pathways).
    """
    if run is None and not any((model, representations, de, data, cohort_de, explain, pathways)):
        raise InputError("give --run (the output folder of `nofone run`) or at least one of "
                         "--model, --representations, --de, --data, --cohort-de, --explain, --pathways")
    run = _folder(run, "--run")
    paths = ReportPaths(run=run, model=_folder(model, "--model"),
                        representations=_folder(representations, "--representations"),
                        de=_folder(de, "--de"), data=_folder(data, "--data"),
                        evaluation=_folder(evaluation, "--evaluation"),
                        cohort_de=_folder(cohort_de, "--cohort-de"), explain=_folder(explain, "--explain"),
                        pathways=_folder(pathways, "--pathways"))
    if run is not None:
        if paths.pathways is None and (run / "pathways").is_dir():
            paths.pathways = run / "pathways"
        if paths.model is None:
            paths.model = _model_of_run(run)
        if paths.representations is None and (run / "representations").is_dir():
            paths.representations = run / "representations"
        if paths.de is None and (run / "de").is_dir():
            paths.de = run / "de"
        if paths.explain is None and (run / EXPLAIN_DIR).is_dir():
            paths.explain = run / EXPLAIN_DIR
        if paths.data is None:
            for name in ("filtered", "data"):  # filtered/ is what represent and de read
                if (run / name / SAMPLES).is_file():
                    paths.data = run / name
                    break
    return paths


def _model_of_run(run: Path) -> Path | None:
    if (run / "model").is_dir():
        return run / "model"
    summary = run / "run_summary.json"  # `nofone run --model M` records M there
    if summary.is_file():
        try:
            model = json.loads(summary.read_text()).get("model")
        except (json.JSONDecodeError, AttributeError):
            return None
        if model and Path(model).is_dir():
            return Path(model)
    return None


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    return value if isinstance(value, dict) else None


def read_de_report(de_dir: Path) -> dict | None:
    """A `nofone de` folder's report; for a folder gathered from chunks (the Nextflow layout) the
    first chunk's, since every chunk ran with the same model and options."""
    report = _read_json(Path(de_dir) / DE_REPORT)
    if report is None:
        gathered = _read_json(Path(de_dir) / GATHER_REPORT) or {}
        chunks = (gathered.get("reports") or {}).get(DE_REPORT) or [None]
        report = chunks[0] if isinstance(chunks, list) and isinstance(chunks[0], dict) else None
    return report


def _read_tsv(path: Path, dtype: dict | None = None) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as a TSV table ({exc})") from exc


def _read_latent_table(path: Path, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
    """The scalar columns of a representations file and its latent points as an [N, D] array."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({exc})") from exc
    present = [c for c in columns if c in table.column_names]
    frame = table.select(present).to_pandas()
    latent = None
    if "latent" in table.column_names and len(table):
        column = table.column("latent").combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False)
        latent = np.asarray(values, dtype=float).reshape(len(table), -1)
    return frame, latent


@dataclass
class PathwayData:
    """The outputs of `nofone pathways`: per-sample summary, the called sets, the run's report."""

    summary: pd.DataFrame          # summary.tsv + group
    called: pd.DataFrame           # the rows of pathways.parquet with called = True
    report: dict | None = None     # pathways_report.json


def load_pathways(folder: Path) -> PathwayData | None:
    summary = _read_tsv(folder / PATHWAYS_SUMMARY, dtype={"sample_id": str})
    if summary is None or not (folder / PATHWAYS_TABLE).is_file():
        return None
    try:
        table = pq.read_table(folder / PATHWAYS_TABLE, filters=[("called", "==", True)]).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{folder / PATHWAYS_TABLE}: cannot be read ({exc})") from exc
    return PathwayData(summary=summary, called=table, report=_read_json(folder / PATHWAYS_REPORT))


@dataclass
class CohortData:
    """The outputs of `nofone cohort-de`, each None (or empty) when its file is missing."""

    folder: Path
    report: dict | None = None                    # cohort_de_report.json
    table: pd.DataFrame | None = None             # cohort_de.tsv (gene_id and gene_name as text)
    latent: pd.DataFrame | None = None            # latent.tsv
    enrichment: dict[str, pd.DataFrame] = field(default_factory=dict)  # enrichment_<method>.tsv by file name


def load_cohort(folder: Path) -> CohortData:
    cohort = CohortData(folder)
    cohort.report = _read_json(folder / COHORT_REPORT)
    cohort.table = _read_tsv(folder / COHORT_RESULTS, dtype={"gene_id": str, "gene_name": str})
    if cohort.table is not None:
        missing = [c for c in COHORT_REQUIRED_COLUMNS if c not in cohort.table.columns]
        if missing:
            raise InputError(f"{folder / COHORT_RESULTS}: columns {missing} are missing "
                             "(is it from `nofone cohort-de`?)")
        if "gene_name" not in cohort.table:
            cohort.table["gene_name"] = ""
        cohort.table["gene_name"] = cohort.table["gene_name"].fillna("")
    cohort.latent = _read_tsv(folder / COHORT_LATENT, dtype={"sample_id": str})
    if cohort.latent is not None and not ({"plot_x", "plot_y"} <= set(cohort.latent.columns)
                                          or "z1" in cohort.latent.columns):
        raise InputError(f"{folder / COHORT_LATENT}: neither plot_x/plot_y nor z1, z2, ... columns")
    for path in sorted(folder.glob(COHORT_ENRICHMENT)):
        table = _read_tsv(path)
        if table is not None:
            cohort.enrichment[path.name] = table
    return cohort


@dataclass
class ExplainData:
    """The outputs of `nofone explain`, each None when its file is missing."""

    folder: Path
    report: dict | None = None                    # explain_report.json
    summary: pd.DataFrame | None = None           # summary.tsv: one row per sample (+ group, tissue)
    cohort: pd.DataFrame | None = None            # cohort.tsv: one row per feature
    regulators: pd.DataFrame | None = None        # regulators.parquet (or regulators/<sample>.tsv)


def _require(frame: pd.DataFrame | None, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if frame is not None and c not in frame.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} are missing (is it from `nofone explain`?)")


def load_explain(folder: Path) -> ExplainData:
    explained = ExplainData(folder)
    explained.report = _read_json(folder / REPORT_FILE)
    explained.summary = _read_tsv(folder / SUMMARY_FILE, dtype={"sample_id": str, "top_up": str, "top_down": str})
    _require(explained.summary, EXPLAIN_SUMMARY_COLUMNS, folder / SUMMARY_FILE)
    explained.cohort = _read_tsv(folder / COHORT_FILE, dtype={"feature": str})
    _require(explained.cohort, ("feature", "n_significant"), folder / COHORT_FILE)
    if (folder / LONG_FILE).is_file():
        try:
            explained.regulators = pd.read_parquet(folder / LONG_FILE)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{folder / LONG_FILE}: cannot be read as Parquet ({exc})") from exc
        _require(explained.regulators, ("sample_id", *EXPLAIN_REGULATOR_COLUMNS), folder / LONG_FILE)
    else:  # the per-sample tables alone
        tables = []
        for path in sorted((folder / REGULATORS_DIR).glob("*.tsv")):
            table = _read_tsv(path, dtype={"feature": str})
            _require(table, EXPLAIN_REGULATOR_COLUMNS, path)
            tables.append(table.assign(sample_id=path.stem))
        explained.regulators = pd.concat(tables, ignore_index=True) if tables else None
    if explained.regulators is not None:
        explained.regulators["sample_id"] = explained.regulators["sample_id"].astype(str)
    return explained


@dataclass
class ReportData:
    """Everything the sections read, each None when its file is missing."""

    paths: ReportPaths
    config: dict | None = None
    history: pd.DataFrame | None = None
    training: pd.DataFrame | None = None          # sample_id, split, tissue, component, nll_per_gene, ...
    training_latent: np.ndarray | None = None
    represented: pd.DataFrame | None = None       # sample_id, component, nll_per_gene, ... + group, tissue
    represented_latent: np.ndarray | None = None
    summary: pd.DataFrame | None = None           # de/summary.tsv + group, tissue
    de_report: dict | None = None
    samples: pd.DataFrame | None = None           # samples.parquet
    condition_column: str = "condition"
    normal_value: str = "normal"
    evaluation: dict[str, pd.DataFrame] = field(default_factory=dict)
    cohort: CohortData | None = None              # from --cohort-de
    explain: ExplainData | None = None            # from --explain or RUN/explain
    pathways: PathwayData | None = None           # from --pathways (or RUN/pathways)

    @property
    def heldout(self) -> str:
        return heldout_label(self.normal_value)

    @property
    def de_file(self) -> Path | None:
        if self.paths.de is None or not (self.paths.de / DE_FILE).is_file():
            return None
        return self.paths.de / DE_FILE

    @property
    def explain_summary(self) -> pd.DataFrame | None:
        return self.explain.summary if self.explain is not None else None

    @property
    def training_info(self) -> dict:
        return (self.config or {}).get("training") or {}

    def group_of(self, sample_ids: pd.Series) -> pd.Series:
        """Condition of each tested sample; normals the model held out get their own group."""
        groups = pd.Series("tested", index=sample_ids.index, dtype=object)
        if self.samples is not None and self.condition_column in self.samples.columns:
            condition = self.samples.set_index("sample_id")[self.condition_column]
            known = sample_ids.isin(condition.index)
            groups[known] = condition.reindex(sample_ids[known]).fillna("unknown").astype(str).to_numpy()
        if self.training is not None:
            held = set(self.training.loc[self.training["split"] == "test", "sample_id"])
            groups[sample_ids.isin(held)] = self.heldout
        return groups

    def tissue_of(self, sample_ids: pd.Series) -> pd.Series | None:
        if self.samples is None or "tissue" not in self.samples.columns:
            return None
        tissue = self.samples.set_index("sample_id")["tissue"]
        return pd.Series(tissue.reindex(sample_ids).to_numpy(), index=sample_ids.index, dtype=object)

    def all_groups(self) -> list[str]:
        groups: set[str] = set()
        if self.training is not None and (self.training["split"] == "train").any():
            groups.add(TRAINING)
        for frame in (self.represented, self.summary, self.explain_summary):
            if frame is not None:
                groups.update(frame["group"].astype(str))
        if self.training is not None and (self.training["split"] == "test").any():
            groups.add(self.heldout)
        return sorted(groups)


def load(paths: ReportPaths) -> ReportData:
    data = ReportData(paths)
    if paths.model is not None:
        data.config = _read_json(paths.model / MODEL_CONFIG)
        data.history = _read_tsv(paths.model / HISTORY)
        found = _read_latent_table(paths.model / TRAIN_REPRESENTATIONS,
                                   ["sample_id", "split", "tissue", "component", "component_probability",
                                    "nll", "nll_per_gene", "latent_nll"])
        if found is not None:
            data.training, data.training_latent = found
            data.training["sample_id"] = data.training["sample_id"].astype(str)
    condition = data.training_info.get("condition")
    if isinstance(condition, dict) and len(condition) == 1:
        (data.condition_column, data.normal_value), = condition.items()
    if paths.data is not None and (paths.data / SAMPLES).is_file():
        data.samples = pd.read_parquet(paths.data / SAMPLES)
        data.samples["sample_id"] = data.samples["sample_id"].astype(str)
    if paths.representations is not None:
        found = _read_latent_table(paths.representations / REPRESENTATIONS,
                                   ["sample_id", "component", "component_probability", "nll", "nll_per_gene",
                                    "latent_nll", "n_measured"])
        if found is not None:
            data.represented, data.represented_latent = found
            data.represented["sample_id"] = data.represented["sample_id"].astype(str)
    if paths.de is not None:
        data.summary = _read_tsv(paths.de / DE_SUMMARY)
        data.de_report = read_de_report(paths.de)
        if data.summary is not None:
            missing = {"sample_id", "n_up", "n_down"} - set(data.summary.columns)
            if missing:
                raise InputError(f"{paths.de / DE_SUMMARY}: columns {sorted(missing)} are missing")
            data.summary["sample_id"] = data.summary["sample_id"].astype(str)
            if "n_de" not in data.summary:
                data.summary["n_de"] = data.summary["n_up"] + data.summary["n_down"]
    if paths.explain is not None:
        data.explain = load_explain(paths.explain)
    for frame in (data.represented, data.summary, data.explain_summary):
        if frame is not None:
            frame["group"] = data.group_of(frame["sample_id"])
            tissue = data.tissue_of(frame["sample_id"])
            if tissue is not None:
                frame["tissue"] = tissue
    if paths.evaluation is not None:
        for name in EVALUATION_FILES:
            table = _read_tsv(paths.evaluation / name)
            if table is not None:
                data.evaluation[name] = table
    if paths.cohort_de is not None:
        data.cohort = load_cohort(paths.cohort_de)
    if paths.pathways is not None:
        data.pathways = load_pathways(paths.pathways)
        if data.pathways is not None:
            for frame in (data.pathways.summary, data.pathways.called):
                frame["group"] = data.group_of(frame["sample_id"].astype(str))
    return data
