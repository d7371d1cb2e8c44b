"""Recorded sounds end to end: what `wavediff demo --pack samples` reaches, judged by ours and by librosa.

    wavediff demo --pack samples [--quality 44k] --out DEMO > DEMO.log
    .venv/bin/python benchmarks/bench_recorded.py --demo DEMO --log DEMO.log [--per-cell 2] [--report REPORT]

Reads a finished demo on the recorded-sample pack (data_tools.sample_pack: hydrogen-drumkits
sequenced, fluidsynth bass and chords, sonic-pi loops; labels true by construction) and reports:

- stages: the minutes each took, from the clock stamped on the demo log's stage headings, and for
  the two trainings their steps and pace from their own event logs (a demo stopped and resumed
  leaves pauses in its log's clock that its trainings' paces leave out);
- the autoencoder on the held-out (val) loops: MR-STFT, mel, SI-SDR (DEMO/ae-eval.json);
- the demo's eval table (DEMO/eval/report.json, or `--report` from a larger `wavediff eval`): tempo
  by our estimator and by librosa's beat tracker, seam, genre by the demo's classifier, diversity,
  Fréchet distances;
- key (issue 16): per genre, bass and melodic loops asked for a key from a seeded cycle of the
  24 (`--role`, `--key`, the pack's tempos and lengths), judged by our chroma judge and by the
  independent one (librosa CENS chroma, Temperley profiles); the same conditions without `--key`
  (chance, 1/24); and both judges on the pack's own bass and melodic loops and on the autoencoder's
  reconstructions of them: the ceilings a generated loop is judged against;
- prompt adherence: loops made from "<genre> <role> loop" alone, judged by the genre and role
  classifiers the demo trained on the pack.
Writes the section "Recorded sounds (QUALITY)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, training_pace, write_section  # noqa: E402

from wavediff.evaluation.clips import Clip, from_metadata  # noqa: E402
from wavediff.evaluation.keys import key_report  # noqa: E402
from wavediff.evaluation.report import format_report  # noqa: E402
from wavediff.evaluation.suite import prompt_adherence  # noqa: E402
from wavediff.generation.generate import generate  # noqa: E402
from wavediff.io.keys import KEYS, key_index  # noqa: E402
from wavediff.models.checkpoint import latest_checkpoint  # noqa: E402
from wavediff.models.factory import load_classifier, load_denoiser  # noqa: E402
from wavediff.shards.format import SPLITS, read_manifest, shard_paths  # noqa: E402
from wavediff.shards.reader import audio_samples  # noqa: E402

PITCHED = ("bass", "melodic")
STAGE = re.compile(r"^== (\d\d):(\d\d):(\d\d) (.*)$")


def stage_minutes(log: Path) -> list[tuple[str, float]]:
    """(heading, minutes until the next heading) from a demo log; the last stage runs to the log's end
    and is left out (the log does not say when it ended)."""
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        if m := STAGE.match(line.strip()):
            h, mi, s, title = m.groups()
            stamps.append((int(h) * 3600 + int(mi) * 60 + int(s), title))
    minutes: dict[str, float] = {}  # a resumed demo repeats its headings: their times add up
    for (at, title), (later, _) in zip(stamps, stamps[1:]):
        minutes[title] = minutes.get(title, 0.0) + ((later - at) % 86400) / 60
    return list(minutes.items())


def pack_loops(shards: Path) -> list[tuple[Clip, int | None]]:
    """Every loop of the shards, read once, with its labelled key class (None where it names none)."""
    manifest = read_manifest(shards, "audio")
    rows = []
    for split in SPLITS:
        for path in shard_paths(shards, manifest, split):
            for key, meta, wav in audio_samples(path, manifest.sample_rate):
                clip = from_metadata(wav, manifest.sample_rate, key, meta)
                if clip.loop:
                    rows.append((clip, key_index(meta["key"]) if meta.get("key") else None))
    return rows


@torch.no_grad()
def reconstructed(model, wav: torch.Tensor) -> torch.Tensor:
    ae = model.autoencoder
    return ae.decode(ae.encode(wav[None].float()), wav.shape[-1])[0]


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def key_cells(report: dict) -> str:
    theirs = report["librosa"]
    return (
        f"{pct(report['exact'])} / {pct(report['tonic'])} / {pct(report['relative'])} | "
        f"{pct(theirs['exact'])} / {pct(theirs['tonic'])} / {pct(theirs['relative'])}"
    )


def generated_keys(model, pack: list[Clip], per_cell: int, settings) -> tuple[dict, dict]:
    """Key reports of loops generated per genre and pitched role, asked for the next key of a seeded
    cycle of the 24, and of the same conditions without the key (scored against the same keys)."""
    keys = np.random.default_rng(0).permutation(len(KEYS))
    with_key, without_key, i = [], [], 0
    for genre in model.conditioner.genres:
        for role in PITCHED:
            pool = [c for c in pack if c.genre == genre and c.role == role] or [c for c in pack if c.role == role]
            for k in range(per_cell):
                bpm, bars = pool[k % len(pool)].bpm, pool[k % len(pool)].bars
                key = KEYS[keys[i % len(KEYS)]]
                i += 1
                common = {"genre": genre, "role": role, "bpm": bpm, "bars": bars, "seed": i, "settings": settings}
                keyed, _ = generate(model, key=key, **common)
                bare, _ = generate(model, **common)
                with_key.append((KEYS.index(key), keyed[0], model.sample_rate))
                without_key.append((KEYS.index(key), bare[0], model.sample_rate))
                print(genre, role, bpm, key, flush=True)
    return key_report(with_key), key_report(without_key)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, required=True)
    p.add_argument("--log", type=Path, help="the demo's stdout, for its stages' times")
    p.add_argument("--per-cell", type=int, default=2, help="loops per genre and pitched role")
    p.add_argument("--sampler-steps", type=int, default=25)
    p.add_argument(
        "--report",
        type=Path,
        help="an eval report of the demo's denoiser (wavediff eval --out); default DEMO/eval/report.json",
    )
    args = p.parse_args()
    demo = args.demo
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    model = load_denoiser(latest_checkpoint(demo / "denoiser"), "cpu")
    quality = f"{model.sample_rate // 1000}k" if model.sample_rate != 44100 else "44k"
    settings = dataclasses.replace(model.recipe.sampling, steps=args.sampler_steps)
    shards = demo / "shards"

    loops = pack_loops(shards)
    pack = [c for c, k in loops if c.role in PITCHED and k is not None]
    keyed = [(k, c.audio, c.sample_rate) for c, k in loops if c.role in PITCHED and k is not None]
    ceiling = key_report(keyed)
    through_ae = key_report([(k, reconstructed(model, wav), sr) for k, wav, sr in keyed])
    print("pack", ceiling["exact"], "through the autoencoder", through_ae["exact"], flush=True)

    cfg = model.conditioner.cfg
    asked = unasked = None
    if cfg.key:
        asked, unasked = generated_keys(model, pack, args.per_cell, settings)
    adherence = None
    if cfg.text:
        adherence = prompt_adherence(
            model,
            load_classifier(demo / "classifier"),
            [c for c, _ in loops],
            model.conditioner.genres,
            args.per_cell,
            settings,
            10_000,
            load_classifier(demo / "role-classifier"),
        )
    ae = json.loads((demo / "ae-eval.json").read_text())
    report = json.loads((args.report or demo / "eval" / "report.json").read_text())
    eval_command = (
        f"`wavediff eval DEMO/denoiser --ref DEMO/shards --n {report['overall']['clips']['generated']} "
        f"--steps {report['settings']['steps']} --classifier DEMO/classifier --role-classifier DEMO/role-classifier "
        "--out REPORT`, then "
        if args.report
        else ""
    )
    stages = [(t, m) for t, m in (stage_minutes(args.log) if args.log else []) if not t.startswith("training the")]
    stage_rows = "\n".join(f"| {title} | {minutes:.1f} |" for title, minutes in stages)
    training_rows = "\n".join(
        f"| {what} (DEMO/{run}) | {steps} | {pace:.2f} | {steps * pace / 60:.0f} |"
        for what, run in (("autoencoder", "ae"), ("denoiser", "denoiser"))
        for steps, pace in [training_pace(demo / run)]
    )
    if asked is None:
        generated_rows = "| generated | — (this denoiser has no key conditioning) | |"
    else:
        generated_rows = (
            f"| generated with `--key` | {key_cells(asked)} |\n"
            f"| generated without `--key` (scored against the same asked keys; chance {pct(asked['chance'])}) "
            f"| {key_cells(unasked)} |"
        )
    asking = (
        ""
        if asked is None
        else f"{asked['loops']} bass and melodic loops ({args.per_cell} per genre and role, the pack's tempos and "
        f"lengths, {args.sampler_steps} steps), each asked for the next key of a seeded cycle of the 24; "
    )
    key_text = f"""Key: {asking}shares exact / tonic / heard
