"""Fault injection: a training run killed (SIGKILL) at each rename and fsync of its checkpoint
save leaves the checkpoint before it whole, byte for byte, and running it again completes with
the weights of a run that was never killed.

strace counts the renames and fsyncs the save makes, then kills a fresh copy of the run at each
one in turn (`-e inject=SYSCALL:signal=KILL:when=N`, counted per syscall and per thread, as the
count is), so every point of the commit path is hit whatever the C library calls them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipes import tiny_ae_data, tiny_ae_recipe

from wavediff.config import AERecipe, load_recipe
from wavediff.models.checkpoint import latest_checkpoint, unreadable_state_file
from wavediff.models.factory import load_model
from wavediff.training.autoencoder import train_autoencoder

STRACE = shutil.which("strace")
SYSCALLS = ("rename", "renameat", "renameat2", "fsync", "fdatasync")
SR = 8000

pytestmark = [
    pytest.mark.skipif(STRACE is None, reason="needs strace (apt-get install strace) to kill a run at a syscall"),
    pytest.mark.slow,  # about ten training processes
]

# Prints its pid (to tell its own syscalls from its threads'), trains to step argv[3], prints the checkpoint.
_CHILD = """
import os, sys
print(os.getpid(), flush=True)
from wavediff.config import AERecipe, load_recipe
from wavediff.training.autoencoder import train_autoencoder
recipe = load_recipe(sys.argv[1], AERecipe)
print(train_autoencoder(recipe, sys.argv[2], max_steps=int(sys.argv[3]), progress=False), flush=True)
"""


def traced(run_dir: Path, recipe: Path, *strace_args: str) -> subprocess.CompletedProcess:
    """The run, resumed to step 2 under strace with `strace_args`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc renames
    cmd = [STRACE, "-f", "-qq", *strace_args, sys.executable, "-c", _CHILD, str(recipe), str(run_dir), "2"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def whole(checkpoint: Path) -> None:
    load_model(checkpoint)
    assert unreadable_state_file(checkpoint / "accelerate") is None, checkpoint
    assert (checkpoint / "accelerate" / "engine.json").is_file(), checkpoint


def test_a_run_killed_at_any_rename_or_fsync_of_a_save_loses_nothing(tmp_path: Path) -> None:
    shards = tiny_ae_data(tmp_path / "data", SR, seed=5)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_ae_recipe(SR, shards).replace("checkpoint_every = 3", "checkpoint_every = 1"))
    base = tmp_path / "base"
    assert train_autoencoder(load_recipe(recipe, AERecipe), base, max_steps=1, progress=False).name == "step-000001"
    before = digests(base / "checkpoints" / "step-000001")

    # the uninterrupted save of step 2, with every rename and fsync of the training thread counted
    counted = tmp_path / "counted"
    shutil.copytree(base, counted)
    log = tmp_path / "syscalls.log"
    done = traced(counted, recipe, "--seccomp-bpf", "-e", f"trace={','.join(SYSCALLS)}", "-o", str(log))
    assert done.returncode == 0, done.stderr
    pid = re.search(r"^(\d+)$", done.stdout, flags=re.MULTILINE).group(1)  # the child's first line
    traced_log = log.read_text()
    # strace pads the pid column to 5 characters: a 4-digit pid (a fresh container) is followed by 2 spaces
    calls = re.findall(rf"^{pid} +({'|'.join(SYSCALLS)})\(", traced_log, flags=re.MULTILINE)
    points = [(name, calls[: i + 1].count(name)) for i, name in enumerate(calls)]
    seen = f"pid {pid}; stdout {done.stdout[:300]!r}; strace log {traced_log[:600]!r}"
    assert sum(name.startswith("rename") for name, _ in points) >= 3, seen  # staging folder, config, latest
    reference = load_file(str(counted / "checkpoints" / "step-000002" / "accelerate" / "model.safetensors"))

    for name, n in points:
        where = f"killed at {name} #{n}"
        run_dir = tmp_path / f"{name}-{n}"
        shutil.copytree(base, run_dir)
        inject = f"inject={name}:signal=KILL:when={n}"
        killed = traced(run_dir, recipe, "-o", "/dev/null", "-e", f"trace={name}", "-e", inject)
        assert killed.returncode in (-9, 137), f"{where}: {killed.returncode} {killed.stderr}"
        previous = run_dir / "checkpoints" / "step-000001"
        assert digests(previous) == before, where
        whole(previous)
        whole(latest_checkpoint(run_dir))
        # run again (as SLURM would requeue it): it takes the dead run's folder over and finishes
        again = train_autoencoder(load_recipe(recipe, AERecipe), run_dir, max_steps=2, progress=False)
        assert again.name == "step-000002", where
        whole(again)
        trained = load_file(str(again / "accelerate" / "model.safetensors"))
        assert all(torch.equal(trained[k], reference[k]) for k in reference), where
        assert not [p.name for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name], where
