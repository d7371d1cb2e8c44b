"""The 44.1 kHz stereo CPU recipes (ae-44k-cpu, loops-44k-cpu), shrunk to tiny widths but keeping
their rate, channels and loss settings: they train, resume exactly, and run in 2 processes (gloo)
as the tiny 16 kHz recipes do (tests/test_train_ae.py, tests/test_distributed.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny_recipes import same_weights

from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack
from wavediff.config import AERecipe, DiffusionRecipe, load_recipe
from wavediff.latents.encode import encode_shards
from wavediff.models.checkpoint import latest_checkpoint
from wavediff.training.autoencoder import train_autoencoder
from wavediff.training.diffusion import train_diffusion

ROOT = Path(__file__).resolve().parent.parent
SR = 44100
# Tiny widths and windows; rate, stereo, strides' style and every loss setting stay the recipe's.
TINY_AE = [
    "data.sample_size=2048",  # the loss's largest FFT size
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "model.base_channels=2",
    "model.latent_dim=4",
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.sample_every=0",
]
TINY_LOOPS = [
    "data.sample_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "model.base_channels=8",
    "model.channel_mults=[1, 2, 2]",
    "model.attention_levels=[1, 2]",
    "model.head_channels=8",
    "conditioning.dim=16",
    "sampling.steps=2",
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.sample_every=0",
]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> dict[str, Path]:
    """44.1 kHz stereo shards of 4 one-bar loops, a tiny ae-44k-cpu trained 4 steps, its latents."""
    root = tmp_path_factory.mktemp("cpu44k")
    synthesize_pack(root / "src", genres=["techno", "house"], loops_per_genre=2, sample_rate=SR, bars=1, seed=1)
    options = ShardOptions(sample_rate=SR, channels=2, workers=1, val_fraction=0.0)
    shard([root / "src"], root / "shards", options, progress=False)
    ae = train_autoencoder(ae_recipe(root / "shards"), root / "ae", progress=False)
    encode_shards(ae, root / "shards", root / "latents", batch_size=2, progress=False)
    return {"root": root, "shards": root / "shards", "ae": root / "ae", "latents": root / "latents"}


def ae_recipe(shards: Path) -> AERecipe:
    return load_recipe("ae-44k-cpu", AERecipe, [f'data.path="{shards}"', *TINY_AE])


def loops_recipe(pack: dict[str, Path]) -> DiffusionRecipe:
    paths = [f'data.path="{pack["latents"]}"', f'autoencoder="{pack["ae"]}"']
    return load_recipe("loops-44k-cpu", DiffusionRecipe, paths + TINY_LOOPS)


def two_processes(command: str, recipe: str, overrides: list[str], out: Path, *extra: str) -> str:
    """Run `wavediff COMMAND` on the shipped recipe in 2 processes (torchrun, gloo); its stdout."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "wavediff.cli", command, str(ROOT / "recipes" / f"{recipe}.toml"), *sets, "--out", str(out), "-q"]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_recipes_keep_44k_stereo_and_their_loss_when_shrunk(pack) -> None:
    ae, loops = ae_recipe(pack["shards"]), loops_recipe(pack)
    assert (ae.sample_rate, ae.model.channels, ae.model.strides) == (SR, 2, [2, 4, 4, 8])
    assert ae.loss.mid_side and ae.loss.waveform_weight > 0 and ae.data.augment.channel_swap
    assert loops.sample_rate == SR and loops.model.padding == "circular"


def test_the_autoencoder_resumes_exactly(pack, tmp_path) -> None:
    recipe = ae_recipe(pack["shards"])
    half = train_autoencoder(recipe, tmp_path / "resumed", max_steps=2, progress=False)
    resumed = train_autoencoder(recipe, tmp_path / "resumed", progress=False)
    assert half.name == "step-000002" and resumed.name == "step-000004"
    assert same_weights(resumed, latest_checkpoint(pack["ae"]))
    assert not same_weights(half, resumed)


def test_the_denoiser_resumes_exactly(pack, tmp_path) -> None:
    recipe = loops_recipe(pack)
    straight = train_diffusion(recipe, tmp_path / "straight", progress=False)
    train_diffusion(recipe, tmp_path / "resumed", max_steps=2, progress=False)
    resumed = train_diffusion(recipe, tmp_path / "resumed", progress=False)
    assert straight.name == resumed.name == "step-000004" and same_weights(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ae", "loops"])
def test_two_processes_train_and_resume_exactly(pack, tmp_path, kind) -> None:
    if kind == "ae":
        command, recipe, overrides = "train-ae", "ae-44k-cpu", [f'data.path="{pack["shards"]}"', *TINY_AE]
    else:
        paths = [f'data.path="{pack["latents"]}"', f'autoencoder="{pack["ae"]}"']
        command, recipe, overrides = "train", "loops-44k-cpu", paths + TINY_LOOPS
    two_processes(command, recipe, overrides, tmp_path / "straight")
    two_processes(command, recipe, overrides, tmp_path / "resumed", "--max-steps", "2")
    out = two_processes(command, recipe, overrides, tmp_path / "resumed")
    assert "process 1 of 2 on cpu:0: trained from step 2 to step 4" in out
    straight, resumed = latest_checkpoint(tmp_path / "straight"), latest_checkpoint(tmp_path / "resumed")
    assert straight.name == resumed.name == "step-000004" and same_weights(straight, resumed)
