"""`nofone evaluate`: the paper's comparisons on the user's own data, model against DESeq2.

Over the output folder of `nofone run` (data, model, representations, de):

- negative control (Fig. 4B): held-out normals tested against the model, and with DESeq2 against
  all same-tissue training normals and against `n_random` random ones (`repeats` times): DE
  genes per sample at several q thresholds, and the up:down balance;
- spike-ins: planted changes (binomial thinning) in held-out normals, found by each method:
  precision, recall and observed FDR against the nominal q;
- enrichment of user gene sets among each case's calls (the paper's enrichment score);
- tissue x component association, assignment of new samples to their tissue, and the AUROC of
  the out-of-distribution scores (count NLL, latent NLL) against held-out normals.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nofone import __version__
from nofone.errors import InputError
from nofone.evaluate.frontier import FRONTIER_FILE
from nofone.evaluate.metrics import (
    assignment_accuracy,
    association_matrix,
    auroc,
    component_tissue,
    count_calls,
    enrichment_scores,
    read_gene_sets,
    summarise_calls,
    thin_spike_ins,
)
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, Dataset, write_tables
from nofone.models.registry import model_facts
from nofone.progress import progress
from nofone.report.inputs import read_de_report
from nofone.steps.frontier import TUMOUR_CONTROL_FILE, run_frontier, tumour_control

log = logging.getLogger(__name__)


@dataclass
class EvaluateOptions:
    q_thresholds: tuple[float, ...] = (0.01, 0.05, 0.1)
    lfc_threshold: float = 1.0
    normal_value: str = "normal"
    negative_conditions: tuple[str, ...] = ()
    max_negative: int = 20
    max_cases: int = 20  # cases whose calls are scored for enrichment (DESeq2 runs once per case)
    deseq2: bool = True
    n_random_controls: int = 5
    repeats: int = 20
    spike_ins: bool = True
    spike_fraction: float = 0.05
    spike_lfcs: tuple[float, ...] = (1.0, 2.0, 3.0)  # 2-, 4- and 8-fold
    spike_min_mean: float = 10.0
    gene_sets: tuple[str, ...] = ()
    compare_models: dict[str, str] = field(default_factory=dict)  # name -> model folder, beside the run's
    seed: int = 0
    device: str = "auto"
    null: str = "auto"  # set from the run's de_report.json: spike-ins are tested as the run's de was
    extra: dict = field(default_factory=dict)


# What each input folder must hold, and the option that names it (when not taken from --run)
_PARTS = {
    "data": ("--data", COUNTS_FILE, "a dataset folder from `nofone ingest` or `nofone filter`"),
    "model": ("--model", "training_representations.parquet", "a model folder from `nofone train`"),
    "representations": ("--representations", "representations.parquet",
                        "a folder from `nofone represent` or `nofone gather`"),
    "de": ("--de", "de.parquet", "a folder from `nofone de` or `nofone gather`"),
}


@dataclass
class RunFolder:
    """Where the inputs are: the output folder of `nofone run` (root), each part of which an
    explicit folder may replace (the Nextflow layout: filtered/, model/, cohort/ for both
    representations and de); root is None when every part is given."""

    root: Path | None
    data: Path
    model: Path
    representations: Path
    de: Path

    @classmethod
    def find(cls, root: Path | None = None, *, data: Path | None = None, model: Path | None = None,
             representations: Path | None = None, de: Path | None = None) -> RunFolder:
        explicit = {"data": data, "model": model, "representations": representations, "de": de}
        for part, path in explicit.items():
            if path is not None:
                explicit[part] = _explicit_part(part, Path(path))
        if root is None:
            missing = [_PARTS[part][0] for part, path in explicit.items() if path is None]
            if missing:
                raise InputError(f"give --run (the output folder of `nofone run`) or every one of --data, --model, "
                                 f"--representations and --de (missing: {', '.join(missing)})")
            return cls(None, **explicit)
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"run folder {root} does not exist")
        defaults = {"data": root / "filtered" if (root / "filtered" / COUNTS_FILE).is_file() else root / "data",
                    "model": root / "model", "representations": root / "representations", "de": root / "de"}
        folder = cls(root, **{part: path or defaults[part] for part, path in explicit.items()})
        for part in ("data", "model", "representations", "de"):
            if explicit[part] is None and not getattr(folder, part).is_dir():
                raise InputError(f"run folder {root} has no {getattr(folder, part).name}/ (made by `nofone run`?)")
        return folder

    def as_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in self.__dict__.items()}


def _explicit_part(part: str, path: Path) -> Path:
    """A folder named by its option: it must exist and hold the file evaluate reads there."""
    option, needed, what = _PARTS[part]
    if not path.is_dir():
        raise InputError(f"{option} {path} does not exist (expected {what})")
    if not (path / needed).is_file():
        raise InputError(f"{option} {path} has no {needed} (expected {what})")
    return path


def evaluate(run_dir: Path | None, outdir: Path, options: EvaluateOptions, *, data: Path | None = None,
             model: Path | None = None, representations: Path | None = None, de: Path | None = None) -> dict:
    """Run every evaluation the inputs allow and write the tables; returns the summary.

    The inputs: the output folder of `nofone run` (`run_dir`), whose parts `data`, `model`,
    `representations` and `de` replace; without `run_dir`, all four.
    """
    run = RunFolder.find(run_dir, data=data, model=model, representations=representations, de=de)
    started = time.perf_counter()
    data = Dataset(run.data)
    samples = data.samples.set_index("sample_id")
    training = pq.read_table(run.model / "training_representations.parquet").to_pandas()
    train_ids = training.loc[training["split"] == "train", "sample_id"].tolist()
    absent = sorted(set(train_ids) - set(data.sample_ids))
    if absent and options.deseq2:
        raise InputError(f"{len(absent)} of the samples the model {run.model} trained on are not in {run.data} "
                         f"(e.g. {absent[0]}): DESeq2 needs them as controls; give the data the model was "
                         "trained on, or --no-deseq2")
    de = pq.read_table(run.de / "de.parquet").to_pandas()
    options = replace(options, null=null_of_de(run.de))
    tested = list(dict.fromkeys(de["sample_id"]))
    condition = samples["condition"].astype(str) if "condition" in samples else pd.Series("", index=samples.index)
    negatives_all = [s for s in tested if condition.get(s) in {options.normal_value, *options.negative_conditions}]
    # `nofone run --holdout-fraction`: normals that filtering and training never saw (a run folder only)
    never_trained = run.root / "heldout_normals.json" if run.root is not None else None
    if never_trained is not None and never_trained.is_file():
        held = set(json.loads(never_trained.read_text()))
        negatives_all = [s for s in negatives_all if s in held or condition.get(s) in set(options.negative_conditions)]
    rng = np.random.default_rng(options.seed)
    negatives = sorted(rng.choice(negatives_all, size=min(options.max_negative, len(negatives_all)),
                                  replace=False).tolist()) if negatives_all else []
    cases = [s for s in tested if s not in set(negatives_all)]
    tissue = samples["tissue"].astype(str) if "tissue" in samples else None
    summary: dict = {"nofone_version": __version__, "run": str(run.root) if run.root is not None else None,
                     "inputs": run.as_dict(), "options": asdict(options),
                     "n_negative_controls": len(negatives), "n_cases": len(cases)}
    models = {_model_name(run.model): run.model} | {name: Path(path) for name, path in options.compare_models.items()}
    with staged_outdir(outdir) as stage:
        if negatives:
            table = _negative_control(run, data, de, negatives, train_ids, tissue, options, rng, models, stage)
            table.to_csv(stage / "negative_control.tsv", sep="\t", index=False)
            short = summarise_calls(table, ["method", "controls", "q_threshold"])
            short.to_csv(stage / "negative_control_summary.tsv", sep="\t", index=False)
            summary["negative_control"] = json.loads(short.to_json(orient="records"))
            spiked_de = truth = None
            if options.spike_ins:
                spikes, spiked_de, truth = _spike_ins(run, data, negatives, train_ids, tissue, options, rng, stage,
                                                      models)
                spikes.to_csv(stage / "spike_ins.tsv", sep="\t", index=False)
                short = _summarise_spikes(spikes)
                short.to_csv(stage / "spike_ins_summary.tsv", sep="\t", index=False)
                summary["spike_ins"] = json.loads(short.to_json(orient="records"))
            curve = run_frontier(run.model, de[de["sample_id"].isin(set(negatives))], spiked_de, truth, options)
            curve.to_csv(stage / FRONTIER_FILE, sep="\t", index=False)
            summary["frontier"] = json.loads(curve.to_json(orient="records"))
        else:
            log.warning("no held-out normal among the tested samples: no negative control or spike-ins")
        control = tumour_control(run.model, data, de, cases, train_ids, options, rng)
        if control is not None:
            control.to_csv(stage / TUMOUR_CONTROL_FILE, sep="\t", index=False)
            summary["tumour_control"] = json.loads(control.to_json(orient="records"))
        if options.gene_sets and cases:
            sets = read_gene_sets(options.gene_sets)
            if len(cases) > options.max_cases:
                cases = sorted(rng.choice(cases, size=options.max_cases, replace=False).tolist())
            scores = [enrichment_scores(de[de["sample_id"].isin(cases)], sets, options.q_thresholds[0],
                                        options.lfc_threshold).assign(method=next(iter(models)))]
            if options.deseq2:
                deseq = _deseq2_calls(data, cases, train_ids, tissue, options, rng, n_random=None, repeats=1)
                scores.append(enrichment_scores(deseq, sets, options.q_thresholds[0], options.lfc_threshold)
                              .assign(method="deseq2"))
            table = pd.concat(scores, ignore_index=True)
            table.to_csv(stage / "enrichment.tsv", sep="\t", index=False)
            short = table.groupby(["method", "gene_set"]).agg(
                n_samples=("sample_id", "size"), mean_enrichment_score=("enrichment_score", "mean"),
                mean_n_de=("n_de", "mean")).reset_index()
            short.to_csv(stage / "enrichment_summary.tsv", sep="\t", index=False)
            summary["enrichment"] = json.loads(short.to_json(orient="records"))
        summary |= _latent_evaluation(run, training, tested, condition, tissue, set(negatives_all), stage)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_json_atomic(stage / "evaluation.json", summary)
    return summary


# -- negative control ----------------------------------------------------------------------------


def _model_name(folder: Path) -> str:
    """A model's name in the tables: its type (dgd, nbvae)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("model_type", "model")
    except (OSError, json.JSONDecodeError):
        return "model"


