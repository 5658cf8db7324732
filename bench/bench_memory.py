"""Peak memory of `nofone represent` and `nofone de`: flat in the number of samples.

Run: .venv/bin/python bench/bench_memory.py [--sizes 1000 10000] [--out bench/out]
     (about 5-8 minutes on a quiet 2-core machine)

Issue: "peak memory of represent + de for 1,000 and 10,000 samples flat in the number of
samples apart from the output". A paper-size search of 10,000 samples would take hours on a
CPU, so the model here is small and the search short; what is measured is how memory scales.

For each cohort size N (default 1,000 and 10,000):
1. `nofone.simulate.write.simulate`: 10 tissues x N/10 normals, 2,000 genes, no cases (one nf-core
   matrix), then `nofone.io.ingest.ingest` of its sample sheet (in this process, not measured).
2. A random-weight DGD of the `small` preset (latent 16, hidden 128/512, 16 components; means
   N(0, 0.5), output bias at the average relative expression of the cohort's first 256
   samples; seeded), saved with `DGD.save`. The ingested cohorts stay in `<out>/memory/` and
   are reused by a rerun; the outputs of represent and de are deleted unless `--keep`.
3. `nofone -q represent --steps-first 1 --steps-second 1 --keep-candidates 2` (a deliberately
   short search: memory, not quality, is measured; chunks of 16 samples, the default) and
   `nofone -q de --no-tsv` (chunks of 64), each as a subprocess under `/usr/bin/time -v`
   (peak RSS = "Maximum resident set size"; or `resource.getrusage(RUSAGE_CHILDREN)` of a
   fresh child when /usr/bin/time is absent), 2 threads.
Printed: wall time and peak RSS per step and size, the ratio largest/smallest (target: close
to 1), and the size of the outputs (which do grow with N).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("NOFONE_PROGRESS", "0")

import argparse
import json
import shutil
import time
from pathlib import Path

from common import NOFONE, REPO, measure, size_mib


def make_model(dataset: Path, folder: Path, seed: int) -> None:
    """A random-weight DGD of the `small` preset on the dataset's genes, saved to `folder`."""
    import numpy as np
    import torch

    from nofone.io.dataset import Dataset
    from nofone.models.dgd.config import PRESETS
    from nofone.models.dgd.model import DGD
    from nofone.models.dgd.module import DGDModule

    data = Dataset(dataset)
    first = next(data.iter_chunks(256))
    relative = (first.counts / first.counts.mean(1, keepdims=True)).mean(0)
    torch.manual_seed(seed)
    module = DGDModule(PRESETS["small"], data.n_genes)
    with torch.no_grad():
        module.gmm.means.normal_(0.0, 0.5)
    module.initialise_output_bias(torch.as_tensor(np.asarray(relative), dtype=torch.float32))
    genes = data.genes[["gene_id", "gene_name"]].astype(object).fillna("")
    if folder.exists():
        shutil.rmtree(folder)
    DGD(module, genes, {"source": {"format": "bench_memory random weights"}}).save(folder)


def prepare(n: int, work: Path, genes: int, seed: int) -> Path:
    """Simulate and ingest a cohort of n normals (10 tissues) unless it is already there."""
    from nofone.io.ingest import ingest
    from nofone.simulate.config import SimulationConfig
    from nofone.simulate.write import simulate

    data = work / f"data_{n}"
    if (data / "counts.parquet").is_file():
        return data
    sim = work / f"sim_{n}"
    if sim.exists():
        shutil.rmtree(sim)
    tissues = 10
    simulate(sim, SimulationConfig(tissues=tissues, samples_per_tissue=n // tissues, genes=genes, cases=0,
                                   heldout_per_tissue=0, seed=seed))
    ingest(sim / "samplesheet.csv", data)
    shutil.rmtree(sim)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="cohort sizes (multiples of 10)")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--keep", action="store_true", help="keep the simulated data and outputs")
    args = parser.parse_args()
    work = args.out / "memory"
    work.mkdir(parents=True, exist_ok=True)
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}

    results: dict[int, dict] = {}
    for n in args.sizes:
        start = time.perf_counter()
        data = prepare(n, work, args.genes, args.seed)
        model = work / f"model_{n}"
        make_model(data, model, args.seed)
        setup_s = time.perf_counter() - start
        reps, de = work / f"reps_{n}", work / f"de_{n}"
        for folder in (reps, de):
            if folder.exists():
                shutil.rmtree(folder)
        represent = measure([str(NOFONE), "-q", "represent", "-m", str(model), "-i", str(data), "-o", str(reps),
                             "--steps-first", "1", "--steps-second", "1", "--keep-candidates", "2",
                             "--device", "cpu"], env)
        test = measure([str(NOFONE), "-q", "de", "-m", str(model), "-r", str(reps), "-i", str(data), "-o", str(de),
                        "--no-tsv", "--device", "cpu"], env)
        results[n] = {
            "setup_s": setup_s,
            "represent": represent,
            "de": test,
            "input_counts_mib": size_mib(data / "counts.parquet"),
            "representations_mib": size_mib(reps / "representations.parquet"),
            "de_parquet_mib": size_mib(de / "de.parquet"),
            "de_outdir_mib": size_mib(de),
        }
        print(f"  {n:,} samples done: represent {represent['wall_s']:.1f} s / {represent['peak_rss_mib']:.0f} MiB,"
              f" de {test['wall_s']:.1f} s / {test['peak_rss_mib']:.0f} MiB (setup {setup_s:.0f} s)", flush=True)
        if not args.keep:
            for folder in (reps, de):
                shutil.rmtree(folder, ignore_errors=True)

    sizes = list(results)
    lo, hi = sizes[0], sizes[-1]
    print()
    print(f"Peak memory of represent + de, {args.genes:,} genes, `small` preset with random weights; represent with"
          " --steps-first 1 --steps-second 1 --keep-candidates 2 (chunks of 16), de --no-tsv (chunks of 64);"
          f" 2 threads; peak RSS via {results[lo]['represent']['via']}")
    head = f"{'':<34}" + "".join(f"{f'{n:,} samples':>16}" for n in sizes) + f"{f'ratio {hi // lo}x/1x':>14}"
    print(head)
    print("-" * len(head))

    def line(label: str, values: list[float], fmt: str) -> None:
        ratio = values[-1] / values[0] if values[0] else float("nan")
        print(f"{label:<34}" + "".join(f"{v:>16{fmt}}" for v in values) + f"{ratio:>14.2f}")

    for step in ("represent", "de"):
        line(f"{step}: peak RSS (MiB)", [results[n][step]["peak_rss_mib"] for n in sizes], ".0f")
        line(f"{step}: wall (s)", [results[n][step]["wall_s"] for n in sizes], ".1f")
        line(f"{step}: wall per 1,000 samples (s)", [1000 * results[n][step]["wall_s"] / n for n in sizes], ".2f")
    line("input counts.parquet (MiB)", [results[n]["input_counts_mib"] for n in sizes], ".1f")
    line("representations.parquet (MiB)", [results[n]["representations_mib"] for n in sizes], ".2f")
    line("de.parquet (MiB)", [results[n]["de_parquet_mib"] for n in sizes], ".1f")
    print("target: peak RSS ratio close to 1 (the outputs grow with the samples, memory must not)")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_memory.json"
    path.write_text(json.dumps({"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                "cpus": os.cpu_count(), "results": {str(k): v for k, v in results.items()}}, indent=2))
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
