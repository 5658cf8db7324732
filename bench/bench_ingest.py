"""Ingest time and peak memory: the normal atlas and a simulated 5,000 x 20,000 cohort.

Run: .venv/bin/python bench/bench_ingest.py [--out bench/out] [--skip-atlas] [--skip-sim]
     (about 2-3 minutes on a quiet 2-core machine)

Issue: "the ingest time and peak memory for the whole normal atlas and for a simulated
5,000 x 20,000 cohort". Each ingest runs as a subprocess, `nofone -q ingest ...`, under
`/usr/bin/time -v` (wall time; peak RSS = "Maximum resident set size"), 2 threads.

(a) The normal atlas: every `<tissue>-rsem-count-<source>.txt.gz` of ../shared/data/normal_atlas
    (Hugo_Symbol, Entrez_Gene_Id, one column per sample; condition `tumour` for
    `read-rsem-count-tcga-t`, else `normal`), `--round-counts --annotation
    ensembl_grch38_gene_symbol_biotype_unique.tsv.gz`. Skipped with a message when absent.
(b) `nofone simulate --tissues 10 --samples-per-tissue 500 --genes 20000 --cases 0
    --heldout-per-tissue 0` (one 5,000-column matrix), ingest of its whole sheet and of the
    sheet's first 2,500 rows (half of the cohort, same file): the ratio of their peak memory
    shows whether memory is bounded by a chunk (ratio ~1) or grows with the cohort (~2).
Reference printed side by side: a naive in-memory load of the same matrices with pandas
(`pd.read_csv` of every file, concatenated along samples; in a subprocess, same measurement),
which holds the whole cohort.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("NOFONE_PROGRESS", "0")

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import DATA, NOFONE, REPO, atlas_sheet, measure, size_mib

ANNOTATION = DATA / "annotation" / "ensembl_grch38_gene_symbol_biotype_unique.tsv.gz"

# A naive in-memory load: argv = [sheet.csv]; reads every matrix of the sheet with pandas,
# keeps the sheet's columns of each, concatenates along samples (the whole cohort in memory).
NAIVE = r"""
import csv, sys, collections
import pandas as pd
from pathlib import Path
sheet = Path(sys.argv[1])
files = collections.defaultdict(list)
with open(sheet, newline="") as handle:
    for row in csv.DictReader(handle):
        path = Path(row["counts"])
        files[path if path.is_absolute() else sheet.parent / path].append(row.get("column") or row["sample"])
frames = []
for path, columns in files.items():
    head = pd.read_csv(path, sep="\t", nrows=0).columns[:2].tolist()
    frames.append(pd.read_csv(path, sep="\t", index_col=[0, 1], usecols=head + columns))
