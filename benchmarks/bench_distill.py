"""Few-step generation: the eval suite's quality against sampler steps, for the teacher and distilled students.

    .venv/bin/python benchmarks/bench_distill.py [--demo demo-out] [--train-steps 200] [--n 12] [--only teacher]

Run after `wavediff demo` (it reads DEMO/denoiser, DEMO/shards and, when there, DEMO/classifier).
(1) Students distilled from the demo's denoiser with `wavediff.pipelines.distill.distill` and
    recipes/distill-cpu.toml (its step budget set by --train-steps): progressive distillation to
    8 and 4 steps (--students picks). Runs already
    finished in OUT are reused, and so is every eval report (OUT/eval/), so parts run apart
    (`--only teacher`, `--only students --students NAME`) make one table when run again whole.
(2) The eval suite (wavediff.evaluation.suite.evaluate_model) on each: the teacher at 50, 25, 8 and
    4 steps (its own sampler and guidance), the undistilled start (the teacher at 4 steps, Euler,
    no guidance: what a student begins as), and every student at its own settings. FD on
    log-mel and MFCC frames against the demo shards, tempo hits, seam ratio, genre adherence
    (with the demo's classifier), and wall seconds per loop.

torch runs on one thread (the machine is shared). Prints the table and writes it to the
"Few-step" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from wavediff.evaluation.suite import evaluate_model  # noqa: E402
from wavediff.generation.generate import generate  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint, read_config, resolve_checkpoint  # noqa: E402
from wavediff.models.factory import load_denoiser  # noqa: E402
from wavediff.pipelines.distill import distill  # noqa: E402

RECIPE = ROOT / "recipes" / "distill-cpu.toml"
STEPS_OF: dict[str, int] = {}  # timing row → its steps
STUDENTS = {"progressive-8": 8, "progressive-4": 4}  # name → the student's steps


def train_students(teacher: Path, out: Path, names: list[str], train_steps: int) -> dict[str, tuple[Path, float]]:
    """{name: (checkpoint, training minutes)}; a finished run is reused (its minutes from its first pass)."""
    done = {}
    for name in names:
        steps = STUDENTS[name]
        run = out / name
        timing = run / "minutes.json"
        last = latest_checkpoint(run)
        if last is None or read_config(last).step < train_steps or not timing.is_file():
            started = time.perf_counter()
            last = distill(
                teacher,
                steps=steps,
                out=run,
                recipe=RECIPE,
                overrides=[f"train.steps={train_steps}", f"train.checkpoint_every={train_steps}"],
                progress=False,
            )
            timing.write_text(json.dumps({"minutes": (time.perf_counter() - started) / 60}))
        done[name] = (last, json.loads(timing.read_text())["minutes"])
    return done


def row(name: str, steps: int, report: dict, base_fd: float | None) -> str:
    overall = report["overall"]
    fd, loops = overall["fd"], overall["loops"]["generated"]
    seam = "n/a" if loops["seam_ratio"] is None else f"{loops['seam_ratio']:.2f}"
    ratio = f"{fd['logmel'] / base_fd:.2f}" if base_fd else "1.00"
    genre = f"{overall['genre_adherence']:.0%}" if "genre_adherence" in overall else "n/a"
    return (
        f"| {name} | {steps} | {report['settings']['cfg_scale']:g} | {fd['logmel']:.0f} | {ratio} | {fd['mfcc']:.0f} | "
        f"{loops['exact']:.0%} | {loops['exact'] + loops['double'] + loops['half']:.0%} | {seam} | {genre} |"
    )


def loop_seconds(runs: dict[str, tuple[Path, dict]], repeats: int = 3) -> dict[str, tuple[float, int]]:
    """{name: (median wall seconds, U-Net passes)} for one 4-bar loop at 128 BPM, the runs taken in turns
    so the shared machine's load falls on all alike."""
    models = {name: (load_denoiser(ckpt, "cpu"), settings) for name, (ckpt, settings) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    passes = {}
    for _ in range(repeats):
        for name, (model, given) in models.items():
            settings = dataclasses.replace(model.recipe.sampling, **given)
            genre = model.conditioner.genres[0]
            started = time.perf_counter()
            _, info = generate(model, genre=genre, bpm=128, bars=4, settings=settings)
            times[name].append(time.perf_counter() - started)
            passes[name] = info["model_evaluations"] * (2 if settings.cfg_scale != 1 else 1)
    return {name: (statistics.median(t), passes[name]) for name, t in times.items()}


def rows_wanted(students: list[str]) -> dict[str, tuple[int, dict]]:
    """Row name → (steps, evaluate_model settings); students are evaluated at their own settings."""
    rows = {f"teacher {s}": (s, {}) for s in (50, 25, 8, 4)}
    rows["teacher 4, Euler, no guidance (a student's start)"] = (4, {"cfg_scale": 1.0, "sampler": "euler"})
    rows.update({f"student: {name}": (STUDENTS[name], {}) for name in students})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--out", type=Path, default=None, help="student runs and eval reports (default: DEMO/distill)")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--students", default=",".join(STUDENTS), help=f"of {', '.join(STUDENTS)}")
    parser.add_argument("--n", type=int, default=12, help="loops per eval (2 per condition)")
    parser.add_argument(
        "--only", default=None, help="'teacher' or 'students': that part alone (parts run apart can share OUT)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = machine()
    out = args.out or args.demo / "distill"
    teacher = resolve_checkpoint(args.demo / "denoiser")
    classifier = args.demo / "classifier" if latest_checkpoint(args.demo / "classifier") else None
    names = args.students.split(",")
    students = {} if args.only == "teacher" else train_students(teacher, out, names, args.train_steps)
    reports = {}
    for name, (steps, settings) in rows_wanted(names).items():
        if (args.only == "teacher") != name.startswith("teacher") and args.only is not None:
            continue
        path = out / "eval" / f"{re.sub('[^a-z0-9]+', '-', name.lower()).strip('-')}.json"
        if not path.is_file():
            ckpt = students[name.removeprefix("student: ")][0] if name.startswith("student") else teacher
            report = evaluate_model(
                ckpt, args.demo / "shards", n=args.n, steps=steps, classifier=classifier, device="cpu", **settings
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report))
        reports[name] = (steps, json.loads(path.read_text()))
        print(name, steps, json.dumps({k: reports[name][1]["overall"][k] for k in ("fd", "loops")}), flush=True)
    if args.only is not None:
        return
    base_fd = reports["teacher 50"][1]["overall"]["fd"]["logmel"]
    timed = {f"teacher {s}": (teacher, {"steps": s}) for s in (50, 8, 4)}
    timed.update({f"student: {name}": (ckpt, {}) for name, (ckpt, _) in students.items()})
    STEPS_OF.update({f"teacher {s}": s for s in (50, 8, 4)} | {f"student: {n}": STUDENTS[n] for n in students})
    timings = loop_seconds(timed)
    step = read_config(teacher).step
    trained = ", ".join(f"{name} {minutes:.1f} min" for name, (_, minutes) in students.items())
    text = "\n".join(
        [
            "## Few-step",
            "",
            f"{datetime.date.today()}, {started}; the machine was shared with other agents' jobs, so times "
            "are loose. `python benchmarks/bench_distill.py "
            f"--train-steps {args.train_steps} --n {args.n}` (teacher: {teacher}, step {step}). "
            f"Students: recipes/distill-cpu.toml, {args.train_steps} steps each ({trained}). Each row is the eval "
            f"suite on {args.n} loops (2 per condition, the shards' genres, tempos and lengths) against the "
            "shards; FD ratio is log-mel FD over the 50-step teacher's (target ≤ 1.10).",
            "",
            "| model | steps | cfg | FD log-mel | FD ratio | FD MFCC | tempo within 4 % | tempo incl. double/half | "
            "seam ratio | genre ok |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *(
                row(name, steps, report, base_fd if i else None)
                for i, (name, (steps, report)) in enumerate(reports.items())
            ),
            "",
            "Time for one 4-bar loop at 128 BPM (7.5 s of audio), sampling and decoding, 1 thread, median of 3 "
            "taken in turns:",
            "",
            "| model | steps | U-Net passes (a guided step is 2) | s per loop | × faster than the 50-step teacher |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {STEPS_OF[name]} | {p} | {t:.2f} | {timings['teacher 50'][0] / t:.1f} |"
                for name, (t, p) in timings.items()
            ),
            "",
        ]
    )
    print(text)
    write_section("Few-step", text)


if __name__ == "__main__":
    main()
