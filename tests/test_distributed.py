"""Distributed training with 2 real processes on CPU (gloo), launched as users launch it:
torchrun, `accelerate launch` with the shipped multi-CPU config, and bare RANK/WORLD_SIZE
processes (what `srun` starts). The data is one shard of 4 loops, so the loader splits it by
sample: each rank must read its own 2 loops, and together all 4. Also how job arrays split
sharding and encoding between tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_recipes import same_weights, tiny_ae_data, tiny_ae_recipe

from data_tools.shard import ShardOptions, merge_parts, shard
from wavediff.config import AERecipe, load_recipe
from wavediff.latents.encode import part_range
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.shards.format import read_manifest
from wavediff.training.autoencoder import train_autoencoder

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SR = 8000
LR = 1e-3
TIMEOUT = 150  # seconds for any one launch: a hung collective fails the test instead of the suite

# Trains through train_autoencoder, recording per loss call the batch's keys and a digest of the
# weights it starts from (= the weights after the previous step), then the final weights.
_RECORDING_CHILD = """
import hashlib, json, os, sys
from wavediff.config import AERecipe, load_recipe
from wavediff.latents.encode import part_range
from wavediff.training import autoencoder as ae

records = []

def digest(model):
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()

class Recorded(ae.AutoencoderObjective):
    def loss(self, optimizer, nets, batch, step):
        records.append({"step": step, "keys": list(batch["key"]), "weights": digest(self.model)})
        return super().loss(optimizer, nets, batch, step)

built = []
ae.AutoencoderObjective = lambda recipe: built.append(Recorded(recipe)) or built[-1]
ae.train_autoencoder(load_recipe(sys.argv[1], AERecipe), sys.argv[2], progress=False)
final = digest(built[0].model)
with open(os.path.join(sys.argv[3], f"rank-{os.environ['RANK']}.json"), "w") as f:
    json.dump({"records": records, "final": final}, f)
"""

# Rank 0's loader dies of the stop signal while fetching step 4 (the second batch of the stream
# that restarts after the step-3 checkpoint): rank 1 has its batch and would wait in the gradient
# sync forever unless the ranks agree before computing.
_DYING_LOADER_CHILD = """
import os, signal, sys
from wavediff.config import AERecipe, load_recipe
from wavediff.latents.encode import part_range
from wavediff.training import autoencoder as ae

real = ae.shard_batches
streams = []

def batches(*args, **kwargs):
    source = real(*args, **kwargs)
    def dying(seed, rank, world_size):
        streams.append(seed)
        for fetched, batch in enumerate(source(seed, rank, world_size)):
            if rank == 0 and len(streams) == 2 and fetched == 1:
                os.kill(os.getpid(), signal.SIGUSR1)
                raise RuntimeError("DataLoader worker (pid 1) is killed by signal: User defined signal 1")
            yield batch
    return dying

ae.shard_batches = batches
print(ae.train_autoencoder(load_recipe(sys.argv[1], AERecipe), sys.argv[2], progress=False), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env(), cwd=ROOT, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    return done


def torchrun(*args: str | Path) -> subprocess.CompletedProcess:
    return run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *map(str, args)])


def bare_ranks(args: list[str | Path]) -> list[subprocess.Popen]:
    """Two ranks started with RANK/WORLD_SIZE as srun starts tasks, in one process group."""
    port, ranks = free_port(), []
    for rank in range(2):
        dist = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        ranks.append(
            subprocess.Popen(
                [sys.executable, *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**env(), **dist},
                cwd=ROOT,
                process_group=0 if rank == 0 else ranks[0].pid,
            )
        )
    return ranks


