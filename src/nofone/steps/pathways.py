"""`nofone pathways`: per sample and gene set, do the set's genes deviate together from the
sample's closest normal, beyond what healthy people's genes do together?

Reads `nofone de`'s de.parquet (counts, NB means and dispersions of each sample's closest
normal) and the local null stored with the model (its calibration normals' scores: normals the
model never trained on); the test is `nofone.stats.gene_set_test`. docs/pathways.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nofone import __version__
from nofone.enrichment.gene_sets import match_gene_sets, read_gmt
from nofone.enrichment.symbols import read_symbol_map, to_symbols
from nofone.errors import InputError
from nofone.io import tsv
from nofone.io.artifact import GENES
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
from nofone.io.samplesheet import validate_sample_id
from nofone.progress import progress
from nofone.stats.gene_set_test import MIN_GENES, Calibration, SetTestOptions, gene_set_tests, leading_genes
from nofone.stats.local_null import NULL_FILE, LocalNull, load_local_null, local_null_source, normal_scores
from nofone.steps.common import model_fingerprint
from nofone.steps.de import DE_FILE

PATHWAYS_FILE = "pathways.parquet"
SUMMARY_FILE = "summary.tsv"
REPORT_FILE = "pathways_report.json"
_DE_COLUMNS = ["sample_id", "gene_id", "count", "normal_mean", "dispersion", "log2_fold_change"]
PATHWAYS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("gene_set", pa.string()), ("n_genes", pa.int64()), ("n_listed", pa.int64()),
    ("direction", pa.string()), ("mean_score", pa.float64()), ("mean_log2_fold_change", pa.float64()),
    ("null_location", pa.float64()), ("null_scale", pa.float64()), ("standardized", pa.float64()),
    ("p_value", pa.float64()), ("q_value", pa.float64()), ("called", pa.bool_()), ("leading_genes", pa.string()),
])


@dataclass
class PathwayOptions:
    """What `nofone pathways --help` sets."""

    q_threshold: float = 0.01
    min_genes: int = MIN_GENES
    test: SetTestOptions = field(default_factory=SetTestOptions)
    write_tsv: bool = True
    symbol_maps: list[Path] = field(default_factory=list)  # model genes -> the GMT's symbols, in sequence


def pathways(de_dir: Path, gene_sets_path: Path, model_dir: Path, outdir: Path,
             options: PathwayOptions | None = None) -> pd.DataFrame:
    """Test every gene set in every sample of a de output; returns the per-sample summary."""
    options = options or PathwayOptions()
    check_outdir(outdir)
    if not 0 < options.q_threshold < 1:
        raise InputError(f"--q-threshold must lie between 0 and 1, not {options.q_threshold}")
    de_path = Path(de_dir) / DE_FILE
    if not de_path.is_file():
        raise InputError(f"{de_dir}: {DE_FILE} is missing (run `nofone de` first)")
    null, gene_ids, gene_names = _model_null(Path(model_dir))
    _check_same_model(Path(de_dir), Path(model_dir), gene_ids)
    listed = read_gmt(gene_sets_path)
    symbols = gene_names
    if options.symbol_maps:
        maps = [read_symbol_map(p) for p in options.symbol_maps]
        symbols = np.array([s or "" for s in to_symbols(list(gene_ids), list(gene_names), maps)], dtype=object)
    matched = match_gene_sets(listed, gene_ids, symbols, 0)
    sets = {name: index for name, index in matched.items() if index.size >= options.min_genes}
    skipped = {name: int(index.size) for name, index in matched.items() if index.size < options.min_genes}
    if not sets:
        raise InputError(f"{gene_sets_path}: no gene set has {options.min_genes} or more of the model's "
                         f"{len(gene_ids)} genes (matched by gene id or name)")
    names, index = list(sets), list(sets.values())
    n_listed = np.array([len(listed[name]) for name in names])
    started = time.perf_counter()
    calibration = Calibration.of(null, options.test)
    summaries = []
    with staged_outdir(outdir) as stage, pq.ParquetWriter(stage / PATHWAYS_FILE, PATHWAYS_SCHEMA,
                                                          compression="zstd") as writer:
        if options.write_tsv:
            (stage / "samples").mkdir()
        de = pq.ParquetFile(de_path)
        with progress("testing gene sets", de.metadata.num_rows) as advance:
            for samples, counts in _read_samples(de, de_path, gene_ids):
                table = _test_chunk(samples, counts, null, calibration, names, index, n_listed, gene_names, options)
                writer.write_table(pa.Table.from_pandas(table, schema=PATHWAYS_SCHEMA, preserve_index=False))
                for sample, part in table.groupby("sample_id", sort=False):
                    if options.write_tsv:
                        tsv.write_tsv(part.drop(columns="sample_id").sort_values("p_value", kind="stable"),
                                      stage / "samples" / f"{sample}.tsv")
                    summaries.append(_summary(str(sample), part))
                advance(int(counts["measured"].sum()))
        if not summaries:
            raise InputError(f"{de_path}: no samples")
        summary = pd.DataFrame(summaries)
        summary.to_csv(stage / SUMMARY_FILE, sep="\t", index=False)
        write_json_atomic(stage / REPORT_FILE, {
            "nofone_version": __version__, "model": str(Path(model_dir).resolve()),
            "model_fingerprint": model_fingerprint(model_dir), "de": str(Path(de_dir).resolve()),
            "gene_sets": str(Path(gene_sets_path).resolve()),
            "symbol_maps": [str(Path(p).resolve()) for p in options.symbol_maps], "n_sets_listed": len(listed),
            "n_sets_tested": len(names),
            "min_genes": options.min_genes, "skipped_sets": skipped, "q_threshold": options.q_threshold,
            "test": {"statistic": "mean normal score"} | asdict(options.test),
            "null": {"source": local_null_source(model_dir), "n_calibration_normals": null.n_samples},
            "n_samples": len(summary), "seconds": round(time.perf_counter() - started, 2),
        })
    return summary


def _model_null(model_dir: Path) -> tuple[LocalNull, np.ndarray, np.ndarray]:
    """The model's local null and genes; a model without calibration scores is an error."""
    if not (model_dir / GENES).is_file():
        raise InputError(f"model {model_dir}: {GENES} is missing (expected a folder from `nofone train`)")
    null = load_local_null(model_dir)
    if null is None or null.scores is None:
        raise InputError(f"model {model_dir} has no local null with calibration scores ({NULL_FILE}); the pathway "
                         "test needs normals the model never trained on: train it with this version of `nofone train` "
                         "(in the pipeline, --skip_pathways runs without the pathway test)")
    genes = pd.read_csv(model_dir / GENES, sep="\t", dtype=str, keep_default_na=False)
    if null.scores.shape[1] != len(genes):
        raise InputError(f"model {model_dir}: {NULL_FILE} has {null.scores.shape[1]} genes, {GENES} {len(genes)}")
    names = genes["gene_name"].to_numpy(dtype=object) if "gene_name" in genes else np.full(len(genes), "", object)
    ids = genes["gene_id"].to_numpy(dtype=object)
    return null, ids, np.where(names == "", ids, names)


