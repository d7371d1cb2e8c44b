"""Loop metrics on real synthesized loops: tempo against the asked tempo, and the seam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_tools.synth import GENRES, synthesize_loop
from wavediff.evaluation.loops import loop_report, seam_jump, tempo_match

SR = 8000


Item = tuple[torch.Tensor, int, float, int]


@pytest.fixture(scope="module")
def by_genre() -> dict[str, list[Item]]:
    """Two 2-bar loops of every genre of the built-in pack, at 8 kHz."""
    items: dict[str, list[Item]] = {}
    for genre in GENRES:
        for seed in range(2):
            wav, meta = synthesize_loop(genre, np.random.default_rng(seed), SR, 2)
            items.setdefault(genre, []).append((wav, SR, float(meta["bpm"]), 2))
    return items


@pytest.fixture(scope="module")
def pack(by_genre) -> list[Item]:
    return [item for items in by_genre.values() for item in items]


def with_tone(items, cycles: float):
    """The loops plus a low cosine of `cycles` cycles over each loop: whole cycles wrap
    smoothly, a half cycle more cuts the tone from -1 to +1 at the wrap."""
    out = []
    for wav, sr, bpm, bars in items:
        t = torch.arange(wav.shape[-1]) / wav.shape[-1]
        out.append((wav + 0.25 * torch.cos(2 * math.pi * cycles * t), sr, bpm, bars))
    return out


def test_synth_loops_hit_their_tempo_and_wrap_like_their_bar_lines(pack):
    report = loop_report(pack)
    assert report["loops"] == len(pack) and report["seam_unmeasured"] == 0
    tempo = report["tempo"]
    assert sum(tempo.values()) == len(pack)
    assert tempo["miss"] <= 1 and tempo["exact"] >= len(pack) // 2
    assert report["tempo_fraction"]["exact"] == pytest.approx(tempo["exact"] / len(pack))
    assert report["seam_ratio"] < 1.3


def test_a_hard_cut_at_the_wrap_stands_out(pack):
    smooth = loop_report(with_tone(pack, 40))["seam_ratio"]
    cut = loop_report(with_tone(pack, 40.5))["seam_ratio"]
    assert smooth < 1.3 and cut > 3 * smooth


def test_the_asked_tempo_is_not_handed_to_the_estimator(by_genre, pack):
    # Blind, the estimator reads drum-and-bass at half time (its fixed prior sits at 120);
    # a metric that used the asked tempo as its prior would call these loops exact.
    assert loop_report(by_genre["drum-and-bass"])["tempo"]["half"] == 2
    wrong = [(wav, sr, bpm * 0.75, bars) for wav, sr, bpm, bars in pack[:4]]
    assert loop_report(wrong)["tempo"]["miss"] == 4


def test_seam_jump_by_hand():
    ramp = torch.tensor([[0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0]])  # mean |step| = 1
    assert seam_jump(ramp) == {"wrap": 2.0, "bars": None, "ratio": None}
    assert seam_jump(ramp, [2, 5]) == {"wrap": 2.0, "bars": 1.0, "ratio": 2.0}
    # channels are mixed to mono first: opposite channels cancel to silence
    assert seam_jump(torch.cat([ramp, -ramp]), [3]) == {"wrap": 0.0, "bars": 0.0, "ratio": 0.0}
    cosine = torch.cos(2 * math.pi * 100.5 * torch.arange(16000) / 16000)
    assert seam_jump(cosine, [4001, 8001, 12001])["ratio"] > 50


def test_seam_jump_on_silence_and_bad_input():
    assert seam_jump(torch.zeros(2, 1000), [500]) == {"wrap": 0.0, "bars": 0.0, "ratio": 0.0}
    with pytest.raises(ValueError, match="inside the loop"):
        seam_jump(torch.zeros(1, 1000), [1000])
    with pytest.raises(ValueError, match="≥ 2 samples"):
        seam_jump(torch.zeros(1, 1))


@pytest.mark.parametrize(
    "estimated, asked, expected",
    [
        (120.0, 120.0, "exact"),
        (124.7, 120.0, "exact"),
        (115.3, 120.0, "exact"),
        (125.0, 120.0, "miss"),
        (240.0, 120.0, "double"),
        (87.0, 174.0, "half"),
        (90.0, 120.0, "miss"),
        (180.0, 120.0, "miss"),
        (math.nan, 120.0, "miss"),
    ],
)
def test_tempo_match(estimated, asked, expected):
    assert tempo_match(estimated, asked) == expected


def test_tempo_match_refuses_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        tempo_match(120.0, 0.0)
    with pytest.raises(ValueError, match="overlap"):
        tempo_match(120.0, 120.0, tolerance=0.4)
    assert tempo_match(125.0, 120.0, tolerance=0.05) == "exact"


def test_one_bar_loops_have_no_bar_lines_to_compare(pack):
    wav, sr, bpm, _ = pack[0]
    one_bar = wav[:, : wav.shape[-1] // 2]
    report = loop_report([(one_bar, sr, bpm, 1)])
    assert report["seam_ratio"] is None and report["seam_unmeasured"] == 1
    with pytest.raises(ValueError, match="at least one loop"):
        loop_report([])


@pytest.mark.parametrize("bars", [1, 2, 4])
def test_noise_loops_do_not_hit_the_asked_tempo(bars):
    """Tiling makes noise repeat at the loop's length; told the period, the estimator does not
    read that repetition as the beat (before, noise loops hit the asked tempo half the time)."""
    rng = np.random.default_rng(bars)
    samples = round(bars * 4 * 60 / 130 * SR)
    noise = [
        (torch.from_numpy(rng.standard_normal((1, samples)).astype(np.float32)), SR, 130.0, bars) for _ in range(8)
    ]
    tempo = loop_report(noise)["tempo"]
    assert tempo["exact"] + tempo["double"] + tempo["half"] <= 2


def test_an_unbounded_seam_ratio_is_reported_as_null_not_infinity():
    """Bar lines with no step at all and a wrap that jumps: the ratio is infinite, which JSON cannot hold."""
    import json

    from wavediff.evaluation.clips import Clip
    from wavediff.evaluation.suite import _loop_summary

    ramp = torch.linspace(0, 0.5, 32000)
    ramp[15990:16010] = ramp[15990]  # the step into the bar line at 16000 is exactly 0
    clip = Clip(ramp[None], 8000, "ramp", genre="techno", bpm=120.0, bars=2, loop=True)
    assert seam_jump(ramp, [16000])["ratio"] == math.inf
    summary = _loop_summary([clip])
    assert summary["seam_ratio"] is None
    json.dumps(summary, allow_nan=False)


def click_loop(bpm: float, bars: int, sr: int = SR) -> torch.Tensor:
    """A click (a 10 ms decaying 1 kHz burst) on every beat of `bars` 4/4 bars: one loop of a click track."""
    beat = 60.0 / bpm
    x = torch.zeros(1, round(bars * 4 * beat * sr))
    n = round(0.01 * sr)
    t = torch.arange(n) / sr
    burst = torch.exp(-t / 0.002) * torch.sin(2 * math.pi * 1000 * t)
    for k in range(bars * 4):
        start = round(k * beat * sr)
        x[0, start : start + n] += burst[: x.shape[-1] - start]
    return x


@pytest.mark.parametrize("bpm", [100.0, 128.0, 140.0])
def test_librosa_judges_a_click_track_beside_ours(bpm):
    report = loop_report([(click_loop(bpm, 2), SR, bpm, 2)] * 2)
    assert report["tempo"]["exact"] == 2 and report["tempo_librosa"]["exact"] == 2
    assert report["tempo_librosa_fraction"]["exact"] == 1.0 and report["tempo_agree"] == 1.0
    # Asked for another tempo, both judges call the same audio a miss, and they still agree with each other.
    wrong = loop_report([(click_loop(bpm, 2), SR, bpm * 0.8, 2)])
    assert wrong["tempo"]["miss"] == 1 and wrong["tempo_librosa"]["miss"] == 1 and wrong["tempo_agree"] == 1.0
