"""slurm/*.sbatch against a real SLURM controller and node on localhost (tests/slurm_cluster.py).

Two tasks of one job stand for two nodes: each runs the per-node launcher, and they
rendezvous over loopback as node ranks 0 and 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from slurm_cluster import Cluster, ensure_installed
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tiny_recipes import tiny_ae_data, tiny_ae_recipe

from data_tools.shard import ShardOptions, shard
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.shards.format import read_manifest, shard_paths

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
SR = 8000


@pytest.fixture(scope="module")
def cluster():
    ensure_installed()
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm-data")
    (root / "tiny.toml").write_text(tiny_ae_recipe(SR, tiny_ae_data(root, SR, seed=9), num_workers=1))
    return root


def job_env(**params: str | Path) -> dict[str, str]:
    return {
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "WAVEDIFF": str(Path(sys.executable).parent / "wavediff"),
        **{k: str(v) for k, v in params.items()},
    }


TWO_NODES = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2"]  # two launcher tasks = two "nodes"


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of every loss logged in every event file, none hidden by a resumed run's purge."""
    steps = []
    for path in sorted((run_dir / "logs").glob("events.*")):
        for event in EventFileLoader(str(path)).Load():
            if any(v.tag == "loss/generator" for v in event.summary.value):
                steps.append(event.step)
    return steps


def test_train_sbatch_runs_two_nodes_to_a_checkpoint(cluster: Cluster, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    env = job_env(RECIPE=data / "tiny.toml", RUN=tmp_path / "run", GPUS_PER_NODE=1)
    job = cluster.submit([*TWO_NODES, f"--output={out}", str(ROOT / "slurm" / "train.sbatch"), "-q"], env, ROOT)
    info = cluster.wait(job, timeout=150)
    log = out.read_text()
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "0", log
    assert latest_checkpoint(tmp_path / "run").name == "step-000006"
    assert "effective batch size 4 = 2 per batch × 1 accumulated × 2 process(es)" in log
    # srun --label: each task's lines start with its number; each launcher ran one rank to the end
    assert "0: process 0 of 2 on cpu:0: trained from step 0 to step 6" in log
    assert "1: process 1 of 2 on cpu:0: trained from step 0 to step 6" in log
    assert logged_steps(tmp_path / "run") == list(range(1, 7))


def test_time_limit_warning_checkpoints_requeues_and_resumes(cluster: Cluster, data: Path, tmp_path: Path) -> None:
    out, run_dir, steps = tmp_path / "job.out", tmp_path / "run", 25
    env = job_env(RECIPE=data / "tiny.toml", RUN=run_dir, GPUS_PER_NODE=1)
    args = [
        *TWO_NODES,
        f"--output={out}",
        str(ROOT / "slurm" / "train.sbatch"),
        "-q",
        "--set",
        f"train.steps={steps}",
        "--set",
        "train.checkpoint_every=5",
    ]
    job = cluster.submit(args, env, ROOT)
    deadline = time.monotonic() + 120
    while latest_checkpoint(run_dir) is None:
        assert cluster.job(job)["JobState"] in ("PENDING", "RUNNING"), out.read_text()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    # what SLURM does at --signal=B:USR1@300 before the time limit
    cluster.run(["scancel", "--batch", "--signal=USR1", job])
    deadline = time.monotonic() + 120
    while (info := cluster.job(job))["Restarts"] == "0":
        assert info["JobState"] in ("RUNNING", "COMPLETING"), (info, out.read_text())
        assert time.monotonic() < deadline, f"not requeued in time: {info}"
        time.sleep(0.2)
    stopped = latest_checkpoint(run_dir)  # the requeued run waits ~10 s (the harness's cred_expire)
    info = cluster.wait(job, timeout=150)
    log = out.read_text()
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0", log
    step = int(stopped.name.split("-")[1])
    assert 5 <= step < steps
    assert f"SIGUSR1: saved the checkpoint at step {step}, stopping" in log
    assert f"requeueing job {job}" in log and f"resuming {stopped} at step {step}" in log
    assert f"1: process 1 of 2 on cpu:0: trained from step {step} to step {steps}" in log
    assert latest_checkpoint(run_dir).name == f"step-{steps:06d}"
    assert logged_steps(run_dir) == list(range(1, steps + 1))  # every step trained once: none twice, none lost


def test_shard_job_array_merges_into_one_dataset(cluster: Cluster, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    options = ["--sample-rate", str(SR), "--channels", "1", "--val-fraction", "0.3"]
    env = job_env(SOURCES=data / "src", OUT=out)
    job = cluster.submit(
        ["--array=0-2", f"--output={tmp_path}/shard-%a.out", str(ROOT / "slurm" / "shard.sbatch"), *options],
        env,
        tmp_path,
    )
    cluster.wait(job, timeout=120)
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists():  # the merge job runs once the array is done
        assert time.monotonic() < deadline, [p.read_text() for p in tmp_path.glob("*.out")]
        time.sleep(0.3)
    merged = read_manifest(out, "audio")
    single = shard(
        [data / "src"],
        tmp_path / "single",
        ShardOptions(sample_rate=SR, channels=1, workers=1, val_fraction=0.3),
        progress=False,
    )
    assert merged.parts == 3 and not (out / "parts").exists()
    for split in ("train", "val"):
        assert merged.splits[split].samples == single.splits[split].samples
        assert keys(out, merged, split) == keys(tmp_path / "single", single, split)
    assert (merged.files, merged.genres, merged.bpm) == (single.files, single.genres, single.bpm)
    check = subprocess.run(
        [str(Path(sys.executable).parent / "wavediff"), "data", "inspect", str(out), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert check.returncode == 0, check.stdout + check.stderr


def keys(folder: Path, manifest: dict, split: str) -> list[str]:
    found = []
    for path in shard_paths(folder, manifest, split):
        with tarfile.open(path) as tar:
            found += [m.name for m in tar.getmembers()]
    return sorted(found)