def _check_same_model(de_dir: Path, model_dir: Path, gene_ids: np.ndarray) -> None:
    """Refuse a de output made with another model: by the fingerprints its reports recorded (a
    gathered cohort's in gather_report.json), and by its genes."""
    recorded = []
    if (de_dir / "de_report.json").is_file():
        recorded.append(json.loads((de_dir / "de_report.json").read_text()).get("model_fingerprint"))
    if (de_dir / "gather_report.json").is_file():
        reports = json.loads((de_dir / "gather_report.json").read_text()).get("reports", {})
        recorded += [r.get("model_fingerprint") for r in reports.get("de_report.json", [])]
    expected = model_fingerprint(model_dir)
    other = [f for f in recorded if f is not None and f != expected]
    if other:
        raise InputError(f"{de_dir / DE_FILE} was made with another model than {model_dir}; run `nofone de` "
                         f"with {model_dir} again")
    de_genes = pq.read_table(de_dir / DE_FILE, columns=["gene_id"]).column("gene_id").unique().to_pylist()
    unknown = sorted(set(de_genes) - set(gene_ids))
    if unknown:
        raise InputError(f"{de_dir / DE_FILE}: genes {unknown[:5]} are not in model {model_dir} (a de output of "
                         "another model?)")


def _read_samples(de: pq.ParquetFile, path: Path, gene_ids: np.ndarray):
    """Yield (sample ids, dense arrays [n, G] of counts, means, dispersions, fold changes and
    which genes were tested) per row group (de writes one per chunk of samples, gather keeps
    them); a sample split over row groups is an error."""
    column = {g: i for i, g in enumerate(gene_ids)}
    seen: set[str] = set()
    for group in range(de.num_row_groups):
        try:
            part = de.read_row_group(group, columns=_DE_COLUMNS).to_pandas()
        except (pa.ArrowInvalid, KeyError) as exc:
            raise InputError(f"{path}: not a de.parquet of `nofone de` ({exc})") from None
        samples = list(dict.fromkeys(part["sample_id"]))
        for sample in samples:
            validate_sample_id(sample, f"{path}: ")
            if sample in seen:
                raise InputError(f"{path}: the rows of sample {sample!r} are not together")
        seen.update(samples)
        if not samples:
            continue
        rows = pd.Index(samples).get_indexer(part["sample_id"])
        cols = part["gene_id"].map(column).to_numpy()
        shape = (len(samples), len(gene_ids))
        out = {"measured": np.zeros(shape, dtype=bool)}
        out["measured"][rows, cols] = True
        for name, fill in (("count", 0.0), ("normal_mean", 1.0), ("dispersion", 1.0), ("log2_fold_change", 0.0)):
            values = np.full(shape, fill)
            values[rows, cols] = part[name].to_numpy(dtype=np.float64, na_value=np.nan)
            out[name] = values
        usable = (np.isfinite(out["normal_mean"]) & (out["normal_mean"] > 0) & np.isfinite(out["dispersion"])
                  & (out["dispersion"] > 0) & np.isfinite(out["count"]))
        out["measured"] &= usable
        yield samples, out


