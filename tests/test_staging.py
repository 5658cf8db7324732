"""Staging folders after kills: a rerun of a step removes what dead runs of it left, never what a
live run is writing, and nothing piles up (kill -9 at random moments of ingest, train, represent
and de, then reruns)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nofone.io import atomic
from nofone.io.atomic import STAGE_INFIX, check_outdir, clean_stale_staging, staged_outdir

HOLD = """
import sys, time
from nofone.io.atomic import staged_outdir
with staged_outdir(sys.argv[1]) as stage:
    (stage / "part.txt").write_text("half")
    print("staged", flush=True)
    if sys.argv[2] == "die":
        import os; os._exit(9)  # no clean-up, as after kill -9
    time.sleep(60)
"""


def stages(outdir: Path) -> list[Path]:
    return sorted(outdir.parent.glob(f".{outdir.name}{STAGE_INFIX}*"))


def hold(outdir: Path, mode: str) -> subprocess.Popen:
    """A process that stages into `outdir` and then dies at once, or holds its stage."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(outdir), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    return proc


def test_a_dead_runs_staging_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    hold(out, "die").wait()
    assert len(stages(out)) == 1 and (stages(out)[0] / "out" / "part.txt").is_file()
    with staged_outdir(out) as stage:
        (stage / "result.txt").write_text("done")
    assert stages(out) == [] and (out / "result.txt").read_text() == "done"


def test_a_live_runs_staging_is_kept(tmp_path):
    out = tmp_path / "out"
    proc = hold(out, "hold")
    try:
        live = stages(out)
        assert clean_stale_staging(out) == [] and stages(out) == live
        with staged_outdir(out) as stage:  # a concurrent run into the same folder
            (stage / "other.txt").write_text("x")
        assert stages(out) == live, "a concurrent run removed a live run's staging folder"
    finally:
        proc.kill()
        proc.wait()
    assert clean_stale_staging(out) == live and stages(out) == []


def test_only_this_folders_staging_is_touched(tmp_path):
    (tmp_path / ".other.partial-0123abcd").mkdir()
    (tmp_path / ".out.partial-notours").mkdir()
    hold(tmp_path / "out", "die").wait()
    check_outdir(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-0123abcd", ".out.partial-notours"]


def test_unmarked_staging_goes_by_age(tmp_path):
    """Staging from before owner markers: removed once nothing in it changed for a day."""
    out = tmp_path / "out"
    old, young = tmp_path / ".out.partial-00000001", tmp_path / ".out.partial-00000002"
    for folder in (old, young):
        (folder / "samples").mkdir(parents=True)
        (folder / "samples" / "A.tsv").write_text("x")
    past = time.time() - atomic.UNMARKED_STALE_SECONDS - 60
    for path in (old, old / "samples", old / "samples" / "A.tsv"):
        os.utime(path, (past, past))
    assert clean_stale_staging(out) == [old]
    assert young.is_dir()


@pytest.mark.parametrize(("host", "pid", "age", "stale"), [
    ("here", "dead", 0, True), ("here", "alive", 0, False),
    ("other", "dead", 0, False), ("other", "dead", atomic.FOREIGN_STALE_SECONDS + 60, True),
])
def test_without_file_locks_the_marker_decides(tmp_path, host, pid, age, stale):
    out = tmp_path / "out"
    root = tmp_path / ".out.partial-0000abcd"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker = {"host": socket.gethostname() if host == "here" else "elsewhere.cluster",
              "pid": dead.pid if pid == "dead" else os.getpid(), "started": 0, "locked": False}
    (root / atomic.OWNER_FILE).write_text(json.dumps(marker))
    if age:
        past = time.time() - age
        os.utime(root / atomic.OWNER_FILE, (past, past))
        os.utime(root, (past, past))
    assert (clean_stale_staging(out) == [root]) is stale


def test_old_versions_moved_aside_by_a_killed_publish_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / ".samples.old-0badc0de").mkdir()  # a publish killed after moving the old version aside
    (out / ".lonely.old-0badc0de").write_text("the only copy: kept")
    with staged_outdir(out) as stage:
        (stage / "samples").mkdir()
    assert sorted(p.name for p in out.iterdir()) == [".lonely.old-0badc0de", "samples"]