def _n_components(folder: Path) -> int | None:
    """The model's mixture components (None: it has none), from its config.json."""
    try:
        return model_facts(json.loads((Path(folder) / "config.json").read_text()))["n_components"]
    except (OSError, json.JSONDecodeError):
        return None


def null_of_de(de_dir: Path) -> str:
    """The null a `nofone de` folder was tested with (as asked: "auto" resolves per model), so
    that spike-ins and compared models are tested the same way; a gathered folder (Nextflow) keeps
    its chunks' reports in gather_report.json; older reports had flags."""
    try:
        report = read_de_report(Path(de_dir))
    except InputError:
        report = None
    if report is None:
        return "auto"
    if "null_requested" in report:
        return report["null_requested"]
    return "model-error" if report.get("model_error") else "outlier" if report.get("outlier_null") else "nb"


def _model_calls(model_dir: Path, data_dir: Path, sample_ids: list[str], work: Path,
                 options: EvaluateOptions) -> pd.DataFrame:
    """Represent and test `sample_ids` with a model: its de table."""
    from nofone.inference.represent import SearchConfig
    from nofone.steps.de import DEOptions, differential_expression
    from nofone.steps.represent import represent

    represent(model_dir, data_dir, work / "reps", SearchConfig(), sample_ids, device=options.device)
    differential_expression(model_dir, work / "reps", data_dir, work / "de",
                            DEOptions(null=options.null, write_tsv=False, device=options.device))
    table = pq.read_table(work / "de" / "de.parquet").to_pandas()
    shutil.rmtree(work, ignore_errors=True)
    return table


