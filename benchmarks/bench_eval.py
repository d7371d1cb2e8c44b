"""The eval suite on the demo checkpoint, and how its numbers move with sampler steps and CFG scale.

    .venv/bin/python benchmarks/bench_eval.py [--demo demo-out] [--n 12] [--report-n 24]

Run after `wavediff demo` (it reads DEMO/denoiser and DEMO/shards). First it trains the genre
classifier on the demo shards unless DEMO/classifier holds one (`wavediff train-classifier`,
default recipe, ~1–2 min on 2 cores), then:

- the full report: `wavediff eval` with `--report-n` loops at 50 steps and the checkpoint's
  CFG, written to DEMO/eval/report.json with its spectrogram grid beside it;
- a sweep over sampler steps (10, 25, 50, 100) at the checkpoint's CFG scale, and over CFG
  scale (1, 3, 6) at 25 steps, `--n` loops per setting (the same conditions and seeds
  each time, so only the setting changes).

The default run (n = 12 per setting: two loops per genre, one condition each with 2 seeds;
24 in the full report) took under 4 minutes on 2 CPU cores with the tiny demo denoiser.
Writes the "Evaluation" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.config import ClassifierRecipe  # noqa: E402
from wavediff.evaluation.report import format_report
from wavediff.evaluation.suite import evaluate_model
from wavediff.io.files import atomic_write_json
from wavediff.models.checkpoint import latest_checkpoint, read_raw_config, resolve_checkpoint
from wavediff.training.classifier import train_classifier  # noqa: E402

STEPS = (10, 25, 50, 100)
CFG_SCALES = (1.0, 3.0, 6.0)
CFG_STEPS = 25


def classifier_run(demo: Path) -> Path:
    run = demo / "classifier"
    if latest_checkpoint(run) is None:
        recipe = ClassifierRecipe()
        recipe.data.path = str(demo / "shards")
        recipe.train.cpu = True
        _, report = train_classifier(recipe, run)
        print(f"classifier val accuracy {report['accuracy']:.0%} on {report['samples']} clips")
    return run


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def sweep_row(label: str, report: dict) -> str:
    m = report["overall"]
    gen = m["loops"]["generated"]
    seam = _number(gen["seam_ratio"])
    adherence = m.get("genre_adherence")
    return (
        f"| {label} | {m['fd']['logmel']:.0f} | {m['fd']['mfcc']:.0f} | {m['kid']['logmel']['mean']:.3g} | "
        f"{gen['exact']:.0%} | {gen['double'] + gen['half']:.0%} | {seam} | "
        f"{_number(m['diversity']['generated_same_condition'])} | "
        f"{'n/a' if adherence is None else f'{adherence:.0%}'} | {report['seconds']['generating']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--n", type=int, default=12, help="loops per sweep setting")
    parser.add_argument("--report-n", type=int, default=24, help="loops of the full report")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started_on, started = machine(), time.perf_counter()
    ckpt = resolve_checkpoint(args.demo / "denoiser")
    step = read_raw_config(ckpt)["step"]
    shards, judge, out = args.demo / "shards", classifier_run(args.demo), args.demo / "eval"
    common = {"classifier": judge, "per_condition": 2}

    full = evaluate_model(ckpt, shards, n=args.report_n, steps=50, grid=out / "report.png", **common)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", full)
    print(format_report(full))
    cfg = full["settings"]["cfg_scale"]
    rows = []
    for steps in STEPS:
        r = evaluate_model(ckpt, shards, n=args.n, steps=steps, **common)
        rows.append(sweep_row(f"{steps} steps, CFG {cfg:g}", r))
        print(rows[-1], flush=True)
    for scale in CFG_SCALES:
        r = evaluate_model(ckpt, shards, n=args.n, steps=CFG_STEPS, cfg_scale=scale, **common)
        rows.append(sweep_row(f"{CFG_STEPS} steps, CFG {scale:g}", r))
        print(rows[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    text = "\n".join(
        [
            "## Evaluation",
            "",
            f"{datetime.date.today()}, {started_on}. `python benchmarks/bench_eval.py --n {args.n} --report-n "
            f"{args.report_n}` after `wavediff demo` (denoiser `{ckpt}` at step {step}; reference: the demo "
            f"shards, both splits; genre classifier trained on them); {minutes:.1f} min in all.",
            "",
            f"The full report (`wavediff eval DEMO/denoiser --ref DEMO/shards --n {args.report_n} --steps 50 "
            "--classifier DEMO/classifier`):",
            "",
            "```",
            format_report(full),
            "```",
            "",
            f"How the overall numbers move with the sampler settings ({full['settings']['sampler']}, "
            f"{args.n} loops per row: the same conditions and seeds in every row):",
            "",
            "| setting | FD log-mel | FD MFCC | KID log-mel | tempo exact | tempo double/half | seam ratio | "
            "diversity (same condition, dB) | genre adherence | generating (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "FD and KID are on frame statistics of the audio (no pretrained network), so they are not comparable "
            "with published FAD numbers; compare them only between rows and checkpoints measured against the same "
            "reference. With a dozen loops per row, differences of a few percent in the shares are one loop.",
            "",
        ]
    )
    print(text)
    write_section("Evaluation", text)


if __name__ == "__main__":
    main()