as the relative key, by our judge | by the independent one (librosa CENS chroma, Temperley profiles):

| loops | ours: exact / tonic / relative | independent: exact / tonic / relative |
| --- | --- | --- |
| the pack's own bass and melodic loops ({ceiling["loops"]}, their labelled keys) | {key_cells(ceiling)} |
| the same through the autoencoder | {key_cells(through_ae)} |
{generated_rows}
"""
    prompt_text = (
        "Prompt adherence: — (this denoiser has no text conditioning).\n"
        if adherence is None
        else f"""Prompt adherence, loops from "<genre> <role> loop" alone ({adherence["loops"]} loops), judged by the demo's
genre and role classifiers: genre {pct(adherence["genre"])}, role {pct(adherence.get("role"))},
both {pct(adherence.get("genre_and_role"))}.
"""
    )
    text = f"""## Recorded sounds ({quality})

{datetime.date.today().isoformat()}, {machine()}. `wavediff demo --pack samples{" --quality 44k" if quality == "44k" else ""} --out DEMO`,
then {eval_command}`python benchmarks/bench_recorded.py --demo DEMO --log DEMO.log --per-cell {args.per_cell}{" --report REPORT" if args.report else ""}`
({model.sample_rate} Hz, {model.autoencoder.cfg.channels} channel(s); the pack: data_tools.sample_pack, labels true by construction).

Trainings (from their event logs: the median seconds a step took between logged steps, the loader
included; the median leaves out pauses, evaluations and checkpoint writes):

| training | steps | s/step | minutes at that pace |
| --- | --- | --- | --- |
{training_rows}

Other stages (minutes, from the demo log's clock; the closing evaluation is not timed there):

| stage | minutes |
| --- | --- |
{stage_rows}

Autoencoder on the held-out (val) loops: MR-STFT {ae["stft"]:.3f}, mel {ae["mel"]:.3f}, SI-SDR {ae["si_sdr"]:.2f} dB
({ae["samples"]} clips).

The demo's eval table ({report["overall"]["clips"]["generated"]} loops against the pack):

```
{format_report(report)}
```

{key_text}
{prompt_text}"""
    print(text)
    write_section(f"Recorded sounds ({quality})", text)


if __name__ == "__main__":
    main()
