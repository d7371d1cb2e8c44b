"""What the demo's loops achieve: tempo hits and seams of generated loops against the training loops.

    .venv/bin/python benchmarks/bench_loops.py [--demo demo-out] [--per-genre 4] [--bars 4]

Run after `wavediff demo` (it reads DEMO/denoiser and DEMO/pack). For each genre of the
model, loops at `--per-genre` tempos spread over that genre's range in the built-in pack
(data_tools.synth.GENRES), one seed each, with the checkpoint's sampling settings; then
wavediff.evaluation.loops.loop_report on them and on every training loop of the pack:

- tempo: estimated blind (onset autocorrelation, fixed prior) and compared with the asked
  tempo within 4 %; octave errors (double/half) are counted apart, as the estimator makes
  them on correct loops too (drum-and-bass reads at half tempo);
- seam: the sample jump at the wrap over the median jump at the bar lines inside the loop
  (1 means the wrap is as smooth as a bar line of the same loop).

A circular generation and a plain cut (`circular=False`) are both measured, so the table
shows what seamless generation buys. Writes the "Demo loops" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.synth import GENRES  # noqa: E402
from wavediff.evaluation.loops import loop_report
from wavediff.generation.generate import generate
from wavediff.io import audio
from wavediff.models.checkpoint import read_raw_config, resolve_checkpoint
from wavediff.models.factory import load_denoiser


def training_loops(pack: Path, sample_rate: int, channels: int) -> list[tuple[torch.Tensor, int, float, int]]:
    items = []
    for path in sorted(pack.rglob("*.json")):
        meta = json.loads(path.read_text())
        wav, sr = audio.load(path.with_suffix(".wav"), sample_rate, channels)
        items.append((wav, sr, float(meta["bpm"]), int(meta["bars"])))
    return items


def generated_loops(model, per_genre: int, bars: int, circular: bool) -> tuple[list, float, float]:
    """(loop_report items, audio seconds made, wall seconds taken)."""
    items, made, started = [], 0.0, time.perf_counter()
    for g, genre in enumerate(model.conditioner.genres):
        low, high = GENRES[genre].bpm
        for k, bpm in enumerate(np.linspace(low, high, per_genre)):
            bpm = round(float(bpm), 1)
            loops, info = generate(model, genre=genre, bpm=bpm, bars=bars, seed=100 * g + k, circular=circular)
            items.append((loops[0], info["sample_rate"], bpm, bars))
            made += info["seconds"]
    return items, made, time.perf_counter() - started


def row(name: str, report: dict) -> str:
    t = report["tempo_fraction"]
    seam = "n/a" if report["seam_ratio"] is None else f"{report['seam_ratio']:.2f}"
    return (
        f"| {name} | {report['loops']} | {t['exact']:.0%} | {t['double']:.0%} | {t['half']:.0%} | "
        f"{t['miss']:.0%} | {report['seam_wrap']:.2f} | {seam} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--per-genre", type=int, default=4)
    parser.add_argument("--bars", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = machine()
    ckpt = resolve_checkpoint(args.demo / "denoiser")
    step = read_raw_config(ckpt)["step"]
    model = load_denoiser(ckpt, "cpu")
    circular, made, wall = generated_loops(model, args.per_genre, args.bars, circular=True)
    cut, _, _ = generated_loops(model, args.per_genre, args.bars, circular=False)
    reports = {
        "generated, circular (default)": loop_report(circular),
        "generated, cut (--no-circular)": loop_report(cut),
        "training loops of the pack": loop_report(
            training_loops(args.demo / "pack", model.sample_rate, model.audio_channels)
        ),
    }
    for name, r in reports.items():
        print(name, json.dumps(r))
    settings = model.recipe.sampling
    text = "\n".join(
        [
            "## Demo loops",
            "",
            f"{datetime.date.today()}, {started}. `python benchmarks/bench_loops.py --per-genre {args.per_genre} "
            f"--bars {args.bars}` after `wavediff demo` (its denoiser at step {step}). {args.per_genre} tempos per genre across its range, {args.bars} bars, "
            f"{settings.sampler} {settings.steps} steps, CFG {settings.cfg_scale:g}; sampling ran at "
            f"{made / wall:.2f} audio seconds per second on 1 thread.",
            "",
            "| loops | n | tempo within 4 % | double | half | miss | wrap jump (median) | seam ratio (median) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *(row(name, r) for name, r in reports.items()),
            "",
            "Tempo is estimated blind from the audio. Wrap jump = the sample step from the last sample to the "
            "first, in mean sample steps of the loop (about 1: no click); seam ratio = that jump over the median "
            "jump at the loop's bar lines (1: the wrap is as smooth as a bar line).",
            "",
        ]
    )
    print(text)
    write_section("Demo loops", text)


if __name__ == "__main__":
    main()
