"""The pack of recorded sounds (`wavediff data sample-pack`): how long a default build takes, and how
often our estimator and librosa's agree with its labels, which are true by construction.

    .venv/bin/python benchmarks/bench_sample_pack.py [--loops N]

Tempo: ours (data_tools.analysis.estimate, blind) must give the label within 2 % (double or half is
wrong) and then the label's bars; it may give no tempo (with a reason) rather than guess. librosa's
beat tracker (librosa.beat.beat_track, default hop) counts as right when its beat period is within one
onset frame of the label's or of double or half of it: its tempi come in steps of a frame. Keys of the
bass and melodic loops: the chroma key estimate (wavediff.io.keys, as the eval suite uses), right when
its tonic or its relative key is the label's, and exactly right when the key is.

Prints the figures and writes them to the "Sample pack" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import machine, write_section  # noqa: E402

from data_tools import analysis  # noqa: E402
from data_tools.sample_pack import ROLES, build_sample_pack  # noqa: E402
from data_tools.synth import GENRES  # noqa: E402
from wavediff.io import keys  # noqa: E402
from wavediff.io.audio import conform  # noqa: E402

HOP = 512  # librosa's default onset hop


def librosa_agrees(tempo: float, bpm: float, sr: int) -> bool:
    frames = 60 * sr / HOP
    return any(abs(frames / tempo - frames / (bpm * f)) <= 1.0 for f in (0.5, 1.0, 2.0))


def score(path: Path) -> dict:
    import librosa

    meta = json.loads(path.with_suffix(".json").read_text())
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.T.copy())
    found = analysis.estimate(wav, sr)
    bpm = found["bpm"].value
    tempo, _ = librosa.beat.beat_track(y=data.mean(1), sr=sr, hop_length=HOP)
    row = {
        "cell": "sonic-pi" if meta["source"] == "sonic-pi-samples" else meta["role"],
        "ours_right": bpm is not None and abs(bpm / meta["bpm"] - 1) <= 0.02 and found["bars"].value == meta["bars"],
        "ours_none": bpm is None,
        "librosa_right": librosa_agrees(float(np.atleast_1d(tempo)[0]), meta["bpm"], sr),
        "key": meta["key"],
    }
    if meta["key"] is not None:
        label = keys.key_index(meta["key"])
        best = keys.best_key(keys.chroma_of(conform(wav, sr, keys.CHROMA_RATE, 1)[0].numpy()))
        got = -1 if best is None else best[0]
        row["key_close"] = got >= 0 and (keys.tonic(got) == keys.tonic(label) or got == keys.relative(label))
        row["key_exact"] = got == label
    return row


def share(rows: list[dict], field: str) -> str:
    n = sum(bool(r[field]) for r in rows)
    return f"{n}/{len(rows)} ({n / len(rows):.0%})" if rows else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=4, help="loops per genre and role (the default build: 4)")
    args = parser.parse_args()
    where = machine()
    analysis.preload()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = build_sample_pack(Path(tmp) / "pack", loops_per_cell=args.loops)
        seconds = time.perf_counter() - start
        with warnings.catch_warnings():  # librosa on a one-bar loop's low octaves
            warnings.simplefilter("ignore", UserWarning)
            rows = [score(p) for p in paths]
        per_genre = Counter((p.parent.name, r["cell"]) for p, r in zip(paths, rows))
    cells = (*ROLES, "sonic-pi")
    lines = [
        "## Sample pack",
        "",
        f"`benchmarks/bench_sample_pack.py --loops {args.loops}` on {where}, {datetime.date.today().isoformat()}."
        f" A build of `wavediff data sample-pack OUT --loops {args.loops}` (44.1 kHz stereo, seed 0) took"
        f" {seconds:.0f} s for {len(paths)} loops. How the labels are judged is in the script's docstring;"
        " the labels themselves are true by construction (data_tools/sample_pack.py).",
        "",
        "| genre | " + " | ".join(cells) + " |",
        "| --- | " + " | ".join("---" for _ in cells) + " |",
        *[f"| {g} | " + " | ".join(str(per_genre[g, c]) for c in cells) + " |" for g in GENRES],
        "",
        "| loops | n | tempo and bars right (ours) | no tempo (ours) | tempo right (librosa beat tracker,"
        " double/half allowed) | key tonic or relative right | key right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in (*cells, "all"):
        part = rows if cell == "all" else [r for r in rows if r["cell"] == cell]
        keyed = [r for r in part if r["key"] is not None]
        lines.append(
            f"| {cell} | {len(part)} | {share(part, 'ours_right')} | {share(part, 'ours_none')}"
            f" | {share(part, 'librosa_right')} | {share(keyed, 'key_close')} | {share(keyed, 'key_exact')} |"
        )
    wrong = sum(not r["ours_right"] and not r["ours_none"] for r in rows)
    lines += [
        "",
        f"Ours gave a wrong tempo or bar count on {wrong} of {len(rows)} loops (the rest right or none)."
        " Drums and sonic-pi loops carry no key.",
    ]
    text = "\n".join(lines)
    print(text)
    print(f"wrote {write_section('Sample pack', text)}")


if __name__ == "__main__":
    main()
