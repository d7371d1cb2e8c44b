"""FSDP training with 2 real processes on CPU (gloo), launched with the shipped FSDP config.

accelerate 1.15 applies an FSDP config on accelerator devices only: on CPUs it runs replicated
data parallelism instead. So the child process here (and only here) lets accelerate take its
gloo CPU processes for a GPU group; all that follows is accelerate's and torch's real FSDP2 path
(fully_shard, sharded optimizer, clipping over shards, torch.distributed.checkpoint) driving the
engine as `accelerate launch --config_file recipes/accelerate/fsdp-8-gpus.yaml -m wavediff.cli
train` does on GPUs. The model is a tiny latent denoiser with its frozen autoencoder: every class
the shipped config wraps is in it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wavediff.config import DiffusionRecipe, load_recipe
from wavediff.models.checkpoint import latest_checkpoint, load_checkpoint
from wavediff.models.factory import build_model, load_model
from wavediff.training.diffusion import train_diffusion
from wavediff.training.engine import TrainingError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG = ROOT / "recipes" / "accelerate" / "fsdp-8-gpus.yaml"
TIMEOUT = 150  # seconds for any one launch: a hung collective fails the test instead of the suite

TINY = [
    "sample_rate=8000",
    "data.sample_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "model.base_channels=8",
    "model.channel_mults=[1, 2]",
    "model.attention_levels=[1]",
    "model.head_channels=8",
    "conditioning.dim=16",
    "conditioning.text=false",  # no sentence encoder to load in every process
    "model.cross_attention=false",
    "train.steps=6",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "train.sample_every=3",
    "train.optimizer.warmup_steps=0",
    "train.cpu=false",  # FSDP needs a non-CPU accelerator (see _CHILD)
]

# accelerate enables FSDP only for accelerator process groups: declare these gloo CPU processes one
# (the device stays the CPU: ACCELERATE_TORCH_DEVICE in launch's environment).
_CHILD = """
import sys
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from wavediff.cli import main

