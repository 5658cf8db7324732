"""DE profiles to explain: each sample's log2 fold changes against its closest normal, read from a
`nofone de` output, with a weight per gene.

The weight is the inverse of the gene's expected variance of log2 fold change: measurement
(the negative binomial of the closest normal, (1/m + 1/r) / ln(2)^2 for normal mean m and size
r) plus the profile's own spread between genes (tau^2, robustly from the well-measured genes).
Genes that cannot be called down (so few reads expected that even a zero would not be
surprising) are the ones with the largest measurement variance, so they weigh least; a
pseudo-counted log fold change of such a gene sits near 0 whatever the truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nofone.errors import InputError
from nofone.io.samplesheet import validate_sample_id

DE_FILE = "de.parquet"
LFC = "log2_fold_change"
OPTIONAL = ("gene_name", "normal_mean", "dispersion", "can_call_down")
#: Weight of a gene that cannot be called down when the table has no normal mean and size.
CANNOT_CALL_DOWN_WEIGHT = 0.25
LN2_SQUARED = np.log(2.0) ** 2


@dataclass
class Profile:
    sample_id: str
    genes: pd.DataFrame  # gene_id, gene_name, log2_fold_change, [normal_mean, dispersion, can_call_down]


def de_table_path(de: Path) -> Path:
    de = Path(de)
    if de.is_dir():
        if not (de / DE_FILE).is_file():
            raise InputError(f"--de {de}: no {DE_FILE} (expected the output folder of `nofone de` or `nofone gather`)")
        return de / DE_FILE
    if not de.is_file():
        raise InputError(f"--de {de} does not exist")
    return de


def iter_profiles(de: Path, samples: list[str] | None = None) -> Iterator[Profile]:
    """Every sample of a de output, one at a time (its rows must be contiguous, as `de` writes them)."""
    path = de_table_path(de)
    if path.suffix.lower() in (".tsv", ".txt", ".gz", ".csv"):
        yield from _profiles_from_text(path, samples)
        return
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({exc})") from None
    names = handle.schema_arrow.names
    _check_columns(path, names, needs_sample=True)
    _check_contiguous(path, handle)
    columns = ["sample_id", "gene_id", LFC, *[c for c in OPTIONAL if c in names]]
    wanted = set(samples) if samples else None
    seen: set[str] = set()
    pending: list[pd.DataFrame] = []
    current = None
    for batch in handle.iter_batches(columns=columns, batch_size=1 << 16):
        frame = batch.to_pandas()
        ids = frame["sample_id"].astype(str).to_numpy()
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(ids)]):
            sample = ids[start]
            if sample != current:
                if current is not None:
                    yield from _emit(path, current, pending, wanted)
                seen.add(sample)
                current, pending = sample, []
            pending.append(frame.iloc[start:stop])
    if current is not None:
        yield from _emit(path, current, pending, wanted)
    if wanted and wanted - seen:
        raise InputError(f"{path}: no rows for sample(s) {sorted(wanted - seen)[:5]}")


def sample_ids(de: Path) -> list[str]:
    """The samples of a de output, in order (reads only the sample_id column)."""
    path = de_table_path(de)
    if path.suffix.lower() != ".parquet":
        return [p.sample_id for p in _profiles_from_text(path, None)]
    ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_numpy(zero_copy_only=False)
    return list(dict.fromkeys(ids.astype(str)))


def _check_contiguous(path: Path, handle: pq.ParquetFile) -> None:
    """Samples are explained one at a time, so each sample's rows must be one block."""
    ids = handle.read(columns=["sample_id"]).column("sample_id").to_numpy(zero_copy_only=False).astype(str)
    if len(ids) == 0:
        return
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    runs = ids[starts]
    if len(runs) != len(set(runs)):
        seen: set[str] = set()
        repeated = next(r for r in runs if r in seen or seen.add(r))
        raise InputError(f"{path}: the rows of sample {repeated} are not contiguous; rewrite it with `nofone gather`")


