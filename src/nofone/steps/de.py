"""`nofone de`: test every gene of every sample against the NB of its closest normal.

By default that NB allows, as a mixture, for the share of genes that healthy individuals show
off their predicted normal (the outlier or local null calibrated at training:
`nofone.stats.nulls`). Two tiers per gene: `p_value`/`q_value` under that null ("abnormal":
beyond healthy variation) and `p_value_nb`/`q_value_nb` under the model's NB alone
("candidate": the NB's call only); `call` says which. The NB means are decoded again from the
stored latent points (one decoder pass per chunk), so representations stay small. Missing model
genes are not tested and not counted by BH.
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
from nofone.errors import InputError, cuda_memory_guard
from nofone.io import tsv
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset, GeneAlignment
from nofone.io.samplesheet import validate_sample_id
from nofone.models.scaling import SCALINGS, scaling_factor
from nofone.progress import progress
from nofone.stats.model_error import sample_model_error
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import log2_fold_change
from nofone.stats.nulls import ChunkTest, Null, check_null, resolve_null
from nofone.stats.outlier_null import OutlierNull, min_callable_fold
from nofone.stats.parallel import by_gene_blocks
from nofone.steps.common import load_model, model_fingerprint, resolve_device
from nofone.steps.represent import REPRESENTATIONS, read_representations

DE_FILE = "de.parquet"
SUMMARY_FILE = "summary.tsv"
DE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("gene_id", pa.string()), ("gene_name", pa.string()),
    ("count", pa.int64()), ("normal_mean", pa.float64()), ("dispersion", pa.float64()),
    ("log2_fold_change", pa.float64()), ("p_value", pa.float64()), ("q_value", pa.float64()),
    ("can_call_down", pa.bool_()), ("p_value_nb", pa.float64()), ("q_value_nb", pa.float64()),
    ("call", pa.string()),
])
#: `call`: beyond healthy variation (the null's q and the fold change pass), the NB's call only, or "".
ABNORMAL, CANDIDATE = "abnormal", "candidate"


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


@cuda_memory_guard("retry with a smaller --chunk-size or on a larger GPU")
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
    check_outdir(outdir)
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
    prepared = resolve_null(null, test, model.info, model_dir)
    model_error = prepared.name == "model-error"
    nb_null = Null("nb", test)
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
                relative, r = model.decode(latent)  # [n, G] each: r per gene, or per sample and gene
                relative = relative.double()
                x_t = torch.as_tensor(chunk.counts, device=device)
                m_t = None if chunk.measured is None else torch.as_tensor(chunk.measured, device=device)
                scale = (torch.as_tensor(reps["scale"][rows], device=device) if scaling is None
                         else scaling_factor(x_t, relative, m_t, scaling))
                mean = (relative * scale.unsqueeze(-1)).cpu().numpy()
                r = r.double().cpu().numpy()
            x = chunk.counts
            measured = chunk.measured_mask()
            # always estimated and reported (how far the model's normals are from this sample);
            # the test is widened by it only when asked
            s2 = sample_model_error(x, mean, r, measured)
            p, down_ok = _run_tests(prepared.for_chunk(x, mean, r, s2), threads, q_threshold)
            p = np.where(measured, p, np.nan)
            q = bh_adjust(p, axis=1)
            if prepared.name == "nb":
                p_nb, q_nb = p, q
            else:
                p_nb = np.where(measured, _run_tests(nb_null.for_chunk(x, mean, r), threads)[0], np.nan)
                q_nb = bh_adjust(p_nb, axis=1)
            lfc = log2_fold_change(x, mean)
            call = tiers(q, q_nb, lfc, q_threshold, lfc_threshold)
            # one long table and one Parquet row group per chunk (not per sample: a writer keeps
            # every row group's metadata until it closes)
            rows, cols = np.nonzero(measured)
            table = pd.DataFrame({
                "sample_id": np.asarray(chunk.sample_ids, dtype=object)[rows], "gene_id": gene_ids[cols],
                "gene_name": gene_names[cols], "count": x[rows, cols], "normal_mean": mean[rows, cols],
                "dispersion": r[rows, cols], "log2_fold_change": lfc[rows, cols], "p_value": p[rows, cols],
                "q_value": q[rows, cols], "can_call_down": down_ok[rows, cols], "p_value_nb": p_nb[rows, cols],
                "q_value_nb": q_nb[rows, cols], "call": call[rows, cols],
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
            "model_fingerprint": model_fingerprint(model_dir), "test": test,
            "scaling": scaling or "as in representations", "q_threshold": q_threshold,
            **prepared.describe(), "null_requested": null, "model_error": model_error,
            "min_callable_fold": _callable_folds(prepared.outlier, len(gene_ids) - alignment.n_missing, q_threshold),
            "lfc_threshold": lfc_threshold, "n_samples": len(summary),
            "missing_model_genes": alignment.n_missing, "seconds": round(time.perf_counter() - started, 2),
        })
    return summary


def tiers(q: np.ndarray, q_nb: np.ndarray, lfc: np.ndarray, q_threshold: float, lfc_threshold: float) -> np.ndarray:
    """Each gene's `call`: "abnormal" where the null's q and the fold change pass, "candidate"
    where only the NB's q does (with the fold change), "" otherwise."""
    big = np.abs(lfc) > lfc_threshold
    with np.errstate(invalid="ignore"):
        abnormal = (q < q_threshold) & big
        candidate = (q_nb < q_threshold) & big & ~abnormal
    return np.where(abnormal, ABNORMAL, np.where(candidate, CANDIDATE, "")).astype(object)


def _run_tests(chunk_test: ChunkTest, threads: int, q_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """p-values [N, G] of a chunk, on `threads` threads, and (with `q_threshold`) whether a down
    call could reach it."""
    n_genes = chunk_test.n_genes
    p = by_gene_blocks(chunk_test.pvalues, n_genes, threads)
    if q_threshold is None:
        return p, np.ones_like(p, dtype=bool)
    return p, by_gene_blocks(chunk_test.smallest_down, n_genes, threads) < q_threshold


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
    nb = (table["q_value_nb"] < q) & (table["log2_fold_change"].abs() > lfc)
    return {
        "sample_id": sample,
        "n_tested": len(table),
        "n_up": int(up.sum()),
        "n_down": int(down.sum()),
        "n_de": int((up | down).sum()),
        "n_de_nb": int(nb.sum()),
        "n_candidate": int((table["call"] == CANDIDATE).sum()),
        "n_cannot_call_down": int((~table["can_call_down"]).sum()),
        "component": int(reps["component"][row]),
        "nll_per_gene": float(reps["nll_per_gene"][row]),
        "scale": float(reps["scale"][row]),
    }
