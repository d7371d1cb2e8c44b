"""The key judge of the eval suite: librosa chroma and key profiles on real synthesized chords."""

from __future__ import annotations

import math

import pytest
import torch

from wavediff.evaluation.independent import librosa_key
from wavediff.evaluation.keys import key_of, key_report
from wavediff.io.keys import KEYS, key_index, relative, transpose

SR = 22050
NOTES = {"A": 220.0, "C": 261.63, "E": 329.63, "G": 392.0, "F#": 369.99, "C#": 277.18, "D": 293.66, "B": 246.94}


def chord(*names: str, seconds: float = 2.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.2 * sum(torch.sin(2 * math.pi * NOTES[n] * t) for n in names)[None]


@pytest.mark.parametrize("notes, key", [(("A", "C", "E"), "Am"), (("C", "E", "G"), "C"), (("F#", "A", "C#"), "F#m")])
def test_triads_are_heard_in_their_key(notes, key):
    assert KEYS[key_of(chord(*notes), SR)] == key


def test_tonic_mode_and_relative_keys_are_counted_apart():
    am, c = chord("A", "C", "E"), chord("C", "E", "G")
    report = key_report([(key_index("Am"), am, SR), (key_index("Am"), c, SR), (key_index("A"), am, SR)])
    assert report["estimated"] == ["Am", "C", "Am"]
    assert report["exact"] == pytest.approx(1 / 3, abs=1e-3)  # only the first
    assert report["relative"] == pytest.approx(1 / 3, abs=1e-3)  # C for Am: the same notes, counted on its own line
    assert report["tonic"] == pytest.approx(2 / 3, abs=1e-3) and report["mode"] == pytest.approx(1 / 3, abs=1e-3)
    silence = key_report([(0, torch.zeros(1, SR), SR)])
    assert silence["no_key_heard"] == 1.0 and silence["exact"] == 0.0
    assert KEYS[relative(key_index("Am"))] == "C" and KEYS[relative(key_index("Eb"))] == "Cm"
    assert KEYS[transpose(key_index("Bm"), 2)] == "C#m" and KEYS[transpose(key_index("C"), -1)] == "B"


@pytest.mark.parametrize(
    "notes, key", [(("A", "C", "E"), "Am"), (("C", "E", "G"), "C"), (("F#", "A", "C#"), "F#m"), (("G", "B", "D"), "G")]
)
def test_the_independent_judge_hears_triads_in_their_key(notes, key):
    assert KEYS[librosa_key(chord(*notes), SR)] == key


def test_the_independent_judge_shares_no_code_with_the_tagger():
    import ast
    import inspect

    import wavediff.evaluation.independent as independent

    source = inspect.getsource(independent)
    nodes = list(ast.walk(ast.parse(source)))
    imported = {n.module for n in nodes if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    assert "librosa" in imported and not any(m.startswith("wavediff") for m in imported)  # nothing of ours
    assert "chroma_cqt" not in source  # another chroma than the tagger's, too


def test_the_report_gives_both_verdicts_and_their_agreement():
    am, c = chord("A", "C", "E"), chord("C", "E", "G")
    report = key_report([(key_index("Am"), am, SR), (key_index("C"), c, SR), (key_index("A"), torch.zeros(1, SR), SR)])
    assert report["librosa"]["estimated"] == ["Am", "C", None]
    assert report["librosa"]["exact"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["librosa"]["no_key_heard"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["judges_agree"] == pytest.approx(2 / 3, abs=1e-3)  # silence is no agreement
