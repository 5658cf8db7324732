"""`nofone de`: test every gene of every sample against the NB of its closest normal.

By default that NB allows, as a mixture, for the share of genes that healthy individuals show
off their predicted normal (the outlier null calibrated at training, `resolve_null`). The NB
means are decoded again from the stored latent points (one decoder pass per chunk), so
representations stay small. Missing model genes are not tested and not counted by BH.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nofone import __version__
from nofone.choices import NULLS
from nofone.errors import InputError
from nofone.io import tsv
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset, GeneAlignment
from nofone.io.samplesheet import validate_sample_id
from nofone.models.scaling import SCALINGS, scaling_factor
from nofone.progress import progress
from nofone.stats.model_error import equal_tail_midp_lognormal, min_pvalue_down_lognormal, sample_model_error
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import TESTS, log2_fold_change, min_pvalue_down
from nofone.stats.outlier_null import (
    OutlierNull,
    equal_tail_midp_outlier,
    min_callable_fold,
    min_pvalue_down_outlier,
)
from nofone.stats.parallel import by_gene_blocks
from nofone.steps.common import load_model, model_fingerprint, resolve_device
from nofone.steps.represent import REPRESENTATIONS, read_representations

DE_FILE = "de.parquet"
SUMMARY_FILE = "summary.tsv"
DE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("gene_id", pa.string()), ("gene_name", pa.string()),
    ("count", pa.int64()), ("normal_mean", pa.float64()), ("dispersion", pa.float64()),
    ("log2_fold_change", pa.float64()), ("p_value", pa.float64()), ("q_value", pa.float64()),
    ("can_call_down", pa.bool_()),
])


@dataclass
class DEOptions:
    """How `nofone de` tests (the options of `nofone de --help`; what a call means under each null:
    docs/null.md)."""

    test: str = "equal-tail-midp"
    scaling: str | None = None  # None: the scaling factors of the representations
    q_threshold: float = 0.01
    lfc_threshold: float = 1.0
    null: str = "auto"
    write_tsv: bool = True  # also one TSV per sample in samples/
    chunk_size: int = 64
    device: str = "auto"


def differential_expression(model_dir: Path, representations_dir: Path, input_dir: Path, outdir: Path,
                            options: DEOptions | None = None) -> pd.DataFrame:
    """Run the per-gene tests; returns the per-sample summary (also written to summary.tsv).

    `options.null` is what the test holds as normal (`resolve_null`): the model's outlier mixture
    calibrated on held-out normals at training (`nofone.stats.outlier_null`; the default where
    the model has one), the model's NB (the paper's test), or the NB widened by each sample's
    own estimated model error (`nofone.stats.model_error`).
    """
    options = options or DEOptions()
    test, scaling, null, device = options.test, options.scaling, options.null, options.device
    q_threshold, lfc_threshold = options.q_threshold, options.lfc_threshold
    write_tsv, chunk_size = options.write_tsv, options.chunk_size
    check_null(null, test)
    if scaling is not None and scaling not in SCALINGS:
        raise InputError(f"unknown scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
    device = resolve_device(device)
    model = load_model(model_dir, device)
    rep_path = Path(representations_dir) / REPRESENTATIONS
    if not rep_path.is_file():
        raise InputError(f"{representations_dir}: {REPRESENTATIONS} is missing (run `nofone represent` first)")
    meta, reps = read_representations(rep_path)
    if meta.get("model_fingerprint") != model_fingerprint(model_dir):
        raise InputError(
            f"{rep_path} was made with another model ({meta.get('model')}); run `nofone represent` "
            f"with {model_dir} again"
        )
    null_used, outlier = resolve_null(null, test, model.info, str(model_dir))
    model_error = null_used == "model-error"
    data = Dataset(input_dir)
    alignment = GeneAlignment(data.gene_ids, model.gene_ids, where=f"{input_dir}: ")
    row_of = {s: i for i, s in enumerate(reps["sample_id"])}
    known = set(data.sample_ids)
    unknown = [s for s in row_of if s not in known]
    if unknown:
        raise InputError(f"{input_dir}: samples {unknown[:5]} of the representations are not in the dataset")
    for sample in row_of:
        validate_sample_id(sample, f"{rep_path}: ")
    gene_ids = np.asarray(model.gene_ids, dtype=object)
    gene_names = model.genes["gene_name"].fillna("").to_numpy(dtype=object)
    names_from_data = data.genes.set_index("gene_id")["gene_name"].astype(object).to_dict()
    gene_names = np.array([n or (names_from_data.get(g) or "") for g, n in zip(gene_ids, gene_names)], dtype=object)
    summaries = []
    threads = torch.get_num_threads()  # what --threads set (torch's default otherwise)
    started = time.perf_counter()
    with staged_outdir(outdir) as stage, pq.ParquetWriter(stage / DE_FILE, DE_SCHEMA, compression="zstd") as writer, \
            progress("testing genes", len(row_of)) as advance:
        if write_tsv:
            (stage / "samples").mkdir()
        for chunk in data.iter_chunks(chunk_size, sample_ids=list(row_of)):
            chunk = alignment.align(chunk)
            rows = np.array([row_of[s] for s in chunk.sample_ids])
            latent = torch.as_tensor(reps["latent"][rows], dtype=torch.float32, device=device)
            with torch.no_grad():
                relative = model.relative_means(latent).double()
                x_t = torch.as_tensor(chunk.counts, device=device)
                m_t = None if chunk.measured is None else torch.as_tensor(chunk.measured, device=device)
                scale = (torch.as_tensor(reps["scale"][rows], device=device) if scaling is None
                         else scaling_factor(x_t, relative, m_t, scaling))
                mean = (relative * scale.unsqueeze(-1)).cpu().numpy()
                r = model.dispersion_at(latent).double().cpu().numpy()  # [n, G]: per gene, or per sample and gene
            x = chunk.counts
            measured = chunk.measured_mask()
            # always estimated and reported (how far the model's normals are from this sample);
            # the test is widened by it only when asked
            s2 = sample_model_error(x, mean, r, measured)
            p, down_ok = _test_genes(x, mean, r, s2 if model_error else None, outlier, test, q_threshold, threads)
            p = np.where(measured, p, np.nan)
            q = bh_adjust(p, axis=1)
            lfc = log2_fold_change(x, mean)
            # one long table and one Parquet row group per chunk (not per sample: a writer keeps
            # every row group's metadata until it closes)
            rows, cols = np.nonzero(measured)
            table = pd.DataFrame({
                "sample_id": np.asarray(chunk.sample_ids, dtype=object)[rows], "gene_id": gene_ids[cols],
                "gene_name": gene_names[cols], "count": x[rows, cols], "normal_mean": mean[rows, cols],
                "dispersion": r[rows, cols], "log2_fold_change": lfc[rows, cols], "p_value": p[rows, cols],
                "q_value": q[rows, cols], "can_call_down": down_ok[rows, cols],
            })
            writer.write_table(pa.Table.from_pandas(table, schema=DE_SCHEMA, preserve_index=False))
            bounds = np.searchsorted(rows, np.arange(len(chunk) + 1))
            for i, sample in enumerate(chunk.sample_ids):
                part = table.iloc[bounds[i]:bounds[i + 1]]
                if write_tsv:
                    tsv.write_tsv(part.drop(columns="sample_id"), stage / "samples" / f"{sample}.tsv")
                summaries.append(_summary(sample, part, q_threshold, lfc_threshold, reps, row_of[sample]) |
                                 {"model_error_sd": float(np.sqrt(s2[i]))})
            advance(len(chunk))
        summary = pd.DataFrame(summaries)
        summary.to_csv(stage / SUMMARY_FILE, sep="\t", index=False)
        write_json_atomic(stage / "de_report.json", {
            "nofone_version": __version__, "model": str(Path(model_dir).resolve()),
            "test": test, "scaling": scaling or "as in representations", "q_threshold": q_threshold,
            "null": null_used, "null_requested": null, "model_error": model_error,
            "outlier_null": outlier.to_dict() if outlier else None,
            "min_callable_fold": _callable_folds(outlier, len(gene_ids) - alignment.n_missing, q_threshold),
            "lfc_threshold": lfc_threshold, "n_samples": len(summary),
            "missing_model_genes": alignment.n_missing, "seconds": round(time.perf_counter() - started, 2),
        })
    return summary


def check_null(requested: str, test: str) -> None:
    """Refuse an unknown null, or one the test cannot use, before any work is done."""
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")
    if requested not in NULLS:
        raise InputError(f"unknown null {requested!r}; use one of {', '.join(NULLS)}")
    if requested in ("outlier", "model-error") and test != "equal-tail-midp":
        raise InputError(f"--null {requested} needs --test equal-tail-midp (the density rule is defined for "
                         "the NB only)")


def resolve_null(requested: str, test: str, model_info: dict, where: str) -> tuple[str, OutlierNull | None]:
    """The null the test uses, and the outlier mixture when that is it.

    "auto" is the outlier mixture when the model has one (trained by nofone with held-out
    normals) and the test is equal-tail, else the NB: the mixture is what keeps the calls in
    normals the model never saw near the nominal rate (see stats/outlier_null.py); imported
    models and the density rule fall back to the paper's NB test. Asking for "outlier" or
    "model-error" explicitly where they cannot be used is an error.
    """
    check_null(requested, test)
    if requested == "auto":
        stored = OutlierNull.stored_in(model_info) if test == "equal-tail-midp" else None
        return ("nb", None) if stored is None else ("outlier", stored)
    if requested == "outlier":
        return "outlier", OutlierNull.from_model_info(model_info, where)
    return requested, None


def _test_genes(x: np.ndarray, mean: np.ndarray, r: np.ndarray, s2: np.ndarray | None, null: OutlierNull | None,
                test: str, q_threshold: float, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """p-values and the can-call-down flags of a chunk [N, G], on `threads` threads. `s2` (the
    samples' model error, widening the test when any sample has one) or `null` (the calibrated
    outlier mixture) change the equal-tail test's null."""
    if s2 is not None and (s2 > 0).any():
        def pvalues(g: slice) -> np.ndarray:
            return equal_tail_midp_lognormal(x[:, g], mean[:, g], r[:, g], s2)

        def smallest_down(g: slice) -> np.ndarray:
            return min_pvalue_down_lognormal(mean[:, g], r[:, g], s2)
    elif null is not None:
        def pvalues(g: slice) -> np.ndarray:
            return equal_tail_midp_outlier(x[:, g], mean[:, g], r[:, g], null)

        def smallest_down(g: slice) -> np.ndarray:
            return min_pvalue_down_outlier(mean[:, g], r[:, g], null)
    else:
        def pvalues(g: slice) -> np.ndarray:
            return TESTS[test](x[:, g], mean[:, g], r[:, g])

        def smallest_down(g: slice) -> np.ndarray:
            return min_pvalue_down(mean[:, g], r[:, g], test)
    n_genes = x.shape[1]
    p = by_gene_blocks(pvalues, n_genes, threads)
    down_ok = by_gene_blocks(smallest_down, n_genes, threads) < q_threshold
    return p, down_ok


def _callable_folds(null: OutlierNull | None, n_genes: int, q: float) -> dict | None:
    """How large a change the outlier null lets a gene be called with, for the report."""
    if null is None or null.pi <= 0:
        return None
    return {"only_call": min_callable_fold(null, 1.0 / max(n_genes, 1), q),
            "five_percent_called": min_callable_fold(null, 0.05, q)}


def _summary(sample: str, table: pd.DataFrame, q: float, lfc: float, reps: dict, row: int) -> dict:
    sig = table["q_value"] < q
    up = sig & (table["log2_fold_change"] > lfc)
    down = sig & (table["log2_fold_change"] < -lfc)
    return {
        "sample_id": sample,
        "n_tested": len(table),
        "n_up": int(up.sum()),
        "n_down": int(down.sum()),
        "n_de": int((up | down).sum()),
        "n_cannot_call_down": int((~table["can_call_down"]).sum()),
        "component": int(reps["component"][row]),
        "nll_per_gene": float(reps["nll_per_gene"][row]),
        "scale": float(reps["scale"][row]),
    }