def _test_chunk(samples: list[str], counts: dict[str, np.ndarray], null: LocalNull, calibration: Calibration,
                names: list[str], index: list[np.ndarray], n_listed: np.ndarray, gene_names: np.ndarray,
                options: PathwayOptions) -> pd.DataFrame:
    """The long table (one row per sample and set) of one group of samples."""
    measured = counts["measured"]
    z = np.where(measured, normal_scores(counts["count"], counts["normal_mean"], counts["dispersion"]), 0.0)
    res = gene_set_tests(z, counts["normal_mean"], null, index, measured, options.test, calibration)
    lfc = np.where(measured, counts["log2_fold_change"], 0.0)
    n_sets = len(names)
    n_genes = np.stack([measured[:, genes].sum(1) for genes in index], axis=1)  # [n, S]
    mean_lfc = np.stack([lfc[:, genes].sum(1) for genes in index], axis=1) / np.maximum(n_genes, 1)
    up = res.standardized >= 0
    leading = [",".join(leading_genes(res.adjusted[i], genes[measured[i, genes]], 1.0 if up[i, s] else -1.0,
                                      gene_names))
               for i in range(len(samples)) for s, genes in enumerate(index)]
    return pd.DataFrame({
        "sample_id": np.repeat(np.asarray(samples, dtype=object), n_sets),
        "gene_set": np.tile(np.asarray(names, dtype=object), len(samples)),
        "n_genes": n_genes.ravel(), "n_listed": np.tile(n_listed, len(samples)),
        "direction": np.where(up, "up", "down").ravel(), "mean_score": res.statistic.ravel(),
        "mean_log2_fold_change": mean_lfc.ravel(), "null_location": res.location.ravel(),
        "null_scale": res.scale.ravel(), "standardized": res.standardized.ravel(), "p_value": res.p_value.ravel(),
        "q_value": res.q_value.ravel(), "called": (res.q_value < options.q_threshold).ravel(),
        "leading_genes": leading,
    })


def _summary(sample: str, part: pd.DataFrame) -> dict:
    called = part[part["called"]].sort_values("p_value", kind="stable")
    return {"sample_id": sample, "n_sets_tested": len(part), "n_called": len(called),
            "n_up": int((called["direction"] == "up").sum()), "n_down": int((called["direction"] == "down").sum()),
            "top_sets": ",".join(called["gene_set"].head(5))}