# ------------------------------------------------------------- kill -9 of the real steps, then rerun


@pytest.fixture(scope="module")
def step_inputs(tmp_path_factory):
    """A small simulated cohort, its dataset and a tiny model: the inputs of each step."""
    from nofone.io.ingest import IngestOptions, ingest
    from nofone.models.dgd.config import load_config
    from nofone.simulate import SimulationConfig, simulate
    from nofone.steps.train import train

    root = tmp_path_factory.mktemp("steps")
    simulate(root / "sim", SimulationConfig(tissues=2, samples_per_tissue=30, genes=600, cases=40, seed=1))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions())
    config = root / "config.json"
    config.write_text(json.dumps({"latent_dim": 2, "hidden": [16], "gmm": {"n_components": 2},
                                  "training": {"epochs": 40, "batch_size": 8}}))
    train(root / "data", root / "model", load_config(str(config)), device="cpu")
    from nofone.inference.represent import SearchConfig
    from nofone.steps.represent import represent

    represent(root / "model", root / "data", root / "reps", SearchConfig(), device="cpu")
    return root


def step_command(step: str, root: Path, outdir: Path) -> list[str]:
    base = [sys.executable, "-m", "nofone", "-q", "--threads", "1"]
    return base + {
        "ingest": ["ingest", "-i", str(root / "sim" / "samplesheet.csv")],
        "train": ["train", "--input", str(root / "data"), "--config", str(root / "config.json"), "--device", "cpu"],
        "represent": ["represent", "--model", str(root / "model"), "--input", str(root / "data"), "--device", "cpu",
                      "--chunk-size", "4"],
        "de": ["de", "--model", str(root / "model"), "--representations", str(root / "reps"), "--input",
               str(root / "data"), "--device", "cpu", "--chunk-size", "2"],
    }[step] + ["--outdir", str(outdir)]


def kill_when_staging(cmd: list[str], outdir: Path, timeout: float = 120) -> bool:
    """Start `cmd`, kill -9 it as soon as its staging folder exists; False if it finished first."""
    before = set(stages(outdir))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NOFONE_PROGRESS="0"))
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if set(stages(outdir)) - before:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.parametrize("step", ["ingest", "represent", "de"])
def test_a_step_killed_while_staging_leaves_debris_that_its_rerun_removes(step_inputs, tmp_path, step):
    out = tmp_path / step
    assert kill_when_staging(step_command(step, step_inputs, out), out), f"{step} finished before it staged"
    assert len(stages(out)) == 1, "the kill was meant to leave a staging folder"
    rerun = subprocess.run(step_command(step, step_inputs, out), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert stages(out) == [], "the rerun did not remove the killed run's staging folder"


KILL_TRIALS = int(os.environ.get("NOFONE_KILL_TRIALS", "0"))


@pytest.mark.slow
@pytest.mark.skipif(not KILL_TRIALS, reason="a stress test of minutes: set NOFONE_KILL_TRIALS=5 to run it")
@pytest.mark.parametrize("step", ["ingest", "train", "represent", "de"])
def test_kill_at_random_moments_then_rerun_nothing_piles_up(step_inputs, tmp_path, step):
    """NOFONE_KILL_TRIALS runs killed at random moments (uniform over a whole run's duration),
    each followed by the count of staging folders; then one run to the end."""
    out = tmp_path / step
    cmd = step_command(step, step_inputs, tmp_path / "calibrate")
    started = time.time()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    duration = time.time() - started
    rng = random.Random(17)
    left = []
    for _ in range(KILL_TRIALS):
        proc = subprocess.Popen(step_command(step, step_inputs, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left.append(len(stages(out)))
    assert max(left) <= 1, f"staging folders piled up after kills: {left}"
    final = subprocess.run(step_command(step, step_inputs, out), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert stages(out) == []
    print(f"{step}: run {duration:.1f} s; staging folders after each kill {left}; after the rerun 0")