def _negative_control(run: RunFolder, data: Dataset, de: pd.DataFrame, negatives: list[str], train_ids: list[str],
                      tissue: pd.Series | None, options: EvaluateOptions, rng: np.random.Generator,
                      models: dict[str, Path], stage: Path) -> pd.DataFrame:
    names = list(models)
    model = count_calls(de[de["sample_id"].isin(negatives)], options.q_thresholds, options.lfc_threshold)
    tables = [model.assign(method=names[0], controls="model", repeat=0)]
    for name in names[1:]:
        other = _model_calls(models[name], run.data, negatives, stage / f".work-{name}", options)
        tables.append(count_calls(other, options.q_thresholds, options.lfc_threshold)
                      .assign(method=name, controls="model", repeat=0))
    if options.deseq2:
        all_controls = _deseq2_calls(data, negatives, train_ids, tissue, options, rng, n_random=None, repeats=1)
        tables.append(count_calls(all_controls, options.q_thresholds, options.lfc_threshold, ["sample_id", "repeat"])
                      .assign(method="deseq2", controls="all same-tissue"))
        if options.n_random_controls and options.repeats:
            random = _deseq2_calls(data, negatives, train_ids, tissue, options, rng,
                                   n_random=options.n_random_controls, repeats=options.repeats)
            tables.append(count_calls(random, options.q_thresholds, options.lfc_threshold, ["sample_id", "repeat"])
                          .assign(method="deseq2", controls=f"{options.n_random_controls} random"))
    return pd.concat(tables, ignore_index=True)


