"""`wavediff demo`: the whole pipeline on the built-in loop pack, sized for a laptop CPU.

Each stage writes into its own folder under OUT and is skipped when its output is
already complete, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import json

import torch

from data_tools.inspect import format_manifest, inspect_shards
from data_tools.shard import ShardOptions, shard
from data_tools.synth import synthesize_pack
from wavediff.checkpoint import CONFIG_FILE, latest_checkpoint
from wavediff.config import AERecipe, load_recipe
from wavediff.encode import encode_shards
from wavediff.evaluate import evaluate_autoencoder, reconstruct_file
from wavediff.files import atomic_write_json
from wavediff.shards import MANIFEST_NAME, read_manifest
from wavediff.training.autoencoder import train_autoencoder

DEMO_SAMPLE_RATE = 16000
DEMO_CHANNELS = 1
DEMO_LOOPS_PER_GENRE = 12
AE_RECIPE = "ae-tiny-cpu"


def _stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def make_demo_shards(out: Path, progress: bool = True) -> Path:
    """Synthesize the pack and shard it; returns the shard folder."""
    pack, shards = out / "pack", out / "shards"
    if (shards / MANIFEST_NAME).exists():
        _stage(f"shards already in {shards}")
        return shards
    _stage(f"synthesizing the built-in loop pack into {pack}")
    files = synthesize_pack(
        pack, loops_per_genre=DEMO_LOOPS_PER_GENRE, sample_rate=DEMO_SAMPLE_RATE, seed=0, progress=progress
    )
    print(f"{len(files)} loops")
    _stage(f"sharding {pack} into {shards}")
    options = ShardOptions(
        sample_rate=DEMO_SAMPLE_RATE, channels=DEMO_CHANNELS, max_seconds=None, val_fraction=0.1, workers=2
    )
    shard([pack], shards, options, progress=progress)
    return shards


def train_demo_autoencoder(out: Path, shards: Path, ae_steps: int | None, progress: bool = True) -> Path:
    """Train (or resume, or reuse) the tiny autoencoder; returns its last checkpoint."""
    overrides = [f"data.path={json.dumps(str(shards))}"]
    if ae_steps is not None:
        overrides.append(f"train.steps={ae_steps}")
    recipe = load_recipe(AE_RECIPE, AERecipe, overrides)
    run = out / "ae"
    last = latest_checkpoint(run)
    if last is not None and json.loads((last / CONFIG_FILE).read_text())["step"] >= recipe.train.steps:
        _stage(f"autoencoder already trained: {last}")
        return last
    _stage(f"training the {AE_RECIPE} autoencoder ({recipe.train.steps} steps) in {run}")
    return train_autoencoder(recipe, run, progress=progress)


def run_demo(out: str | Path, ae_steps: int | None = None, progress: bool = True) -> Path:
    """Run every stage of the demo into `out`; returns `out`.

    `ae_steps` overrides the autoencoder recipe's step count (tests use a few).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Tiny models on few cores: one thread avoids hand-off costs larger than the maths.
    torch.set_num_threads(1)
    shards = make_demo_shards(out, progress)
    _stage(f"inspecting {shards}")
    report = inspect_shards(shards, progress=progress)
    print(format_manifest(read_manifest(shards), report))
    if not report["ok"]:
        raise ValueError(f"{shards}: the demo's own shards failed inspection")

    ae = train_demo_autoencoder(out, shards, ae_steps, progress)
    _stage(f"encoding {shards} into latent shards")
    latents = out / "latents"
    manifest = encode_shards(ae, shards, latents, progress=progress)
    print(f"{latents}: {manifest['latent_dim']} channels at {manifest['latent_rate']:.1f} frames/s")

    _stage("autoencoder quality on the val split")
    quality = evaluate_autoencoder(ae, shards, split="val")
    atomic_write_json(out / "ae-eval.json", quality)
    print(f"MR-STFT {quality['stft']:.3f}   mel {quality['mel']:.3f}   SI-SDR {quality['si_sdr']:.2f} dB")
    loop = sorted((out / "pack").rglob("*.wav"))[0]
    print(f"round trip of {loop.name}: {reconstruct_file(ae, loop, out / 'reconstructions' / loop.name)}")
    return out