PartialState._prepare_backend = lambda self, *args, **kwargs: ("gloo", DistributedType.MULTI_GPU)
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str | Path | int]) -> str:
    """stdout of a launch that must exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_TORCH_DEVICE": "cpu"}
    done = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def overrides(pack: dict) -> list[str]:
    return [f'data.path="{pack["latents"]}"', f'autoencoder="{pack["ae"]}"', *TINY]


def train_args(pack: dict, run_dir: Path, *extra: str) -> list[str | Path]:
    sets = [arg for s in overrides(pack) for arg in ("--set", s)]
    return ["train", "loops-tiny-cpu", *sets, "--out", run_dir, "-q", *extra]


def fsdp_train(child: Path, pack: dict, run_dir: Path, *extra: str, processes: int = 2) -> str:
    return launch(
        [
            BIN / "accelerate",
            "launch",
            "--config_file",
            CONFIG,
            "--num_processes",
            processes,
            "--main_process_port",
            free_port(),
            child,
            *train_args(pack, run_dir, *extra),
        ]
    )


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def at_step_3(run_dir: Path, copy: Path) -> Path:
    """A copy of a finished 6-step run as it was when stopped at step 3."""
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / "step-000006")
    (copy / "checkpoints" / "latest").write_text("step-000003\n")
    return copy


def grad_norms(run_dir: Path) -> list[float]:
    return [e.value for e in EventAccumulator(str(run_dir / "logs")).Reload().Scalars("grad_norm/denoiser")]


@pytest.fixture(scope="module")
def straight(latent_pack, tmp_path_factory) -> tuple[Path, Path, str]:
    """(child script, run folder, stdout) of a 6-step FSDP run of 2 processes, checkpoints at 3 and 6."""
    root = tmp_path_factory.mktemp("fsdp")
    child = root / "child.py"
    child.write_text(_CHILD)
    out = fsdp_train(child, latent_pack, root / "run")
    return child, root / "run", out


def test_fsdp_shards_training_state_and_exports_the_full_ema(straight) -> None:
    _, run_dir, out = straight
    assert "FSDP: no audio examples during training" in out
    assert "process 1 of 2 on cpu: trained from step 0 to step 6" in out
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step-000003", "step-000006"]
    ckpt = latest_checkpoint(run_dir)
    state_dir = ckpt / "accelerate"
    assert json.loads((state_dir / "engine.json").read_text())["fsdp"] is True
    assert (state_dir / "pytorch_model_fsdp_0").is_dir() and (state_dir / "optimizer_0").is_dir()  # sharded
    assert not (state_dir / "model.safetensors").exists()
    # the export has every key, at its full shape, that the unsharded model has: what a DDP run writes
    config, state = load_checkpoint(ckpt)
    full = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == full
    before = load_checkpoint(ckpt.with_name("step-000003"))[1]
    assert any(not torch.equal(state[k], before[k]) for k in state)  # the EMA went on after step 3
    load_model(ckpt)  # what `wavediff generate` loads


def test_fsdp_resumes_in_two_processes_exactly_as_it_ran_straight(straight, latent_pack, tmp_path) -> None:
    child, run_dir, _ = straight
    stopped = at_step_3(run_dir, tmp_path / "run")
    out = fsdp_train(child, latent_pack, stopped)
    assert f"resuming {stopped / 'checkpoints' / 'step-000003'} at step 3" in out
    assert "process 1 of 2 on cpu: trained from step 3 to step 6" in out
    resumed = load_file(str(latest_checkpoint(stopped) / "model.safetensors"))
    expected = load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_an_fsdp_checkpoint_does_not_resume_without_fsdp(straight, latent_pack, tmp_path) -> None:
    stopped = at_step_3(straight[1], tmp_path / "run")
    recipe = load_recipe("loops-tiny-cpu", DiffusionRecipe, overrides(latent_pack))
    with pytest.raises(TrainingError, match="sharded by FSDP, so it resumes only under FSDP"):
        train_diffusion(recipe, stopped, progress=False)
    assert step_of(latest_checkpoint(stopped)) == 3


@pytest.mark.slow
def test_fsdp_trains_as_ddp_does(straight, latent_pack, tmp_path) -> None:
    """Same weights, batches and noise per process: the sharded EMA and the clipped gradient norm
    over shards must be DDP's, up to the order of float sums."""
    run_dir = straight[1]
    launch(
        [
            BIN / "torchrun",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "wavediff.cli",
            *train_args(latent_pack, tmp_path / "ddp", "--set", "train.cpu=true", "--max-steps", "3"),
        ]
    )
    ddp = load_file(str(tmp_path / "ddp" / "checkpoints" / "step-000003" / "model.safetensors"))
    fsdp = load_file(str(run_dir / "checkpoints" / "step-000003" / "model.safetensors"))
    assert fsdp.keys() == ddp.keys()
    for key in fsdp:
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-5, atol=1e-6, msg=key)
    assert grad_norms(tmp_path / "ddp") == pytest.approx(grad_norms(run_dir)[:3], rel=1e-5)


@pytest.mark.slow
def test_an_fsdp_checkpoint_resumes_in_one_fsdp_process(straight, latent_pack, tmp_path) -> None:
    child, run_dir, _ = straight
    stopped = at_step_3(run_dir, tmp_path / "run")
    out = fsdp_train(child, latent_pack, stopped, processes=1)
    assert f"resuming {stopped / 'checkpoints' / 'step-000003'} at step 3" in out
    assert "process 0 of 1 on cpu: trained from step 3 to step 6" in out
    assert step_of(latest_checkpoint(stopped)) == 6
    load_model(stopped)


@pytest.mark.slow
def test_fsdp_trains_in_bf16_and_exports_float32_weights(straight, latent_pack, tmp_path) -> None:
    """FSDP's mixed precision casts the parameters to bf16: the float32 group norms must still run."""
    child = straight[0]
    out = fsdp_train(child, latent_pack, tmp_path / "run", "--set", 'train.mixed_precision="bf16"', "--max-steps", "3")
    assert "process 1 of 2 on cpu: trained from step 0 to step 3" in out
    _, state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert {t.dtype for t in state.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in state.values())
