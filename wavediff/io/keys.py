"""Musical keys: the 24 names (tonic × major/minor), parsing what people write, transposing,
and estimating a recording's key from its chroma.

One home for all of it, low in the import graph, because the sharder reads keys from names
and tables (data_tools), the loader and the conditioner index them (shards, models), and the
eval suite judges generated loops by them (evaluation): every layer may import io/.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator

import numpy as np

PITCHES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # the spellings keys are stored in
KEYS = PITCHES + tuple(p + "m" for p in PITCHES)  # the 24 classes: majors 0–11, minors 12–23

_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHIFT = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
MINOR_WORDS = {"m", "min", "minor"}
# A key written as one value: root, accidental, then an optional mode word ("F#m", "Gb minor", "A").
_KEY_FIELD = re.compile(r"^\s*([A-Ga-g])([#♯b♭]?)\s*(m|(?i:minor|major|min|maj))?\s*$")

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
CHROMA_RATE = 22050  # the rate key_of analyses at


def canonical_key(root: str, accidental: str, minor: bool) -> str:
    """The stored spelling of a root letter, accidental and mode: ("g", "b", True) → "F#m"."""
    pitch = (_PITCH[root.upper()] + _SHIFT[accidental]) % 12
    return PITCHES[pitch] + ("m" if minor else "")


def parse_key(text: str) -> str | None:
    """A key as people write it ("A minor", "f#m", "Gb minor", "Eb") → "Am"/"F#m"/"Eb"; None if not a key."""
    m = _KEY_FIELD.match(text)
    if not m:
        return None
    root, accidental, mode = m.groups()
    # A lone capital "M" (major to some, minor to others) is deliberately not read.
    return canonical_key(root, accidental, (mode or "").lower() in MINOR_WORDS)


def key_index(name: object) -> int:
    """The class (0–23) of a key as written (stored or not), −1 for anything that is not a key."""
    parsed = parse_key(name) if isinstance(name, str) else None
    return KEYS.index(parsed) if parsed is not None else -1


def tonic(index: int) -> int:
    """The pitch class (0 = C) of key class `index`."""
    return index % 12


def is_minor(index: int) -> bool:
    return index >= 12


def transpose(index: int, semitones: int) -> int:
    """Key class `index` moved by whole `semitones` (the mode stays)."""
    return (index // 12) * 12 + (index + semitones) % 12


def relative(index: int) -> int:
    """The relative major of a minor key or minor of a major one (Am ↔ C): same notes, another tonic."""
    return transpose(index, 3) - 12 if is_minor(index) else transpose(index, -3) + 12


def best_key(chroma: np.ndarray) -> tuple[int, float] | None:
    """(key class, correlation) of the Krumhansl–Kessler profile that best matches a 12-bin chroma
    (summed over time); None when it has no pitched content."""
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.max() <= 0 or np.allclose(chroma, chroma.mean()):
        return None
    r, index = max(
        (float(np.corrcoef(chroma, np.roll(profile, t))[0, 1]), t + 12 * minor)
        for t in range(12)
        for minor, profile in ((0, MAJOR_PROFILE), (1, MINOR_PROFILE))
    )
    return index, r


@contextlib.contextmanager
def short_loops_padded() -> Iterator[None]:
    """Silences one librosa warning: its constant-Q transform halves the rate once per octave, so
    a loop of a few seconds is shorter than its lowest octaves' FFT, which librosa zero-pads (what
    a longer loop would hold there) and warns about, once per loop."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        yield


def chroma_of(y: np.ndarray) -> np.ndarray:
    """librosa's constant-Q chroma of mono audio at CHROMA_RATE, summed over time (tuning taken
    as A440, as packs are). librosa is imported here: it takes seconds to load."""
    import librosa

    with short_loops_padded():
        return librosa.feature.chroma_cqt(y=y, sr=CHROMA_RATE, hop_length=2048, tuning=0.0).sum(axis=1)
