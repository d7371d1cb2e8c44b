"""An untagged pack against the same pack tagged: does `wavediff finetune` on loops nobody labelled
yield loops at the asked tempo as often?

    .venv/bin/python benchmarks/bench_untagged.py [--quick] [--ae demo-out/ae] [--base-steps N] [--steps N]

(1) A base denoiser, as benchmarks/bench_finetune.py makes it: recipes/loops-tiny-cpu.toml trained on
    five genres of the built-in pack (16 kHz mono), house held back. Its autoencoder is the demo's
    (`--ae`, demo-out/ae); when there is none, the demo's autoencoder stage is run here
    (recipes/ae-tiny-cpu.toml on the demo pack, `--ae-steps`).
(2) A pack of house loops (data_tools.synth, seed 1: loops the base never heard), written twice:
    tagged as the synth writes it (`house_003_124bpm_Am.wav` and a JSON sidecar with bpm, bars and
    key), and untagged (`loop_003.wav` in a plain folder, no sidecar, no metadata.csv), so its
    tempo, bars and kind come from data_tools.analysis. Both are fine-tuned with
    `wavediff.pipelines.finetune.finetune` (recipes/finetune-cpu.toml, --genre house, the same
    steps and seed; the held-out split goes by content hash, so it is the same loops).
(3) Each fine-tuned model is judged by the eval suite (`evaluate_model`, what `wavediff eval`
    runs) against the same reference: the tagged pack's shards, so both are asked for the same
    tempos and bar counts with the same seeds. Reported: tempo hits (the generated loop's blind
    tempo estimate within 4 % of the asked, or at double or half), FD and KID on log-mel frames,
    the seam ratio; and how the untagged pack's estimates compare with the true tags.

torch runs on one thread (the machine is shared). Prints the figures and writes them to the
"Untagged fine-tuning" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_finetune import HELD_BACK, SAMPLE_RATE, VAL_FRACTION, run_overrides, train_base  # noqa: E402
from report import machine, write_section  # noqa: E402

from data_tools.synth import GENRES, synthesize_pack  # noqa: E402
from wavediff.evaluation.suite import evaluate_model  # noqa: E402
from wavediff.models.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: E402
from wavediff.pipelines.demo import make_demo_shards, train_demo_autoencoder  # noqa: E402
from wavediff.pipelines.finetune import finetune  # noqa: E402
from wavediff.shards.format import read_manifest, shard_paths  # noqa: E402


def write_packs(folder: Path, loops: int) -> dict[str, dict]:
    """folder/tagged (the synth's names and sidecars) and folder/untagged (plain names, audio only);
    returns the truth by untagged file name."""
    tagged = folder / "tagged"
    paths = synthesize_pack(tagged, genres=[HELD_BACK], loops_per_genre=loops, sample_rate=SAMPLE_RATE, seed=1)
    truth = {}
    for i, path in enumerate(sorted(paths)):
        plain = folder / "untagged" / "loops" / f"loop_{i:03d}.wav"
        plain.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, plain)
        meta = json.loads(path.with_suffix(".json").read_text())
        truth[f"loops/{plain.name}"] = {"bpm": float(meta["bpm"]), "bars": int(meta["bars"])}
    return truth


def shard_samples(audio: Path) -> dict[str, dict]:
    """Every sample's JSON in an audio shard folder, by source path (the first chunk of each)."""
    found: dict[str, dict] = {}
    manifest = read_manifest(audio)
    for split in manifest.splits:
        for path in shard_paths(audio, manifest, split):
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        info = json.loads(tar.extractfile(member).read())
                        found.setdefault(info["source"], info)
    return found


def estimates_row(run: Path, truth: dict[str, dict]) -> dict[str, object]:
    """How the untagged run's shards read the pack: tempo and bars right, null, wrong (within 2 %)."""
    audio = next((run / "data").glob("pack-*/audio"))
    found = shard_samples(audio)
    right = bars = nulls = 0
    wrong = []
    for name, true in truth.items():
        info = found[name]
        if info.get("bpm") is None:
            nulls += 1
        elif abs(info["bpm"] / true["bpm"] - 1) <= 0.02:
            right += 1
        else:
            wrong.append(f"{name} {info['bpm']:g} (true {true['bpm']:g})")
        bars += info.get("bars") == true["bars"]
    sources = read_manifest(audio).metadata_sources.get("bpm", {})
    return {"loops": len(truth), "right": right, "bars": bars, "null": nulls, "wrong": wrong, "sources": sources}


def run_pack(base: Path, pack: Path, out: Path, steps: int, checks: int) -> tuple[Path, float]:
    overrides = run_overrides(steps, checks)
    print(f"fine-tuning on {pack}: {steps} steps", flush=True)
    start = time.perf_counter()
    ckpt = finetune(base, pack, genre=HELD_BACK, steps=steps, out=out, overrides=overrides, progress=False)
    reached = load_checkpoint(ckpt)[0].step
    if reached != steps:  # a SIGTERM makes the engine save and stop early: the runs would not compare
        raise SystemExit(f"{pack}: fine-tuning stopped at step {reached} of {steps}")
    return ckpt, time.perf_counter() - start


def judge(ckpt: Path, reference: Path, per_genre: int, sampler_steps: int) -> dict[str, object]:
    """The eval suite on the house loops: n is split over the model's six genres, and only house
    has reference loops, so n = 6 × per_genre gives per_genre house loops."""
    start = time.perf_counter()
    report = evaluate_model(ckpt, reference, n=per_genre * len(GENRES), steps=sampler_steps, per_condition=2, seed=0)
    house = report["genres"][HELD_BACK]
    return {"report": house, "seconds": time.perf_counter() - start}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewest steps and loops (a smoke run, minutes)")
    parser.add_argument("--ae", default=str(ROOT / "demo-out" / "ae"), help="autoencoder run (16 kHz mono)")
    parser.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps when --ae is missing")
    parser.add_argument("--base-steps", type=int, default=None, help="base denoiser training steps")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps of both runs")
    parser.add_argument("--loops", type=int, default=None, help="loops in the pack")
    parser.add_argument("--n", type=int, default=None, help="house loops generated per model")
    args = parser.parse_args()
    where = machine()  # before our own work loads the CPU
    torch.set_num_threads(1)
    q = args.quick
    ae_steps = args.ae_steps or (20 if q else 600)
    base_steps = args.base_steps or (20 if q else 800)
    steps = args.steps or (10 if q else 300)
    loops = args.loops or (6 if q else 24)
    per_genre = args.n or (2 if q else 24)
    sampler_steps = 5 if q else 25
    checks = 2 if q else 3
    began = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ae_path = Path(args.ae)
        if (ae_path / "checkpoints").is_dir() or (ae_path / "config.json").is_file():
            ae, ae_said = resolve_checkpoint(ae_path), f"the demo's ({args.ae})"
        else:
            print(f"no autoencoder at {args.ae}: training the demo's, {ae_steps} steps", flush=True)
            shards = make_demo_shards(tmp / "demo", progress=False)
            ae = train_demo_autoencoder(tmp / "demo", shards, ae_steps, progress=False)
            ae_said = f"recipes/ae-tiny-cpu.toml trained {ae_steps} steps here on the demo pack"
        ae_config, _ = load_checkpoint(ae)
        if ae_config.recipe.sample_rate != SAMPLE_RATE or ae_config.recipe.model.channels != 1:
            raise SystemExit(f"{args.ae}: the benchmark needs a {SAMPLE_RATE} Hz mono autoencoder (the demo's)")
        base = train_base(ae, 3 if q else 8, base_steps, tmp)
        truth = write_packs(tmp / "packs", loops)
        results = {}
        for name in ("tagged", "untagged"):
            ckpt, wall = run_pack(base, tmp / "packs" / name, tmp / f"run-{name}", steps, checks)
            results[name] = {"wall_s": wall, "ckpt": ckpt}
        reference = next((tmp / "run-tagged" / "data").glob("pack-*/audio"))
        estimates = estimates_row(tmp / "run-untagged", truth)
        print("estimates", json.dumps(estimates), flush=True)
        for name in ("tagged", "untagged"):
            results[name].update(judge(results[name]["ckpt"], reference, per_genre, sampler_steps))
            print(name, f"{results[name]['wall_s']:.0f} s", json.dumps(results[name]["report"]), flush=True)
    total = time.perf_counter() - began

    rows = []
    for name in ("tagged", "untagged"):
        r = results[name]["report"]
        gen = r["loops"]["generated"]
        rows.append(
            f"| {name} | {gen['loops']} | {_pct(gen['exact'])} | {_pct(gen['double'] + gen['half'])}"
            f" | {_pct(gen['miss'])} | {r['fd']['logmel']:.0f} | {r['kid']['logmel']['mean']:.3f}"
            f" | {gen['seam_ratio'] if gen['seam_ratio'] is None else round(gen['seam_ratio'], 2)}"
            f" | {results[name]['wall_s']:.0f} s |"
        )
    ref = results["tagged"]["report"]["loops"]["reference"]
    e = estimates
    command = "python benchmarks/bench_untagged.py" + (" --quick" if q else "")
    given = (("ae-steps", args.ae_steps), ("base-steps", args.base_steps), ("steps", args.steps))
    for flag, value in (*given, ("loops", args.loops), ("n", args.n)):
        command += f" --{flag} {value}" if value is not None else ""
    exact = {n: results[n]["report"]["loops"]["generated"]["exact"] for n in ("tagged", "untagged")}
    verdict = (
        "The untagged pack yields loops at the asked tempo as often as the tagged one"
        if exact["untagged"] >= exact["tagged"]
        else f"The untagged pack falls short: {exact['untagged']:.0%} of its loops at the asked tempo against"
        f" {exact['tagged']:.0%}"
    )
    text = f"""## Untagged fine-tuning

`{command}` — {datetime.date.today()}, {where}, torch {torch.__version__}, 1 thread; {total / 60:.0f} min in all.
Autoencoder: {ae_said}. Base: recipes/loops-tiny-cpu.toml trained {base_steps} steps on {3 if q else 8} loops each of
{", ".join(g for g in GENRES if g != HELD_BACK)} (bench_finetune's base). Pack: {loops} loops of {HELD_BACK} (synth seed 1),
once tagged (tempo and key in the names, JSON sidecars) and once untagged (`loop_000.wav`…, no sidecar), each
fine-tuned with `wavediff finetune --genre {HELD_BACK} --steps {steps}` (recipes/finetune-cpu.toml,
finetune.val_fraction={VAL_FRACTION}, seed 0). The untagged pack's shards got tempo from data_tools.analysis:
{e["right"]}/{e["loops"]} tempos right (within 2 %), {e["bars"]}/{e["loops"]} bar counts right, {e["null"]} left
null, {len(e["wrong"])} wrong{": " + "; ".join(e["wrong"]) if e["wrong"] else ""} (bpm sources {e["sources"]}).
Each model then made {per_genre} {HELD_BACK} loops with the eval suite (`evaluate_model`, {sampler_steps} sampler
steps, 2 seeds per condition) at the tempos and bar counts of the tagged pack's loops, the same for both,
and was measured against those loops. Tempo: the generated loop's blind estimate within 4 % of the asked
tempo (exact), or at double or half; FD and KID on log-mel frames (lower is closer); seam ratio (1: the
wrap is as smooth as a bar line). The pack's own loops score {_pct(ref["exact"])} exact,
{_pct(ref["double"] + ref["half"])} double or half on the same tempo measure.

| pack | loops | tempo exact | double or half | miss | FD log-mel | KID log-mel | seam ratio | fine-tuning wall |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{verdict}. With {per_genre} loops per row, one loop is {1 / per_genre:.0%}.
"""
    print(text)
    print(f"wrote {write_section('Untagged fine-tuning', text)}")


if __name__ == "__main__":
    main()