def finish(ranks: list[subprocess.Popen]) -> list[str]:
    """Both ranks' stdout once they exit, each required to exit 0; killed if they hang."""
    try:
        outs = [rank.communicate(timeout=TIMEOUT) for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    for rank, (out, err) in zip(ranks, outs):
        assert rank.returncode == 0, f"exit {rank.returncode}\n{out}\n{err}"
    return [out for out, _ in outs]


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    path = root / "tiny.toml"
    path.write_text(tiny_ae_recipe(SR, tiny_ae_data(root, SR, seed=5), lr_scaling="linear", lr=LR))
    return path


@pytest.fixture(scope="module")
def straight(recipe_file: Path, tmp_path_factory) -> tuple[Path, list[dict], str]:
    """A 6-step torchrun run of 2 processes, recorded: (run folder, each rank's records, stdout)."""
    root = tmp_path_factory.mktemp("straight")
    (root / "child.py").write_text(_RECORDING_CHILD)
    done = torchrun(root / "child.py", recipe_file, root / "run", root)
    ranks = [json.loads((root / f"rank-{r}.json").read_text()) for r in range(2)]
    return root / "run", ranks, done.stdout


def test_ranks_read_disjoint_data_and_keep_identical_weights(straight, recipe_file: Path) -> None:
    run_dir, (rank0, rank1), out = straight
    steps = [[r["step"] for r in rank["records"]] for rank in (rank0, rank1)]
    assert steps[0] == steps[1] == list(range(6))
    # weights entering every step, and after the last, are bit-identical across ranks, and training moved them
    assert [r["weights"] for r in rank0["records"]] == [r["weights"] for r in rank1["records"]]
    assert rank0["final"] == rank1["final"] != rank0["records"][0]["weights"]
    assert len({r["weights"] for r in rank0["records"]}) == 6
    seen = [{k for r in rank["records"] for k in r["keys"]} for rank in (rank0, rank1)]
    manifest = read_manifest(recipe_file.parent / "shards")
    assert manifest.splits["train"].samples == 4 and len(manifest.splits["train"].shards) == 1
    assert len(seen[0]) == len(seen[1]) == 2 and not seen[0] & seen[1]

    assert "effective batch size 4 = 2 per batch × 1 accumulated × 2 process(es)" in out
    assert f"learning rate × 2 (lr_scaling linear, 2 process(es)): generator {LR:g} → {2 * LR:g}" in out
    assert "process 0 of 2 on cpu:0: trained from step 0 to step 6" in out
    assert "process 1 of 2 on cpu:0: trained from step 0 to step 6" in out
    lrs = EventAccumulator(str(run_dir / "logs")).Reload().Scalars("lr/generator")
    assert [e.step for e in lrs] == list(range(1, 7)) and all(e.value == pytest.approx(2 * LR) for e in lrs)
    # only the main process wrote: one event file, one checkpoint series
    assert len(list((run_dir / "logs").glob("events.*"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step-000003", "step-000006"]


def test_a_two_process_checkpoint_resumes_in_two_processes_and_in_one(straight, recipe_file, tmp_path, capsys):
    straight_dir = straight[0]
    run_dir = tmp_path / "run"
    config = ROOT / "recipes" / "accelerate" / "multi-cpu.yaml"
    run(
        [
            str(BIN / "accelerate"),
            "launch",
            "--config_file",
            str(config),
            "--main_process_port",
            str(free_port()),
            "-m",
            "wavediff.cli",
            "train-ae",
            str(recipe_file),
            "--out",
            str(run_dir),
            "--max-steps",
            "3",
            "-q",
        ]
    )
    half = latest_checkpoint(run_dir)
    assert step_of(half) == 3 and same_weights(half, straight_dir / "checkpoints" / "step-000003")
    shutil.copytree(run_dir, tmp_path / "single")

    done = torchrun("-m", "wavediff.cli", "train-ae", recipe_file, "--out", run_dir, "-q")
    assert f"resuming {half} at step 3" in done.stdout
    assert "process 1 of 2 on cpu:0: trained from step 3 to step 6" in done.stdout
    resumed = latest_checkpoint(run_dir)
    assert step_of(resumed) == 6 and same_weights(resumed, straight_dir / "checkpoints" / "step-000006")

    capsys.readouterr()
    last = train_autoencoder(load_recipe(recipe_file, AERecipe), tmp_path / "single", progress=False)
    out = capsys.readouterr().out
    assert f"resuming {tmp_path / 'single' / 'checkpoints' / 'step-000003'} at step 3" in out
    assert f"learning rate × 1 (lr_scaling linear, 1 process(es)): generator {LR:g} → {LR:g}" in out
    assert step_of(last) == 6 and not same_weights(last, resumed)  # one process: another batch, another lr


def test_stop_signal_to_the_process_group_checkpoints_once_and_both_exit_0(recipe_file: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cli = [
        "-m",
        "wavediff.cli",
        "train-ae",
        recipe_file,
        "--out",
        run_dir,
        "-q",
        "--set",
        "train.steps=100000",
        "--set",
        "data.num_workers=1",
    ]  # loader workers share the group
    ranks = bare_ranks(cli)
    try:
        deadline = time.monotonic() + TIMEOUT
        while latest_checkpoint(run_dir) is None:
            assert all(r.poll() is None for r in ranks), finish(ranks)
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        os.killpg(ranks[0].pid, signal.SIGTERM)
    finally:
        outs = finish(ranks)
    stopped = latest_checkpoint(run_dir)
    step = step_of(stopped)
    assert step >= 3 and f"SIGTERM: saved the checkpoint at step {step}, stopping" in outs[0]
    for rank, out in enumerate(outs):
        assert f"process {rank} of 2 on cpu:0: trained from step 0 to step {step}" in out
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    state = stopped / "accelerate"
    assert json.loads((state / "engine.json").read_text())["step"] == step
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in state.iterdir()}


def test_a_loader_dying_of_the_signal_on_one_rank_stops_both_cleanly(recipe_file: Path, tmp_path: Path):
    (tmp_path / "child.py").write_text(_DYING_LOADER_CHILD)
    run_dir = tmp_path / "run"
    outs = finish(bare_ranks([tmp_path / "child.py", recipe_file, run_dir]))
    stopped = latest_checkpoint(run_dir)
    assert step_of(stopped) == 4 and "SIGUSR1: saved the checkpoint at step 4, stopping" in outs[0]
    assert outs[0].strip().endswith(str(stopped))
    assert "process 1 of 2 on cpu:0: trained from step 0 to step 4" in outs[1]
    assert json.loads((stopped / "accelerate" / "engine.json").read_text())["step"] == 4


def test_job_array_parts_cover_every_input_once(recipe_file: Path, tmp_path: Path) -> None:
    """What slurm/shard.sbatch and encode.sbatch split by: every file / shard in exactly one task."""
    assert [part_range(i, 3, 8) for i in range(3)] == [(0, 2), (2, 5), (5, 8)]
    with pytest.raises(ValueError, match="only 2 input shards to split, so use at most 2 tasks"):
        part_range(0, 3, 2)
    source = recipe_file.parent / "src"
    options = ShardOptions(sample_rate=SR, channels=1, workers=1, val_fraction=0.5)
    single = shard([source], tmp_path / "single", options, progress=False)
    for i in range(3):  # 3 parts of 4 files: one part has one file
        shard([source], tmp_path / "merged", options, progress=False, part=(i, 3))
    with pytest.raises(FileNotFoundError, match=r"parts 1/2 are not finished"):
        shard([source], tmp_path / "half", options, progress=False, part=(0, 2))
        merge_parts(tmp_path / "half")
    merged = merge_parts(tmp_path / "merged")
    assert read_manifest(tmp_path / "merged") == merged and merged.parts == 3
    for split in ("train", "val"):
        assert merged.splits[split].samples == single.splits[split].samples
    assert (merged.files, merged.genres, merged.bpm) == (single.files, single.genres, single.bpm)
    assert not (tmp_path / "merged" / "parts").exists()
