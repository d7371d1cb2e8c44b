"""Key accuracy of generated loops, judged by a well-kept library rather than by our own model:
librosa's constant-Q chroma matched against the Krumhansl–Kessler key profiles (io.keys, the
estimator the sharder uses for untagged packs). Because that judge is also the tagger, a second
verdict that shares none of its code (librosa CENS chroma and Temperley's profiles, see
evaluation.independent) is reported beside it, with the share of loops where the two agree.

Tonic and mode are scored apart, and a loop heard in the relative key (Am asked, C heard: the
same notes) is counted on its own line, since a profile match confuses those most and a
producer layering the loop would hear it fit.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import Tensor

from wavediff.evaluation.independent import librosa_key
from wavediff.io.audio import conform
from wavediff.io.keys import CHROMA_RATE, KEYS, best_key, chroma_of, is_minor, relative, tonic

CHANCE = 1 / len(KEYS)


def key_of(audio: Tensor, sample_rate: int) -> int | None:
    """The estimated key class of (channels, samples) audio, None when it has no pitched content."""
    y = conform(audio.float().cpu(), sample_rate, CHROMA_RATE, 1)[0].numpy().astype(np.float32)
    best = best_key(chroma_of(y))
    return None if best is None else best[0]


def _shares(rows: list[tuple[int, int | None]]) -> dict:
    """Shares of (asked, estimated) rows that are exact, share the tonic or mode, or are relative keys."""
    n = len(rows)

    def share(hit) -> float:
        return round(sum(1 for a, e in rows if e is not None and hit(a, e)) / n, 4)

    return {
        "exact": share(lambda a, e: a == e),
        "tonic": share(lambda a, e: tonic(a) == tonic(e)),
        "mode": share(lambda a, e: is_minor(a) == is_minor(e)),
        "relative": share(lambda a, e: relative(a) == e),
        "no_key_heard": round(sum(1 for _, e in rows if e is None) / n, 4),
        "estimated": [None if e is None else KEYS[e] for _, e in rows],
    }


def key_report(asked_and_audio: Iterable[tuple[int, Tensor, int]]) -> dict:
    """Shares of (asked key class, audio, sample rate) whose estimated key is the asked one (`exact`),
    has its tonic or its mode, or is its relative; `estimated` lists what was heard. "librosa" holds
    the same shares by the independent judge, "judges_agree" the share where both heard one key."""
    items = list(asked_and_audio)
    if not items:
        return {"loops": 0}
    ours = [(asked, key_of(audio, sr)) for asked, audio, sr in items]
    theirs = [(asked, librosa_key(audio, sr)) for asked, audio, sr in items]
    agree = sum(1 for (_, a), (_, b) in zip(ours, theirs) if a is not None and a == b)
    return {
        "loops": len(items),
        **_shares(ours),
        "chance": round(CHANCE, 4),
        "librosa": _shares(theirs),
        "judges_agree": round(agree / len(items), 4),
    }
