"""The eval suite's measures on cases with known answers: Fréchet distance, KID, diversity,
frame features, the PNG writer, and the comparison of folders of real synthesized loops."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest
import scipy.linalg
import torch

from data_tools.synth import synthesize_loop
from wavediff.evaluation.clips import Clip
from wavediff.evaluation.images import png_bytes
from wavediff.evaluation.sets import (
    diversity,
    frechet_distance,
    frechet_from_stats,
    kernel_inception_distance,
    mean_pairwise_distance,
)
from wavediff.evaluation.suite import evaluate_folders, plan_conditions
from wavediff.io import audio
from wavediff.models.features import ANALYSIS_RATE, HOP, N_MELS, clip_features

SR = 8000


def gaussian_set(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """n draws (seeded by `seed`) of one correlated Gaussian in d dims (its shape fixed by d)."""
    mix = np.random.default_rng(d).normal(size=(d, d)) / math.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix * scale


def test_frechet_distance_known_answers():
    x = gaussian_set(500, 8, 0)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)
    shift = np.arange(8) * 0.1
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)  # same covariance: |δ|²
    # diagonal Gaussians: |μ₁ − μ₂|² + Σ (σ₁ − σ₂)²
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_from_stats(np.zeros(3), np.diag(s1), np.array([1.0, 0, 0]), np.diag(s2)) == pytest.approx(expected)


def test_frechet_distance_agrees_with_scipy_sqrtm_and_survives_singular_covariances():
    a, b = gaussian_set(400, 6, 1), gaussian_set(400, 6, 2, scale=1.5) + 0.3
    ma, ca, mb, cb = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    standard = float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))
    assert frechet_distance(a, b) == pytest.approx(standard, rel=1e-6)
    few = gaussian_set(5, 40, 3)  # 5 vectors in 40 dims: rank-4 covariances
    value = frechet_distance(few, gaussian_set(5, 40, 4))
    assert math.isfinite(value) and value > 0
    assert frechet_distance(few, few) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        frechet_distance(few[:1], few)


def test_kid_is_about_zero_for_one_distribution_and_grows_with_a_shift():
    x, y = gaussian_set(600, 16, 5), gaussian_set(600, 16, 6)
    same = kernel_inception_distance(x, y, subset_size=300)
    assert same == kernel_inception_distance(x, y, subset_size=300)  # seeded: repeatable
    small = kernel_inception_distance(x + 0.3, y, subset_size=300)["mean"]
    large = kernel_inception_distance(x + 1.0, y, subset_size=300)["mean"]
    assert abs(same["mean"]) < 0.1 * small < small < large


def test_diversity_by_hand_and_collapse():
    assert mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5 / math.sqrt(2))
    assert math.isnan(mean_pairwise_distance(np.zeros((1, 3))))
    spread = np.array([[0.0], [2.0], [10.0], [10.0]])
    # groups a: {0, 2} → 2, b: {10, 10} → 0, one pair each
    assert diversity(spread, ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert diversity(np.ones((4, 5)), [0, 0, 1, 1]) == 0.0  # a collapsed set
    assert math.isnan(diversity(spread, ["a", "b", "c", "d"]))


def test_features_compare_across_sample_rates_and_frame_loops_around_the_wrap():
    t = torch.arange(ANALYSIS_RATE) / ANALYSIS_RATE
    tone = 0.5 * torch.sin(2 * math.pi * 1000 * t)[None]
    hi = clip_features(tone, ANALYSIS_RATE).logmel
    lo = clip_features(audio.resample(tone, ANALYSIS_RATE, SR), SR).logmel
    assert hi.shape == (ANALYSIS_RATE // HOP + 1, N_MELS)
    heard = hi[2:-2] > -60  # the tone and its window's skirts; below that, leakage near the floor
    assert heard.sum() > 0 and (hi - lo)[2:-2][heard].abs().max() < 1.0  # the same dB, whatever the rate
    assert int(hi[10].argmax()) == int(lo[10].argmax()) and hi.max() > -10
    loop = torch.randn(1, 40 * HOP) * torch.linspace(0, 1, 40 * HOP)  # a ramp: its wrap is a jump
    a = clip_features(loop, ANALYSIS_RATE, loop=True).logmel
    b = clip_features(loop.roll(5 * HOP, -1), ANALYSIS_RATE, loop=True).logmel
    assert a.shape[0] == 40 and torch.allclose(a.roll(5, 0), b, atol=1e-6)  # rolling a loop rolls its frames


def test_png_bytes_decode_back_to_the_pixels():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(tag + body)
        chunks[tag] = body
        pos += 12 + length
    assert struct.unpack(">IIBBBBB", chunks[b"IHDR"]) == (7, 5, 8, 2, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(5, 1 + 7 * 3)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:].reshape(5, 7, 3), rgb)
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(rgb.astype(np.float32))


def test_plan_conditions_splits_n_over_genres_at_reference_tempos():
    ref = [
        Clip(torch.zeros(1, 8), SR, f"k{i}", g, bpm, 2, True)
        for i, (g, bpm) in enumerate([("a", 120), ("a", 124), ("b", 170), ("b", 172), ("b", 174)])
    ]
    ref.append(Clip(torch.zeros(1, 8), SR, "no-tempo", "b"))  # not a loop: never a condition
    plan = plan_conditions(ref, ["a", "b"], n=7, per_condition=2)
    assert sum(k for *_, k in plan) == 7
    assert sum(k for g, *_, k in plan if g == "a") == 4 and sum(k for g, *_, k in plan if g == "b") == 3
    assert {(g, bpm) for g, bpm, _, _ in plan} <= {(c.genre, c.bpm) for c in ref}
    assert max(k for *_, k in plan) == 2
    with pytest.raises(ValueError, match="no reference loop"):
        plan_conditions(ref, ["c"], n=4, per_condition=2)


# --------------------------------------------------------------------------- folders of real loops


def write_loops(folder, genres, per_genre, seed=0, change=None):
    """2-bar synth loops at 8 kHz with json sidecars, optionally changed by change(wav)."""
    for genre in genres:
        for i in range(per_genre):
            wav, meta = synthesize_loop(genre, np.random.default_rng(seed + i), SR, 2)
            wav = audio.convert_channels(wav, 1)
            if change is not None:
                wav = change(wav)
            path = folder / f"{genre}-{i}.wav"
            audio.save(path, wav, SR)
            path.with_suffix(".json").write_text(json.dumps({"genre": genre, "bpm": meta["bpm"], "bars": 2}))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-folders")
    genres = ["techno", "trap"]
    made = {name: root / name for name in ("ref", "quiet", "clicks")}
    for path in made.values():
        path.mkdir()
    write_loops(made["ref"], genres, 3)
    write_loops(made["quiet"], genres, 3, change=lambda w: w * 0.25)  # −12 dB

    def click(wav):  # a low tone with half a cycle more than fits: it jumps from −0.25 to +0.25 at the wrap
        t = torch.arange(wav.shape[-1]) / wav.shape[-1]
        return 0.5 * wav + 0.25 * torch.cos(2 * math.pi * 40.5 * t)

    write_loops(made["clicks"], genres, 3, change=click)
    return made


def test_identical_folders_measure_zero_and_a_changed_set_measures_more(folders):
    same = evaluate_folders(folders["ref"], folders["ref"])
    json.dumps(same, allow_nan=False)
    assert list(same["genres"]) == ["techno", "trap"]
    for block in [same["overall"], *same["genres"].values()]:
        assert block["fd"]["logmel"] == pytest.approx(0, abs=1e-6) and block["fd"]["mfcc"] == pytest.approx(0, abs=1e-6)
        assert block["loops"]["generated"] == block["loops"]["reference"]
    quiet = evaluate_folders(folders["quiet"], folders["ref"])
    for kind in ("logmel", "mfcc"):
        assert quiet["overall"]["fd"][kind] > 50
        assert quiet["overall"]["kid"][kind]["mean"] > 20 * abs(same["overall"]["kid"][kind]["mean"])
    # the built-in pack's tempos are known: the estimator finds them
    ref_loops = same["overall"]["loops"]["reference"]
    assert ref_loops["loops"] == 6 and ref_loops["exact"] + ref_loops["double"] + ref_loops["half"] >= 5 / 6
    assert (
        same["overall"]["diversity"]["generated_same_genre"] == same["overall"]["diversity"]["reference_same_genre"] > 0
    )


def test_a_click_at_the_seam_shows_in_the_seam_ratio(folders):
    report = evaluate_folders(folders["clicks"], folders["ref"])
    seam = {side: report["overall"]["loops"][side]["seam_ratio"] for side in ("generated", "reference")}
    assert seam["reference"] < 1.5 and seam["generated"] > 3 * seam["reference"]