matrix = pd.concat(frames, axis=1, join="inner") if len(frames) > 1 else frames[0]
print(matrix.shape, int(matrix.to_numpy().sum() > 0))
"""


def half_sheet(sheet: Path, n: int) -> Path:
    """The first n rows of a sheet, next to it (relative count paths keep working)."""
    lines = sheet.read_text().splitlines()
    out = sheet.with_name(f"samplesheet_first{n}.csv")
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def ingest_cmd(sheet: Path, outdir: Path, *extra: str) -> list[str]:
    return [str(NOFONE), "-q", "ingest", "-i", str(sheet), "-o", str(outdir), *extra]


def run_case(name: str, sheet: Path, outdir: Path, extra: list[str], env: dict) -> dict:
    if outdir.exists():
        shutil.rmtree(outdir)
    ours = measure(ingest_cmd(sheet, outdir, *extra), env)
    ours["dataset_mib"] = size_mib(outdir)
    naive = measure([sys.executable, "-c", NAIVE, str(sheet)], env)
    print(f"  {name}: ingest {ours['wall_s']:.1f} s / {ours['peak_rss_mib']:.0f} MiB; pandas"
          f" {naive['wall_s']:.1f} s / {naive['peak_rss_mib']:.0f} MiB", flush=True)
    shutil.rmtree(outdir, ignore_errors=True)
    return {"ingest": ours, "pandas": naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--samples-per-tissue", type=int, default=500, help="simulated cohort: 10 tissues x this")
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-atlas", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the simulated cohort for a rerun")
    args = parser.parse_args()
    work = args.out / "ingest"
    work.mkdir(parents=True, exist_ok=True)
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    results: dict[str, dict] = {}
    notes: list[str] = []

    if args.skip_atlas:
        notes.append("normal atlas: skipped (--skip-atlas)")
    elif not (DATA / "normal_atlas").is_dir() or not ANNOTATION.is_file():
        notes.append(f"normal atlas: skipped, {DATA / 'normal_atlas'} or the annotation is absent")
    else:
        sheet, n_samples, n_files = atlas_sheet(work / "atlas_samplesheet.csv")
        results["atlas"] = run_case(
            f"normal atlas ({n_files} files, {n_samples:,} samples)", sheet, work / "atlas_data",
            ["--round-counts", "--annotation", str(ANNOTATION)], env)
        results["atlas"]["label"] = f"normal atlas: {n_files} files, {n_samples:,} samples x 20,242 genes"
        results["atlas"]["n_samples"] = n_samples

    if args.skip_sim:
        notes.append("simulated cohort: skipped (--skip-sim)")
    else:
        from nofone.simulate.config import SimulationConfig
        from nofone.simulate.write import simulate

        n = 10 * args.samples_per_tissue
        sim = work / f"sim_{n}x{args.genes}"
        if not (sim / "samplesheet.csv").is_file():
            start = time.perf_counter()
            simulate(sim, SimulationConfig(tissues=10, samples_per_tissue=args.samples_per_tissue,
                                           genes=args.genes, cases=0, heldout_per_tissue=0, seed=args.seed))
            print(f"  simulated {n:,} x {args.genes:,} in {time.perf_counter() - start:.0f} s", flush=True)
        sheet = sim / "samplesheet.csv"
        results["sim"] = run_case(f"simulated {n:,} x {args.genes:,}", sheet, work / "sim_data", [], env)
        results["sim"]["label"] = f"simulated: {n:,} samples x {args.genes:,} genes (one matrix)"
        results["sim"]["n_samples"] = n
        half = half_sheet(sheet, n // 2)
        results["sim_half"] = run_case(f"simulated, first {n // 2:,} samples", half, work / "sim_half_data", [], env)
        results["sim_half"]["label"] = f"simulated: first {n // 2:,} samples of the same matrix"
        results["sim_half"]["n_samples"] = n // 2
        results["sim"]["matrix_mib"] = (sim / "counts" / "normals.tsv.gz").stat().st_size / 2**20
        if not args.keep:
            shutil.rmtree(sim, ignore_errors=True)

    print()
    print("Ingest vs a naive pandas load of the same matrices; subprocesses, 2 threads, peak RSS via "
          + next((r["ingest"]["via"] for r in results.values()), "-"))
    head = (f"{'input':<56} {'ingest s':>9} {'ingest MiB':>11} {'pandas s':>9} {'pandas MiB':>11}"
            f" {'dataset MiB':>12}")
    print(head)
    print("-" * len(head))
    for r in results.values():
        print(f"{r['label']:<56} {r['ingest']['wall_s']:>9.1f} {r['ingest']['peak_rss_mib']:>11.0f}"
              f" {r['pandas']['wall_s']:>9.1f} {r['pandas']['peak_rss_mib']:>11.0f}"
              f" {r['ingest']['dataset_mib']:>12.1f}")
    if "sim" in results and "sim_half" in results:
        full, half = results["sim"], results["sim_half"]
        ratio_ours = full["ingest"]["peak_rss_mib"] / half["ingest"]["peak_rss_mib"]
        ratio_naive = full["pandas"]["peak_rss_mib"] / half["pandas"]["peak_rss_mib"]
        results["peak_ratio_full_vs_half"] = {"ingest": ratio_ours, "pandas": ratio_naive}
        print(f"peak memory ratio {full['n_samples']:,} vs {half['n_samples']:,} samples: ingest {ratio_ours:.2f},"
              f" pandas {ratio_naive:.2f} (bounded by a chunk: ~1; grows with the cohort: ~2)")
    for note in notes:
        print(note)

    path = args.out / "bench_ingest.json"
    path.write_text(json.dumps({"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                "cpus": os.cpu_count(), "results": results, "notes": notes}, indent=2))
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