def _emit(path: Path, sample: str, parts: list[pd.DataFrame], wanted: set[str] | None) -> Iterator[Profile]:
    if wanted is not None and sample not in wanted:
        return
    validate_sample_id(sample, f"{path}: ")
    yield Profile(sample, _clean(path, sample, pd.concat(parts, ignore_index=True).drop(columns="sample_id")))


def _profiles_from_text(path: Path, samples: list[str] | None) -> Iterator[Profile]:
    try:
        table = pd.read_csv(path, sep="," if ".csv" in path.suffixes else "\t", dtype={"gene_id": str,
                                                                                        "sample_id": str})
    except Exception as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    _check_columns(path, list(table.columns), needs_sample=False)
    if "sample_id" not in table.columns:
        name = path.name.split(".")[0]
        table = table.assign(sample_id=name)
    for sample, part in table.groupby("sample_id", sort=False):
        if samples and sample not in samples:
            continue
        validate_sample_id(str(sample), f"{path}: ")
        yield Profile(str(sample), _clean(path, str(sample), part.drop(columns="sample_id")))


def _check_columns(path: Path, names: list[str], needs_sample: bool) -> None:
    required = ["gene_id", LFC] + (["sample_id"] if needs_sample else [])
    missing = [c for c in required if c not in names]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)} column (found {list(names)[:12]}); expected the "
                         "output of `nofone de`")


def _clean(path: Path, sample: str, table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["gene_id"] = table["gene_id"].astype(str)
    lfc = pd.to_numeric(table[LFC], errors="coerce")
    bad = lfc.isna() & table[LFC].notna()
    if bad.any():
        row = table.loc[bad].iloc[0]
        raise InputError(f"{path}: sample {sample}, gene {row['gene_id']}: log2_fold_change {row[LFC]!r} "
                         "is not a number")
    table[LFC] = lfc
    table = table[np.isfinite(table[LFC].to_numpy(dtype=np.float64))]
    duplicated = table["gene_id"].duplicated()
    if duplicated.any():
        raise InputError(f"{path}: sample {sample}: gene {table.loc[duplicated, 'gene_id'].iloc[0]} appears twice")
    if "gene_name" not in table.columns:
        table["gene_name"] = ""
    table["gene_name"] = table["gene_name"].fillna("").astype(str)
    return table.reset_index(drop=True)


def profile_weights(genes: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Per gene weight (see the module docstring) and a note of how it was made."""
    y = genes[LFC].to_numpy(dtype=np.float64)
    down = genes["can_call_down"].to_numpy(dtype=bool) if "can_call_down" in genes else np.ones(len(y), bool)
    if {"normal_mean", "dispersion"} <= set(genes.columns):
        mean = np.maximum(genes["normal_mean"].to_numpy(dtype=np.float64), 1e-3)
        size = np.maximum(genes["dispersion"].to_numpy(dtype=np.float64), 1e-6)
        measurement = (1.0 / mean + 1.0 / size) / LN2_SQUARED
        good = down if down.sum() >= 10 else np.ones(len(y), bool)
        robust = (1.4826 * np.median(np.abs(y[good] - np.median(y[good])))) ** 2
        tau2 = max(robust - float(np.median(measurement[good])), 0.05 * robust, 1e-4)
        weights = 1.0 / (measurement + tau2)
        how = "inverse variance: negative binomial measurement + between-gene spread"
    else:
        tau2 = float("nan")
        weights = np.where(down, 1.0, CANNOT_CALL_DOWN_WEIGHT)
        how = f"1, or {CANNOT_CALL_DOWN_WEIGHT} for genes that cannot be called down (no normal_mean/dispersion)"
    notes = {"weights": how, "tau2": tau2,
             "mean_weight_can_call_down": float(weights[down].mean()) if down.any() else None,
             "mean_weight_cannot_call_down": float(weights[~down].mean()) if (~down).any() else None}
    return weights, notes
