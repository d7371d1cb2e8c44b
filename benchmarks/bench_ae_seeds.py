"""An autoencoder recipe's reconstruction across seeds, beside the field's figures.

    .venv/bin/python benchmarks/bench_ae_seeds.py --shards DEMO/shards --runs runs/ae-seeds \
        [--recipe ae-44k-cpu] [--seeds 0 1 2] [--reuse 0=DEMO/ae] [--steps N]

Trains the recipe once per seed on the shards (`--set train.seed=N`; every other setting as
written), each in its own run folder under --runs, then measures each run's last checkpoint with
`evaluate_autoencoder` on the val split: MR-STFT distance, mel distance, SI-SDR. A run that is
already finished is only measured, an unfinished one resumes, so the benchmark can be stopped
and run again (it takes about an hour per seed for ae-44k-cpu on 2 cores). `--reuse SEED=RUN`
measures a finished run trained elsewhere with that seed (the demo's autoencoder is seed 0).

Writes the "Autoencoder across seeds (RECIPE)" section of BENCHMARKS.md: each seed, the mean and
the spread (max − min), how long each seed's training ran here, and the figures issue 15
quotes for the field. Those were measured on other music (Stable Audio Open's on Song
Describer) at other compression rates, so they give scale, not a ranking.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.allocator import reuse_freed_memory  # noqa: E402
from wavediff.config import AERecipe, load_recipe  # noqa: E402
from wavediff.evaluation.reconstruction import evaluate_autoencoder  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint, read_raw_config  # noqa: E402
from wavediff.training.autoencoder import train_autoencoder  # noqa: E402

# (model and its latent rate, MR-STFT, mel, SI-SDR dB): the figures issue 15 quotes
FIELD = (
    ("Stable Audio Open's VAE (2048× hop, 64 channels at 21.5 Hz; Song Describer)", 1.29, 0.77, 6.28),
    ("DAC (44.1 kHz codec)", 0.96, 0.53, 11.3),
)


def step_of(checkpoint: Path) -> int:
    return read_raw_config(checkpoint)["step"]


def trained(recipe: AERecipe, run: Path, progress: bool) -> tuple[Path, float]:
    """The run's last checkpoint once it reaches the recipe's steps, and the minutes trained here."""
    last = latest_checkpoint(run)
    if last is not None and step_of(last) >= recipe.train.steps:
        return last, 0.0
    start = time.perf_counter()
    last = train_autoencoder(recipe, run, progress=progress)
    minutes = (time.perf_counter() - start) / 60
    if step_of(last) < recipe.train.steps:
        sys.exit(f"{run}: stopped at step {step_of(last)} of {recipe.train.steps}; run the benchmark again to resume")
    return last, minutes


def parse_reuse(items: list[str]) -> dict[int, Path]:
    reuse = {}
    for item in items:
        seed, sep, run = item.partition("=")
        if not sep or not seed.isdigit():
            sys.exit(f"--reuse takes SEED=RUN, got {item!r}")
        reuse[int(seed)] = Path(run)
    return reuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ae-44k-cpu")
    parser.add_argument("--shards", type=Path, required=True, help="audio shards at the recipe's rate and channels")
    parser.add_argument("--runs", type=Path, required=True, help="a folder for the seeds' run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reuse", nargs="*", default=[], metavar="SEED=RUN", help="a finished run for a seed")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps (a smoke run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    reuse_freed_memory()  # as `wavediff train-ae` trains
    where = machine()
    reuse = parse_reuse(args.reuse)
    rows, results = [], {}
    for seed in args.seeds:
        overrides = [f"data.path={json.dumps(str(args.shards))}", f"train.seed={seed}"]
        overrides += [f"train.steps={args.steps}"] if args.steps else []
        recipe = load_recipe(args.recipe, AERecipe, overrides)
        if seed in reuse:
            last = latest_checkpoint(reuse[seed])
            if last is None or step_of(last) < recipe.train.steps:
                sys.exit(f"{reuse[seed]}: not a finished run of {recipe.train.steps} steps")
            minutes, where_trained = 0.0, f"`{reuse[seed]}`"
        else:
            last, minutes = trained(recipe, args.runs / f"seed-{seed}", progress=not args.quiet)
            where_trained = f"{minutes:.1f} min here" if minutes else "finished before this run"
        print(f"seed {seed}: evaluating {last}", flush=True)
        results[seed] = evaluate_autoencoder(last, args.shards, split="val")
        r = results[seed]
        rows.append(f"| {seed} | {r['stft']:.3f} | {r['mel']:.3f} | {r['si_sdr']:.2f} | {where_trained} |")
        print(rows[-1], flush=True)
    for name, pick in (("mean", statistics.fmean), ("spread (max − min)", lambda v: max(v) - min(v))):
        values = [pick([results[s][m] for s in args.seeds]) for m in ("stft", "mel", "si_sdr")]
        rows.append(f"| {name} | {values[0]:.3f} | {values[1]:.3f} | {values[2]:.2f} | |")
    model = recipe.model
    hop = math.prod(model.strides)
    rate = recipe.sample_rate / hop
    fewer = hop * model.channels / model.latent_dim
    samples = next(iter(results.values()))["samples"]
    field = "\n".join(f"| {name} | {stft} | {mel} | {sdr} | |" for name, stft, mel, sdr in FIELD)
    command = f"python benchmarks/bench_ae_seeds.py --recipe {args.recipe} --seeds {' '.join(map(str, args.seeds))}"
    command += f" --steps {args.steps}" if args.steps else ""
    text = f"""## Autoencoder across seeds ({args.recipe})

`{command}` — {datetime.date.today()}, {where}.
recipes/{args.recipe}.toml ({recipe.train.steps} steps, {recipe.sample_rate} Hz, {model.channels} channel(s);
{model.latent_dim} latent channels at {rate:.1f} frames/s: {fewer:.0f}× fewer numbers than the audio) trained once per
seed on `{args.shards}`, the last checkpoint's EMA weights measured on its val split ({samples} clips) by
`evaluate_autoencoder` (lower MR-STFT and mel are better, higher SI-SDR).

| seed | MR-STFT | mel | SI-SDR (dB) | trained |
|---|---|---|---|---|
{chr(10).join(rows)}
{field}
"""
    print(text)
    print(f"wrote {write_section(f'Autoencoder across seeds ({args.recipe})', text)}")


if __name__ == "__main__":
    main()
