"""Key and text conditioning on the demo's data: what they cost in training and what a short run gives.

    .venv/bin/python benchmarks/bench_key_text.py --demo demo-out [--steps 600] [--timing-steps 40]

Reads DEMO/latents, DEMO/ae, DEMO/shards and DEMO/classifier (a finished `wavediff demo`).

- Cost: training steps per second of the demo's denoiser recipe (loops-tiny-cpu) as shipped
  (key and text on) and with both off (the recipe before them), in alternating runs of
  `--timing-steps` steps, so load from other jobs falls on both alike.
- Quality: the recipe trained for `--steps` steps (cosine schedule ending there), then per genre
  loops at reference tempos asked for a key from a seeded cycle of the 24:
  key accuracy (librosa chroma + Krumhansl–Kessler, evaluation.keys) with --key, and of the same
  loops' asked keys when generated without --key (chance level: 1/24); tempo hits (evaluation.loops)
  with genre + tempo only and with genre + tempo + key + prompt; prompt adherence (the demo's
  genre classifier on loops made from the genre's name alone).
Writes the "Key and text" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.config import DiffusionRecipe, load_recipe  # noqa: E402
from wavediff.evaluation.clips import shard_clips  # noqa: E402
from wavediff.evaluation.keys import key_report  # noqa: E402
from wavediff.evaluation.loops import loop_report  # noqa: E402
from wavediff.evaluation.suite import prompt_adherence  # noqa: E402
from wavediff.generation.generate import generate  # noqa: E402
from wavediff.io.keys import KEYS  # noqa: E402
from wavediff.io.prompts import key_words  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint  # noqa: E402
from wavediff.models.factory import load_classifier, load_denoiser  # noqa: E402
from wavediff.training.diffusion import train_diffusion  # noqa: E402

OFF = ["conditioning.key=false", "conditioning.text=false", "model.cross_attention=false"]


def recipe(demo: Path, steps: int, extra: list[str]) -> DiffusionRecipe:
    paths = [f'data.path="{demo / "latents"}"', f'autoencoder="{demo / "ae"}"']
    sets = [f"train.steps={steps}", f"train.checkpoint_every={steps}", "train.sample_every=0", "train.log_every=10"]
    return load_recipe("loops-tiny-cpu", DiffusionRecipe, paths + sets + extra)


def timed(demo: Path, steps: int, extra: list[str]) -> float:
    """Steps per second of a fresh run of `steps` steps (start-up included, as a demo pays it)."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train_diffusion(recipe(demo, steps, extra), Path(tmp) / "run", progress=False)
        return steps / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, default=Path("demo-out"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--timing-steps", type=int, default=40)
    p.add_argument("--per-genre", type=int, default=4)
    p.add_argument("--sampler-steps", type=int, default=25)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-key-text")
    args = p.parse_args()
    date = datetime.date.today().isoformat()

    rates = {"on": [], "off": []}
    for _ in range(2):
        for name, extra in (("off", OFF), ("on", [])):
            rates[name].append(timed(args.demo, args.timing_steps, extra))
    on, off = float(np.median(rates["on"])), float(np.median(rates["off"]))
    print(f"steps/s: key+text {rates['on']}, neither {rates['off']}", flush=True)

    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    train_diffusion(recipe(args.demo, args.steps, []), args.out / "denoiser", progress=False)
    trained = time.perf_counter() - started
    model = load_denoiser(latest_checkpoint(args.out / "denoiser"), "cpu")
    judge = load_classifier(args.demo / "classifier")
    reference = [c for c in shard_clips(args.demo / "shards", "all") if c.loop and c.bpm and c.bars]
    settings = dataclasses.replace(model.recipe.sampling, steps=args.sampler_steps)
    keys = np.random.default_rng(0).permutation(len(KEYS))
    with_key, without_key, plain, conditioned = [], [], [], []
    i = 0
    for genre in model.conditioner.genres:
        pool = [c for c in reference if c.genre == genre]
        for k in range(args.per_genre):
            clip, key = pool[k % len(pool)], KEYS[keys[i % len(KEYS)]]
            i += 1
            common = {"genre": genre, "bpm": clip.bpm, "bars": clip.bars, "seed": i, "settings": settings}
            keyed, _ = generate(model, key=key, **common)
            bare, _ = generate(model, **common)
            prompt = f"{genre}, {clip.bpm:.0f} bpm, {key_words(KEYS.index(key))}"
            worded, _ = generate(model, key=key, prompt=prompt, **common)
            with_key.append((KEYS.index(key), keyed[0], model.sample_rate))
            without_key.append((KEYS.index(key), bare[0], model.sample_rate))
            plain.append((bare[0], model.sample_rate, clip.bpm, clip.bars))
            conditioned.append((worded[0], model.sample_rate, clip.bpm, clip.bars))
            print(f"{genre} {clip.bpm} {key}", flush=True)
    keyed_report, bare_report = key_report(with_key), key_report(without_key)
    tempo_plain = loop_report(plain)["tempo_fraction"]
    tempo_cond = loop_report(conditioned)["tempo_fraction"]
    adherence = prompt_adherence(model, judge, reference, model.conditioner.genres, args.per_genre, settings, 10_000)

    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    def tempo(t: dict) -> str:
        return " / ".join(pct(t[k]) for k in ("exact", "double", "half", "miss"))

    n = len(with_key)
    text = f"""## Key and text

{date}, {machine()}; shared CPU: other jobs ran on the same 2 cores throughout, so rates are
rough. `python benchmarks/bench_key_text.py --demo DEMO --steps {args.steps}` on a `wavediff demo`'s
autoencoder, latents and genre classifier (DEMO's own denoiser not used).

Training cost of the demo's denoiser recipe, steps per second (median of 2 runs of {args.timing_steps} steps each,
start-up and the sentence encoder's loading included): key + text {on:.2f}, neither {off:.2f}
({on / off:.2f}×).

The recipe (key and text on) trained for {args.steps} steps ({trained / 60:.1f} min), {n} loops
({args.per_genre} per genre, reference tempos and lengths, {args.sampler_steps} dpmpp-2m steps, CFG 3):

| measure | with the condition | without | target |
| --- | --- | --- | --- |
| key accuracy, exact key (librosa chroma + key profiles) | {pct(keyed_report["exact"])} (--key) | {pct(bare_report["exact"])} (no --key; chance {pct(keyed_report["chance"])}) | ≥ 90% |
| key: tonic right / mode right / heard as the relative key | {pct(keyed_report["tonic"])} / {pct(keyed_report["mode"])} / {pct(keyed_report["relative"])} | {pct(bare_report["tonic"])} / {pct(bare_report["mode"])} / {pct(bare_report["relative"])} | |
| tempo within 4 % / double / half / miss | {tempo(tempo_cond)} (--key and --prompt) | {tempo(tempo_plain)} (genre and tempo only) | not lower |
| prompt adherence (classifier on loops from the genre's name alone) | {pct(adherence["genre"])} of {adherence["loops"]} | | ≥ 80% |

Keys heard with --key: {", ".join(str(k) for k in keyed_report["estimated"])}.
Prompt adherence per genre: {", ".join(f"{g} {pct(v)}" for g, v in adherence["per_genre"].items())}.
"""
    print(text)
    write_section("Key and text", text)


if __name__ == "__main__":
    main()
