"""Tiny recipes the tests share: the autoencoder recipe (and its data) that the multi-process
and SLURM tests launch as a file (as users do), the overrides that shrink a denoiser, and the
check that two runs' checkpoints hold the same weights."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack

_TINY_AE = """
kind = "autoencoder"
sample_rate = {sr}
[data]
path = "{shards}"
sample_size = 2048
batch_size = 2
num_workers = {num_workers}
shuffle_buffer = 4
[model]
channels = 1
base_channels = 4
channel_mults = [1, 2]
strides = [2, 4]
latent_dim = 4
[loss]
fft_sizes = [512, 128, 32]
mid_side = false
mel_fft_sizes = [512]
mel_bins = 16
adversarial_weight = 0.0
feature_weight = 0.0
[train]
steps = 6
cpu = true
lr_scaling = "{lr_scaling}"
checkpoint_every = 3
log_every = 1
sample_every = 0
[train.optimizer]
lr = {lr}
schedule = "constant"
"""


def tiny_ae_recipe(sr: int, shards: Path, *, num_workers: int = 0, lr_scaling: str = "none", lr: float = 1e-3) -> str:
    """A 6-step autoencoder recipe on `shards` (mono at `sr`), checkpoints at steps 3 and 6."""
    return _TINY_AE.format(sr=sr, shards=shards, num_workers=num_workers, lr_scaling=lr_scaling, lr=lr)


def tiny_ae_data(root: Path, sr: int, seed: int) -> Path:
    """root/shards: 4 one-bar loops (2 techno, 2 house) at `sr`, mono, all in the train split."""
    synthesize_pack(root / "src", genres=["techno", "house"], loops_per_genre=2, sample_rate=sr, bars=1, seed=seed)
    shard(
        [root / "src"],
        root / "shards",
        ShardOptions(sample_rate=sr, channels=1, workers=1, val_fraction=0.0),
        progress=False,
    )
    return root / "shards"


# `--set` overrides that shrink loops-tiny-cpu to an 8 kHz denoiser of a few thousand weights;
# each test adds its own step, sampling and logging settings.
TINY_DENOISER = [
    "sample_rate=8000",
    "data.sample_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "model.base_channels=8",
    "model.channel_mults=[1, 2]",
    "model.attention_levels=[1]",
    "model.head_channels=8",
    "conditioning.dim=16",
    # No prompt: loading the sentence encoder costs seconds per test process (tests/test_text.py turns it on).
    "conditioning.text=false",
    "model.cross_attention=false",
]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold bit-identical exported (EMA) and trained weights."""
    for name in ("model.safetensors", "accelerate/model.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        if x.keys() != y.keys() or any(not x[k].equal(y[k]) for k in x):
            return False
    return True