def _controls_for(sample: str, train_ids: list[str], tissue: pd.Series | None) -> list[str]:
    """Training normals of the sample's tissue (at least 2), else all training normals."""
    if tissue is not None and sample in tissue.index:
        same = [s for s in train_ids if tissue.get(s) == tissue[sample]]
        if len(same) >= 2:
            return same
    return list(train_ids)


def _deseq2_calls(data: Dataset, targets: list[str], train_ids: list[str], tissue: pd.Series | None,
                  options: EvaluateOptions, rng: np.random.Generator, n_random: int | None, repeats: int,
                  counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """DESeq2 N-of-one for each target sample against its controls: a de-like long table."""
    from nofone.baselines.deseq2 import n_of_one

    needed = set(targets) | set(train_ids)
    if counts is None:
        chunk = data.read([s for s in data.sample_ids if s in needed])
        counts = pd.DataFrame(chunk.counts, index=chunk.sample_ids, columns=data.gene_ids)
    names = data.genes.set_index("gene_id")["gene_name"]
    rows = []
    label = "all controls" if n_random is None else f"{n_random} random controls x {repeats}"
    with progress(f"DESeq2 ({label})", len(targets) * repeats) as advance:
        for sample in targets:
            pool = _controls_for(sample, train_ids, tissue)
            for repeat in range(repeats):
                controls = pool if n_random is None else sorted(rng.choice(pool, size=min(n_random, len(pool)),
                                                                           replace=False).tolist())
                result = n_of_one(counts.loc[sample], counts.loc[controls])
                rows.append(pd.DataFrame({
                    "sample_id": sample, "repeat": repeat, "gene_id": result.index,
                    "gene_name": names.reindex(result.index).to_numpy(),
                    "log2_fold_change": result["log2FoldChange"].to_numpy(),
                    "q_value": result["padj"].to_numpy(), "n_controls": len(controls),
                }))
                advance()
    return pd.concat(rows, ignore_index=True)


# -- spike-ins -----------------------------------------------------------------------------------


def _spike_ins(run: RunFolder, data: Dataset, negatives: list[str], train_ids: list[str], tissue: pd.Series | None,
               options: EvaluateOptions, rng: np.random.Generator, stage: Path,
               models: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Plant changes in held-out normals, let each method find them, score the calls; also the
    run's model's de rows of the spiked samples and the planted changes (for the frontier)."""
    chunk = data.read(negatives)
    de = pq.read_table(run.de / "de.parquet", columns=["sample_id", "gene_id", "normal_mean"]).to_pandas()
    means = de.pivot(index="sample_id", columns="gene_id", values="normal_mean").reindex(
        index=negatives, columns=data.gene_ids)
    spiked_ids, spiked_counts, truth = [], [], []
    for lfc in options.spike_lfcs:
        for i, sample in enumerate(negatives):
            eligible = np.flatnonzero(means.loc[sample].to_numpy() >= options.spike_min_mean)
            n = max(1, round(options.spike_fraction * len(eligible)))
            genes = rng.choice(eligible, size=min(n, len(eligible)), replace=False)
            effect = np.zeros(data.n_genes)
            effect[genes] = lfc * rng.choice([-1.0, 1.0], size=len(genes))
            new_id = f"{sample}.spike{lfc:g}"
            spiked_ids.append(new_id)
            spiked_counts.append(thin_spike_ins(chunk.counts[i], effect, rng))
            truth.append(pd.DataFrame({"sample_id": new_id, "source": sample, "spike_lfc": lfc,
                                       "gene_id": np.asarray(data.gene_ids)[genes], "true_lfc": effect[genes]}))
    work = stage / ".spike-work"
    (work / "data").mkdir(parents=True)
    with CountWriter(work / "data" / COUNTS_FILE, data.n_genes) as writer:
        writer.write(CountChunk(spiked_ids, np.stack(spiked_counts)))
    write_tables(work / "data", data.genes, pd.DataFrame({"sample_id": spiked_ids, "condition": "spiked"}))
    truth = pd.concat(truth, ignore_index=True)
    found = {name: _model_calls(folder, work / "data", spiked_ids, work / f"model-{name}", options)
             for name, folder in models.items()}
    if options.deseq2:
        train_chunk = data.read(train_ids)
        counts = pd.DataFrame(np.vstack([train_chunk.counts, np.stack(spiked_counts)]),
                              index=train_chunk.sample_ids + spiked_ids, columns=data.gene_ids)
        source_tissue = None
        if tissue is not None:
            source = dict(zip(truth["sample_id"], truth["source"]))
            source_tissue = pd.concat([tissue, pd.Series({s: tissue.get(source[s]) for s in spiked_ids})])
        found["deseq2"] = _deseq2_calls(data, spiked_ids, train_ids, source_tissue, options, rng, n_random=None,
                                        repeats=1, counts=counts)
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    planted = set(zip(truth["sample_id"], truth["gene_id"]))
    for method, table in found.items():
        for q in options.q_thresholds:
            called = table[(table["q_value"] < q)]
            for spiked in spiked_ids:
                lfc = float(spiked.rsplit("spike", 1)[1])
                calls = set(zip(called.loc[called["sample_id"] == spiked, "sample_id"],
                                called.loc[called["sample_id"] == spiked, "gene_id"]))
                truth_here = {k for k in planted if k[0] == spiked}
                tp = len(calls & truth_here)
                rows.append({"method": method, "sample_id": spiked, "spike_fraction": options.spike_fraction,
                             "spike_lfc": lfc, "nominal_q": q, "tp": tp, "fp": len(calls) - tp,
                             "fn": len(truth_here) - tp})
    return pd.DataFrame(rows), found[next(iter(models))], truth


def _summarise_spikes(table: pd.DataFrame) -> pd.DataFrame:
    keys = ["method", "spike_fraction", "spike_lfc", "nominal_q"]
    grouped = table.groupby(keys)[["tp", "fp", "fn"]].sum().reset_index()
    called = grouped["tp"] + grouped["fp"]
    grouped["precision"] = (grouped["tp"] / called.replace(0, np.nan)).round(4)
    grouped["recall"] = (grouped["tp"] / (grouped["tp"] + grouped["fn"])).round(4)
    grouped["observed_fdr"] = (grouped["fp"] / called.replace(0, np.nan)).round(4)
    return grouped


# -- latent space --------------------------------------------------------------------------------


def _latent_evaluation(run: RunFolder, training: pd.DataFrame, tested: list[str], condition: pd.Series,
                       tissue: pd.Series | None, negatives: set[str], stage: Path) -> dict:
    out: dict = {}
    reps = pq.read_table(run.representations / "representations.parquet",
                         columns=["sample_id", "component", "nll_per_gene", "latent_nll"]).to_pandas()
    reps = reps[reps["sample_id"].isin(tested)]
    group = reps["sample_id"].map(lambda s: "held-out normal" if s in negatives else condition.get(s, "tested"))
    train = training[training["split"] == "train"]
    single_component = training["component"].nunique() <= 1 and (_n_components(run.model) or 1) <= 1
    if tissue is not None and train["tissue"].notna().all() and not single_component:
        matrix = association_matrix(train["tissue"].astype(str), train["component"])
        matrix.to_csv(stage / "association.tsv", sep="\t")
        majority = component_tissue(train["tissue"].astype(str), train["component"])
        known = reps["sample_id"].isin(tissue.index)
        if known.any():
            accuracy = assignment_accuracy(group[known], tissue.loc[reps.loc[known, "sample_id"]].to_numpy(),
                                           reps.loc[known, "component"], majority)
            accuracy.to_csv(stage / "assignment.tsv", sep="\t", index=False)
            out["assignment"] = json.loads(accuracy[accuracy["tissue"] == "all"].to_json(orient="records"))
    scores = pd.concat([
        train[["sample_id", "nll_per_gene", "latent_nll"]].assign(group="training"),
        reps[["sample_id", "nll_per_gene", "latent_nll"]].assign(group=group.to_numpy()),
    ], ignore_index=True)
    scores.to_csv(stage / "nll.tsv", sep="\t", index=False)
    reference = scores[scores["group"] == "held-out normal"]
    rows = []
    if not reference.empty:
        for name, table in scores.groupby("group"):
            if name == "held-out normal":
                continue
            for score in ("nll_per_gene", "latent_nll"):
                rows.append({"score": score, "group": name, "reference": "held-out normal",
                             "auroc": auroc(table[score], reference[score])})
    aurocs = pd.DataFrame(rows, columns=["score", "group", "reference", "auroc"])
    aurocs.to_csv(stage / "nll_auroc.tsv", sep="\t", index=False)
    out["nll_auroc"] = json.loads(aurocs.to_json(orient="records"))
    return out
