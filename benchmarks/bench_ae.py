"""Autoencoder speed and quality on this machine: training throughput, then what a short run reconstructs.

    .venv/bin/python benchmarks/bench_ae.py [--quick] [--steps N]

(1) Training throughput: audio seconds per wall second of training steps, each a forward,
    backward and optimizer step with the full objective the engine runs
    (wavediff.training.autoencoder: MR-STFT + mel + KL, hinge and feature-matching losses
    against the multi-scale STFT discriminator, generator and discriminator steps alternating
    from step 0). Two configs: the tiny CPU recipe (recipes/ae-tiny-cpu.toml when it exists,
    else 16 kHz mono, base 16, strides 2,4,8, 16 latents, 16384-sample crops, batch 8) and the
    44.1 kHz default (Stable Audio Open's VAE size, batch 1, 65536 samples; a few steps only).
    The first steps (allocation, weight-norm caches) are run untimed where the budget allows.
(2) Quality: the tiny recipe trained with `train_autoencoder` for a fixed number of steps on
    the built-in loop pack (data_tools.synth, sharded at 16 kHz mono), then `evaluate_autoencoder`
    on the pack's val split: MR-STFT distance, mel distance, SI-SDR — against the same model
    untrained, so the numbers have a floor to read against. Then `encode_shards` speed with it.

Prints the figures and writes them to the "Autoencoder" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.shard import ShardOptions, shard  # noqa: E402
from data_tools.synth import synthesize_pack  # noqa: E402
from wavediff.config import AELossConfig, AERecipe, AutoencoderConfig, DataConfig, load_recipe, to_dict  # noqa: E402
from wavediff.evaluation.reconstruction import evaluate_autoencoder
from wavediff.latents.encode import encode_shards
from wavediff.models.blocks import count_parameters  # noqa: E402
from wavediff.models.checkpoint import save_checkpoint
from wavediff.training.autoencoder import AutoencoderObjective, train_autoencoder  # noqa: E402
from wavediff.training.engine import make_optimizer  # noqa: E402

TINY_RECIPE = ROOT / "recipes" / "ae-tiny-cpu.toml"


def tiny_recipe() -> tuple[AERecipe, str]:
    if TINY_RECIPE.is_file():
        return load_recipe(TINY_RECIPE, AERecipe), TINY_RECIPE.relative_to(ROOT).as_posix()
    model = AutoencoderConfig(channels=1, base_channels=16, channel_mults=[1, 2, 4], strides=[2, 4, 8], latent_dim=16)
    recipe = AERecipe(sample_rate=16000, data=DataConfig(sample_size=16384, batch_size=8), model=model)
    return recipe, "AutoencoderConfig values (16 kHz mono, base 16, strides 2,4,8, 16 latents)"


def with_discriminator(recipe: AERecipe) -> AERecipe:
    """The recipe with the adversarial and feature-matching terms at their stable-audio-tools weights."""
    full = AELossConfig()
    loss = dataclasses.replace(
        recipe.loss, adversarial_weight=full.adversarial_weight, feature_weight=full.feature_weight, adversarial_start=0
    )
    return dataclasses.replace(recipe, loss=loss)


def big_recipe() -> AERecipe:
    return AERecipe(sample_rate=44100, data=DataConfig(sample_size=65536, batch_size=1))


def throughput(recipe: AERecipe, warmup: int, steps: int) -> dict[str, float]:
    """Audio seconds per second over `steps` timed training steps (after `warmup` untimed ones)."""
    torch.manual_seed(0)
    objective = AutoencoderObjective(recipe)
    nets = objective.networks()
    optimizers = {
        name: make_optimizer(cfg, nets[target].parameters()) for name, (target, cfg) in objective.optimizers().items()
    }
    b, c, n = recipe.data.batch_size, recipe.model.channels, recipe.data.sample_size
    t = torch.arange(n) / recipe.sample_rate
    x = (0.3 * torch.sin(2 * torch.pi * 110 * t) + 0.05 * torch.randn(b, c, n)).float()  # what it is hardly matters
    times: dict[str, list[float]] = {}
    for step in range(warmup + steps):
        name = objective.optimizer_for(step)
        start = time.perf_counter()
        loss, _ = objective.loss(name, nets, {"audio": x}, step)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        if step >= warmup:
            times.setdefault(name, []).append(time.perf_counter() - start)
    seconds = b * n / recipe.sample_rate
    total = sum(sum(v) for v in times.values())
    result = {
        "params_m": count_parameters(objective.model) / 1e6,
        "batch_seconds": seconds,
        "audio_s_per_s": seconds * steps / total,
    }
    result.update({f"{name}_step_s": sum(v) / len(v) for name, v in times.items()})
    print(f"  {result}", flush=True)
    return result


def quality(recipe: AERecipe, steps: int, loops_per_genre: int, tmp: Path) -> dict[str, object]:
    """Train the tiny AE for `steps` steps on the loop pack; metrics before and after, encode speed."""
    synthesize_pack(tmp / "loops", loops_per_genre=loops_per_genre, sample_rate=recipe.sample_rate)
    options = ShardOptions(
        sample_rate=recipe.sample_rate, channels=recipe.model.channels, val_fraction=0.25, workers=2, shard_size_mb=4.0
    )
    manifest = shard([tmp / "loops"], tmp / "shards", options, progress=False)
    recipe = dataclasses.replace(
        recipe,
        data=dataclasses.replace(recipe.data, path=str(tmp / "shards"), num_workers=1),
        train=dataclasses.replace(
            recipe.train,
            steps=steps,
            checkpoint_every=steps,
            log_every=max(steps // 10, 1),
            sample_every=0,
            cpu=True,
            optimizer=dataclasses.replace(
                recipe.train.optimizer, warmup_steps=min(recipe.train.optimizer.warmup_steps, steps // 5)
            ),
        ),
    )
    torch.manual_seed(recipe.train.seed)
    untrained = AutoencoderObjective(recipe).model
    floor = save_checkpoint(
        tmp / "untrained", 0, untrained.state_dict(), {"kind": "autoencoder", "recipe": to_dict(recipe)}
    )
    before = evaluate_autoencoder(floor, tmp / "shards", device="cpu")
    print(f"  untrained: {before}", flush=True)
    start = time.perf_counter()
    ckpt = train_autoencoder(recipe, tmp / "run", progress=False)
    train_s = time.perf_counter() - start
    after = evaluate_autoencoder(ckpt, tmp / "shards", device="cpu")
    print(f"  after {steps} steps ({train_s:.0f} s): {after}", flush=True)
    start = time.perf_counter()
    encoded = encode_shards(ckpt, tmp / "shards", tmp / "latents", device="cpu", progress=False)
    encode_s = time.perf_counter() - start
    audio_s = sum(s.seconds for s in encoded.splits.values())
    print(f"  encode: {audio_s:.0f} audio s in {encode_s:.1f} s", flush=True)
    return {
        "splits": {name: {"samples": s.samples} for name, s in manifest.splits.items()},
        "before": before,
        "after": after,
        "train_s": train_s,
        "encode_rate": audio_s / encode_s,
        "audio_s": audio_s,
        "stats": encoded["stats"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewest steps (a smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="training steps for the quality run")
    args = parser.parse_args()
    where = machine()  # before our own work loads the CPU
    steps = args.steps or (4 if args.quick else 30)
    loops_per_genre = 1 if args.quick else 4
    tiny, tiny_source = tiny_recipe()

    print(f"quality: tiny recipe, {steps} steps on the loop pack", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        q = quality(tiny, steps, loops_per_genre, Path(tmp))
    print("training throughput, tiny recipe as written", flush=True)
    plain = throughput(tiny, warmup=2, steps=2 if args.quick else 4)
    print("training throughput, tiny recipe with the discriminator on", flush=True)
    small = throughput(with_discriminator(tiny), warmup=2, steps=2 if args.quick else 4)
    print("training throughput, 44.1 kHz default", flush=True)
    big = throughput(big_recipe(), warmup=0, steps=2)

    command = (
        "python benchmarks/bench_ae.py"
        + (" --quick" if args.quick else "")
        + (f" --steps {args.steps}" if args.steps else "")
    )
    b, a = q["before"], q["after"]
    batch = tiny.data.batch_size
    text = f"""## Autoencoder

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}.
Training steps are forward + backward + optimizer with the full objective (MR-STFT, mel, KL, hinge +
feature matching against the multi-scale STFT discriminator), generator and discriminator steps
alternating; audio seconds per wall second over the timed steps. Tiny: {tiny_source}.

