"""Saving generated loops: audio files named from their settings, with a JSON sidecar each,
and WAV loop chunks (smpl, acid) so samplers and DAWs loop and stretch them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from wavediff.io.audio import LoopInfo, save
from wavediff.io.files import atomic_write_json


def loop_name(info: Mapping[str, Any], seed: int) -> str:
    """`techno-128bpm-F#m-4bars-seed0` (the key only when one was asked for): what a producer sees in a file browser."""
    key = f"-{info['key']}" if info.get("key") else ""
    return f"{info.get('genre') or 'loop'}-{info['bpm']:g}bpm{key}-{info['bars']}bars-seed{seed}"


def save_loops(
    audio: Tensor,
    info: Mapping[str, Any],
    out: str | os.PathLike,
    *,
    format: str = "wav",
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write each loop and a JSON sidecar of every setting beside it; WAV files carry smpl/acid loop chunks.

    `info` is what generate (or vary, inpaint, …) returned, plus anything the caller adds
    (the checkpoint); `names` default to loop_name of each item's seed. Each file is atomic.
    """
    out = Path(out)
    seeds = info.get("seeds") or list(range(audio.shape[0]))
    names = list(names) if names is not None else [loop_name(info, s) for s in seeds]
    loop = None
    if info.get("bpm") and info.get("bars"):
        beats = int(info["bars"]) * int(info.get("beats_per_bar", 4))
        loop = LoopInfo(bpm=float(info["bpm"]), beats=beats, beats_per_bar=int(info.get("beats_per_bar", 4)))
    written = []
    for wav, seed, name in zip(audio, seeds, names):
        path = save(out / f"{name}.{format}", wav, int(info["sample_rate"]), loop=loop)
        sidecar = {k: v for k, v in info.items() if k != "seeds"} | {"seed": seed, "file": path.name}
        atomic_write_json(path.with_suffix(".json"), sidecar)
        written.append(path)
    return written
