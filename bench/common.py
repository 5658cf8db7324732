"""What the benches share: where the real data is, the atlas sample sheet, and measuring a
command's wall time and peak memory in a fresh process."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NOFONE_SHARED_DATA", REPO.parent / "shared" / "data"))
NOFONE = Path(sys.executable).with_name("nofone")
TIME = Path("/usr/bin/time")


def atlas_sheet(path: Path) -> tuple[Path, int, int]:
    """Sample sheet of every normal-atlas file (tumour file: condition 'tumour'); returns it,
    the number of samples and of files."""
    rows = [["sample", "counts", "condition", "tissue", "source"]]
    files = sorted((DATA / "normal_atlas").glob("*-rsem-count-*.txt.gz"))
    for f in files:
        tissue, _, _, source = f.name.split(".")[0].split("-", 3)
        condition = "tumour" if source == "tcga-t" else "normal"
        with gzip.open(f, "rt") as handle:
            samples = handle.readline().rstrip("\n").split("\t")[2:]
        rows += [[s, str(f), condition, tissue, source] for s in samples]
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path, len(rows) - 1, len(files)


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd`; wall seconds and peak RSS (MiB) of the process tree's largest process."""
    env = {**os.environ, **(env or {})}
    if TIME.is_file():
        start = time.perf_counter()
        proc = subprocess.run([str(TIME), "-v", *cmd], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if proc.returncode != 0 or not match:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return {"wall_s": wall, "peak_rss_mib": int(match.group(1)) / 1024, "via": "/usr/bin/time -v"}
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'wall_s': time.perf_counter() - t,"
        " 'kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result['rc']}):\n{proc.stderr[-3000:]}")
    return {"wall_s": result["wall_s"], "peak_rss_mib": result["kib"] / 1024, "via": "getrusage(RUSAGE_CHILDREN)"}


def size_mib(path: Path) -> float:
    """Size of a file or of everything below a folder; 0 when it does not exist."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.is_dir() else 0.0
