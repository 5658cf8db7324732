"""Scatter and gather for clusters: split the samples to test into chunks, merge chunk outputs.

`chunk` writes `chunk_0001.txt`, ... (one sample id per line) so that Nextflow can run
`represent` and `de` once per chunk; `gather` merges their outputs into the cohort's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.steps.de import DE_FILE, SUMMARY_FILE
from nofone.steps.represent import REPRESENTATIONS


def write_chunks(sample_ids: list[str], outdir: Path, chunk_size: int) -> list[Path]:
    """Files of at most `chunk_size` sample ids each, numbered in order."""
    if chunk_size < 1:
        raise InputError("--chunk-size must be at least 1")
    names = []
    with staged_outdir(outdir) as stage:
        for number, start in enumerate(range(0, len(sample_ids), chunk_size), start=1):
            name = f"chunk_{number:04d}.txt"
            (stage / name).write_text("\n".join(sample_ids[start:start + chunk_size]) + "\n")
            names.append(Path(outdir) / name)
    return names


def gather(parts: list[Path], outdir: Path) -> dict:
    """Merge folders of `represent` and/or `de` outputs (in the order given) into one."""
    if not parts:
        raise InputError("nothing to gather")
    for part in parts:
        if not Path(part).is_dir():
            raise InputError(f"{part} is not a folder of represent/de outputs")
    counts = {"representations": 0, "de_samples": 0}
    with staged_outdir(outdir) as stage:
        _merge_parquet([Path(p) / REPRESENTATIONS for p in parts], stage / REPRESENTATIONS)
        _merge_parquet([Path(p) / DE_FILE for p in parts], stage / DE_FILE)
        summaries = [pd.read_csv(Path(p) / SUMMARY_FILE, sep="\t") for p in parts if (Path(p) / SUMMARY_FILE).is_file()]
        if summaries:
            summary = pd.concat(summaries, ignore_index=True)
            duplicated = summary["sample_id"][summary["sample_id"].duplicated()].tolist()
            if duplicated:
                raise InputError(f"samples in more than one chunk: {duplicated[:5]}")
            summary.to_csv(stage / SUMMARY_FILE, sep="\t", index=False)
            counts["de_samples"] = len(summary)
        for part in parts:
            for tsv in sorted((Path(part) / "samples").glob("*.tsv")):
                (stage / "samples").mkdir(exist_ok=True)
                shutil.copy2(tsv, stage / "samples" / tsv.name)
        if (stage / REPRESENTATIONS).is_file():
            counts["representations"] = pq.ParquetFile(stage / REPRESENTATIONS).metadata.num_rows
        reports = {}
        for name in ("represent_report.json", "de_report.json"):
            found = [json.loads((Path(p) / name).read_text()) for p in parts if (Path(p) / name).is_file()]
            if found:
                reports[name] = found
        write_json_atomic(stage / "gather_report.json", {"parts": [str(p) for p in parts], **counts,
                                                         "reports": reports})
    return counts


def _merge_parquet(paths: list[Path], target: Path) -> None:
    present = [p for p in paths if p.is_file()]
    if not present:
        return
    schema = pq.read_schema(present[0])
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for path in present:
            file = pq.ParquetFile(path)
            if not file.schema_arrow.equals(schema, check_metadata=False):
                raise InputError(f"{path} does not have the columns of {present[0]}")
            for group in range(file.num_row_groups):
                writer.write_table(file.read_row_group(group).replace_schema_metadata(schema.metadata))