| training throughput | params | batch | generator step | discriminator step | audio s/s |
|---|---|---|---|---|---|
| tiny as written (no discriminator), 16 kHz mono, {tiny.data.sample_size} samples | {plain["params_m"]:.2f} M | {batch} × {plain["batch_seconds"] / batch:.2f} s | {plain.get("generator_step_s", float("nan")):.1f} s | — | {plain["audio_s_per_s"]:.2f} |
| tiny + discriminator (adv 0.1, feature 5.0 from step 0) | {small["params_m"]:.2f} M | {batch} × {small["batch_seconds"] / batch:.2f} s | {small.get("generator_step_s", float("nan")):.1f} s | {small.get("discriminator_step_s", float("nan")):.1f} s | {small["audio_s_per_s"]:.2f} |
| 44.1 kHz stereo default, 65536 samples (2 steps, no warm-up: first-step cost included) | {big["params_m"]:.1f} M | 1 × {big["batch_seconds"]:.2f} s | {big.get("generator_step_s", float("nan")):.1f} s | {big.get("discriminator_step_s", float("nan")):.1f} s | {big["audio_s_per_s"]:.3f} |

Reconstruction of the tiny AE (recipe as written, warm-up cut to fit) trained {steps} steps ({q["train_s"]:.0f} s, batch {batch}) with `train_autoencoder` on the
built-in loop pack ({loops_per_genre} loops per genre at 16 kHz mono: {q["splits"]["train"]["samples"]} train / {q["splits"]["val"]["samples"]} val samples),
measured by `evaluate_autoencoder` on the val split (lower is better for STFT and mel, higher for SI-SDR):

| model | MR-STFT | mel | SI-SDR (dB) |
|---|---|---|---|
| untrained (same init) | {b["stft"]:.2f} | {b["mel"]:.2f} | {b["si_sdr"]:.2f} |
| after {steps} steps | {a["stft"]:.2f} | {a["mel"]:.2f} | {a["si_sdr"]:.2f} |
| for scale: Stable Audio Open VAE, trained (Song Describer) | 1.29 | 0.77 | 6.28 |

Encoding the pack to latent shards with it (`encode_shards`, CPU): {q["encode_rate"]:.0f} audio s/s
({q["audio_s"]:.0f} s of audio); latent overall std {q["stats"]["overall_std"]:.3f}.
"""
    print(text)
    print(f"wrote {write_section('Autoencoder', text)}")


if __name__ == "__main__":
    main()
