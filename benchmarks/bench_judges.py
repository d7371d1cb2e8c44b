"""The eval suite's judges beside librosa's on the built-in pack, whose labels are true by construction.

    .venv/bin/python benchmarks/bench_judges.py [--seeds 3] [--per-genre 2]

Loops of data_tools.synth (every genre, `--per-genre` loops per genre and seed, seeds 0 to
`--seeds` − 1, 2 bars at 22.05 kHz), judged as `wavediff eval` judges a reference set:

- tempo: evaluation.loops.loop_report, our onset-autocorrelation estimator and librosa's beat
  tracker on the same tiled loops, each scored by tempo_match against the pack's tempo;
- key: evaluation.keys.key_report on the full mixes and on the bass part alone
  (synthesize_stems), our key judge (CQT chroma + Krumhansl–Kessler, also the tagger's) and the
  independent one (CENS chroma + Temperley), each scored against the pack's key.

Writes the "Evaluation judges" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools.synth import GENRES, loop_seed, synthesize_stems  # noqa: E402
from wavediff.evaluation.keys import key_report  # noqa: E402
from wavediff.evaluation.loops import loop_report  # noqa: E402
from wavediff.io.keys import key_index  # noqa: E402

SR = 22050
BARS = 2


def pct(x: float) -> str:
    return f"{x:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-genre", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = machine()
    started = time.perf_counter()
    loops: dict[str, list] = {}
    for seed in range(args.seeds):
        for genre in GENRES:
            for index in range(args.per_genre):
                stems, meta = synthesize_stems(genre, np.random.default_rng(loop_seed(seed, genre, index)), SR, BARS)
                loops.setdefault(genre, []).append(
                    (sum(stems.values()), stems["bass"], float(meta["bpm"]), meta["key"])
                )
    rows = ["| genre | loops | ours: exact / half / double | librosa: exact / half / double | estimates agree |"]
    rows.append("| --- | --- | --- | --- | --- |")
    every = [item for items in loops.values() for item in items]
    for genre, items in [*loops.items(), ("all", every)]:
        r = loop_report([(mix, SR, bpm, BARS) for mix, _, bpm, _ in items])
        ours, lib = r["tempo_fraction"], r["tempo_librosa_fraction"]
        rows.append(
            f"| {genre} | {r['loops']} | {' / '.join(pct(ours[k]) for k in ('exact', 'half', 'double'))} "
            f"| {' / '.join(pct(lib[k]) for k in ('exact', 'half', 'double'))} | {pct(r['tempo_agree'])} |"
        )
    keys = [
        "| audio | loops | ours: exact / tonic / relative | independent: exact / tonic / relative | same key heard |"
    ]
    keys.append("| --- | --- | --- | --- | --- |")
    for name, part in (("full mix", 0), ("bass part alone", 1)):
        k = key_report([(key_index(item[3]), item[part], SR) for item in every])
        ours, lib = k, k["librosa"]
        keys.append(
            f"| {name} | {k['loops']} | {pct(ours['exact'])} / {pct(ours['tonic'])} / {pct(ours['relative'])} "
            f"| {pct(lib['exact'])} / {pct(lib['tonic'])} / {pct(lib['relative'])} | {pct(k['judges_agree'])} |"
        )
    minutes = (time.perf_counter() - started) / 60
    text = f"""## Evaluation judges

{datetime.date.today()}, {load}. `python benchmarks/bench_judges.py --seeds {args.seeds} --per-genre {args.per_genre}`; {minutes:.1f} min.

The eval suite reports librosa's verdicts beside its own (`wavediff eval`: columns "librosa gen/ref" and
"agree", and a second key line). Here both judge the built-in pack's own loops ({BARS} bars, {SR} Hz,
seeds 0–{args.seeds - 1}), whose tempo and key are true by construction, so each judge's error is visible.

Tempo (tempo_match: within 4% of the pack's tempo, of half it or of double it; "agree": the two
estimates within 4% of each other):

{chr(10).join(rows)}

Key against the pack's key (exact; "tonic": the tonic right, whatever the mode; "relative": the relative
major/minor heard, the same notes; "same key heard": the two judges name one key):

{chr(10).join(keys)}
"""
    print(text)
    write_section("Evaluation judges", text)


if __name__ == "__main__":
    main()
