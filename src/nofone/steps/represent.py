"""`nofone represent`: every sample's closest normal (`NormalModel.closest_normal`), streamed
chunk by chunk into representations.parquet.

The file is the same for every model: `latent` holds the stored point that `nofone de` decodes
(a latent point, or the expression itself for a model without a latent space: D = G), and a
model without mixture components has one, of probability 1 (`component` 0, `responsibilities`
[1.0]); `latent_nll` is NaN where the model has no prior over its points. A model that gives a
per-gene spread of its closest normal adds a `spread` column (a list of G floats).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nofone import __version__
from nofone.errors import InputError, cuda_memory_guard
from nofone.inference.represent import SearchConfig, find_representations
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset, GeneAlignment, read_parquet_table
from nofone.models.base import ClosestNormal
from nofone.progress import progress
from nofone.steps.common import load_model, model_fingerprint, resolve_device

log = logging.getLogger(__name__)
REPRESENTATIONS = "representations.parquet"
OOM_ADVICE = "retry with a smaller --chunk-size or on a larger GPU"


def representation_schema(latent_dim: int, n_components: int, metadata: dict, n_spread: int = 0) -> pa.Schema:
    """The columns of representations.parquet; `n_spread` > 0 adds the per-gene `spread`."""
    spread = [("spread", pa.list_(pa.float32(), n_spread))] if n_spread else []
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("latent", pa.list_(pa.float32(), latent_dim)),
            ("scale", pa.float64()),
            ("scaling", pa.string()),
            ("component", pa.int32()),
            ("component_probability", pa.float32()),
            ("responsibilities", pa.list_(pa.float32(), n_components)),
            ("nll", pa.float64()),
            ("nll_per_gene", pa.float64()),
            ("latent_nll", pa.float64()),
            ("n_measured", pa.int32()),
            *spread,
        ],
        metadata={k.encode(): json.dumps(v).encode() for k, v in metadata.items()},
    )


@cuda_memory_guard(OOM_ADVICE)
def represent(model_dir: Path, input_dir: Path, outdir: Path, search: SearchConfig,
              sample_ids: list[str] | None = None, chunk_size: int = 32, device: str = "auto") -> dict:
    """Find representations for the selected samples of a dataset and write them."""
    check_outdir(outdir)
    device = resolve_device(device)
    model = load_model(model_dir, device)
    search = search.for_model(model, search.scaling)  # no scaling asked for: the model's own
    data = Dataset(input_dir)
    alignment = GeneAlignment(data.gene_ids, model.gene_ids, where=f"{input_dir}: ")
    ids = sample_ids or data.sample_ids
    metadata = {
        "nofone_version": __version__, "model": str(Path(model_dir).resolve()),
        "model_fingerprint": model_fingerprint(model_dir), "model_type": model.model_type,
        "search": search.__dict__, "missing_model_genes": alignment.n_missing,
    }
    started = time.perf_counter()
    n_spread = len(model.gene_ids) if model.gives_spread else 0
    left_out: dict[str, str] = {}
    with staged_outdir(outdir) as stage:
        schema = representation_schema(model.latent_dim, model.n_components or 1, metadata, n_spread)
        with pq.ParquetWriter(stage / REPRESENTATIONS, schema) as writer, \
                progress("finding representations", len(ids)) as advance:
            for chunk in data.iter_chunks(chunk_size, sample_ids=ids):
                chunk = alignment.align(chunk)
                chunk = _without_empty_samples(chunk, left_out)
                if not len(chunk):
                    continue
                counts = torch.as_tensor(chunk.counts, device=device)
                measured = None if chunk.measured is None else torch.as_tensor(chunk.measured, device=device)
                result = find_representations(model, counts, measured, search)
                writer.write_table(_table(chunk.sample_ids, result, search, schema, len(model.gene_ids)))
                advance(len(chunk), nll_per_gene=float((result.count_nll / result.n_measured).mean()))
        if len(left_out) == len(ids):
            raise InputError(f"{input_dir}: none of the {len(ids)} selected samples has a count on the model's genes")
        summary = {**metadata, "n_samples": len(ids) - len(left_out), "left_out": left_out,
                   "seconds": round(time.perf_counter() - started, 2),
                   "device": device, "missing_model_gene_ids": alignment.missing[:1000]}
        write_json_atomic(stage / "represent_report.json", summary)
    return summary


def _without_empty_samples(chunk, left_out: dict[str, str]):
    """Samples without a single count on the measured model genes have no closest normal (their
    scale would be 0 and every test empty): they are left out, with the reason in the report."""
    has_counts = ((chunk.counts > 0) & chunk.measured_mask()).any(axis=1)
    for sample in np.asarray(chunk.sample_ids, dtype=object)[~has_counts]:
        left_out[sample] = "library size 0 on the model's genes: nothing to represent or test"
        log.warning("sample %s has no counts on the model's genes: left out of represent (and de)", sample)
    return chunk if has_counts.all() else chunk.select_samples(has_counts)


def _table(ids: list[str], result: ClosestNormal, search: SearchConfig, schema: pa.Schema, n_genes: int) -> pa.Table:
    if result.responsibilities is None:  # a model without components: one, of probability 1
        resp = np.ones((len(ids), 1), np.float32)
    else:
        resp = result.responsibilities.detach().cpu().numpy().astype(np.float32)
    latent = result.latent.detach().cpu().numpy().astype(np.float32)
    n_measured = result.n_measured.cpu().numpy()
    nll = result.count_nll.cpu().numpy()
    component = resp.argmax(1)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(latent.ravel()), latent.shape[1]),
            pa.array(result.scale.cpu().numpy()),
            pa.array([_scaling_used(search.scaling, int(n), n_genes) for n in n_measured]),
            pa.array(component.astype(np.int32)),
            pa.array(resp[np.arange(len(ids)), component]),
            pa.FixedSizeListArray.from_arrays(pa.array(resp.ravel()), resp.shape[1]),
            pa.array(nll),
            pa.array(nll / n_measured),
            pa.array(result.latent_nll.cpu().numpy()),
            pa.array(n_measured.astype(np.int32)),
            *_spread_column(result, schema),
        ],
        schema=schema,
    )


def _spread_column(result: ClosestNormal, schema: pa.Schema) -> list[pa.Array]:
    if "spread" not in schema.names:
        return []
    if result.spread is None:
        raise ValueError("the model declares a per-gene spread (gives_spread) but its closest_normal gave none")
    spread = result.spread.detach().cpu().numpy().astype(np.float32)
    return [pa.FixedSizeListArray.from_arrays(pa.array(spread.ravel()), spread.shape[1])]


def _scaling_used(method: str, n_measured: int, n_genes: int) -> str:
    """`mean` becomes `measured` for samples that lack some model genes (see models/scaling.py)."""
    return "measured" if method == "mean" and n_measured < n_genes else method


def read_representations(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and columns (latent as a [N, D] array) of a representations file."""
    table = read_parquet_table(path, "representations file")
    meta = {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items()
            if k.decode() != "ARROW:schema"}
    latent = table.column("latent").combine_chunks()
    lists = {"latent", "responsibilities", "spread"}
    columns = {name: table.column(name).to_numpy() for name in table.column_names if name not in lists}
    columns["latent"] = latent.flatten().to_numpy().reshape(len(table), -1)
    if "spread" in table.column_names:
        columns["spread"] = table.column("spread").combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    columns["sample_id"] = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
    return meta, columns
