"""The built-in loop pack: deterministic, whole bars, seamless, at the tempo it claims."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from data_tools.instruments import BassPatch, Note, bass_line, fold
from data_tools.synth import GENRES, loop_seed, synthesize_loop, synthesize_pack, synthesize_stems
from wavediff.evaluation.tempo import estimate_tempo
from wavediff.io.audio import load, loop_samples, loudness

SR = 8000  # low rates keep the tests fast; the synth must hold up there too


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _audio(tree):
    return {data for name, data in tree.items() if name.endswith(".wav")}


def test_same_arguments_give_byte_identical_files_and_another_seed_differs(tmp_path):
    kwargs = dict(genres=["techno", "trap"], loops_per_genre=2, sample_rate=SR, bars=1)
    synthesize_pack(tmp_path / "a", seed=3, **kwargs)
    synthesize_pack(tmp_path / "b", seed=3, **kwargs)
    synthesize_pack(tmp_path / "c", seed=4, **kwargs)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert len(a) == 8 and a == b
    assert len(_audio(c)) == 4 and not _audio(a) & _audio(c)  # another seed: no loop in common


@pytest.mark.parametrize("sr", [8000, 11025, 22050])
@pytest.mark.parametrize("genre", sorted(GENRES))
def test_loops_are_exactly_whole_bars(genre, sr):
    for bars in (1, 3):
        wav, meta = synthesize_loop(genre, np.random.default_rng(bars), sr, bars)
        assert wav.dtype == torch.float32 and wav.shape[0] == 2
        assert wav.shape[1] == round(bars * 4 * 60 / meta["bpm"] * sr)
        assert isinstance(meta["bpm"], int) and GENRES[genre].bpm[0] <= meta["bpm"] <= GENRES[genre].bpm[1]


def test_forced_tempo_sets_length():
    wav, meta = synthesize_loop("house", np.random.default_rng(0), SR, 2, bpm=97)
    assert meta["bpm"] == 97 and wav.shape[1] == loop_samples(97, 2, SR) == round(2 * 4 * 60 / 97 * SR)


def test_files_sidecars_and_levels(tmp_path):
    paths = synthesize_pack(tmp_path, genres=["house", "dubstep"], loops_per_genre=3, sample_rate=SR, seed=11)
    assert len(paths) == 6
    for i, path in enumerate(paths):
        genre = ["house", "dubstep"][i // 3]
        meta = json.loads(path.with_suffix(".json").read_text())
        assert set(meta) == {"genre", "bpm", "key", "bars", "beats_per_bar", "sample_rate", "loop", "source", "seed"}
        assert meta["genre"] == genre and meta["beats_per_bar"] == 4 and meta["sample_rate"] == SR
        assert meta["loop"] is True and meta["source"] == "wavediff-synth" and meta["bars"] in (1, 2, 4)
        assert re.fullmatch(r"[A-G]#?m?", meta["key"])
        assert meta["seed"] == loop_seed(11, genre, i % 3)
        assert path.parent.name == genre and path.name == f"{genre}_{i % 3:03d}_{meta['bpm']}bpm_{meta['key']}.wav"

        wav, sr = load(path)
        assert sr == SR and wav.shape == (2, loop_samples(meta["bpm"], meta["bars"], SR))
        peak_db = 20 * math.log10(float(wav.abs().max()))
        assert -1.2 < peak_db < -0.9  # peak-normalized to -1 dBFS, never clipped
        assert float(wav.mean(1).abs().max()) < 1e-3  # no DC offset
        # the sidecar's seed alone regenerates the loop
        again, _ = synthesize_loop(genre, np.random.default_rng(meta["seed"]), SR, meta["bars"])
        assert torch.allclose(wav, again, atol=1.5 / 32768)


def test_a_genre_subset_gives_the_same_loops(tmp_path):
    synthesize_pack(tmp_path / "all", loops_per_genre=1, sample_rate=SR, bars=1, seed=5)
    synthesize_pack(tmp_path / "one", genres=["breakbeat"], loops_per_genre=1, sample_rate=SR, bars=1, seed=5)
    everything, subset = _tree(tmp_path / "all"), _tree(tmp_path / "one")
    assert {name.split("/")[0] for name in everything} == set(GENRES) and len(GENRES) >= 6
    assert len(subset) == 2 and all(everything[name] == data for name, data in subset.items())


def test_unknown_genre_is_rejected_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="polka") as err:
        synthesize_pack(tmp_path / "out", genres=["techno", "polka"], loops_per_genre=1, sample_rate=SR)
    assert all(genre in str(err.value) for genre in GENRES)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="drum-and-bass"):
        synthesize_loop("polka", np.random.default_rng(0), SR, 1)


def test_progress_bar(tmp_path, capsys):
    synthesize_pack(tmp_path, genres=["techno"], loops_per_genre=1, sample_rate=SR, bars=1, progress=True)
    assert "1/1" in capsys.readouterr().err


def _jump(x: np.ndarray, at: int, scale: float) -> float:
    """Sample-level step into sample `at` (wrapping), in units of the mean |Δx|."""
    return float(np.abs(x[:, at] - x[:, at - 1]).max()) / scale


@pytest.mark.parametrize("genre", sorted(GENRES))
def test_the_wrap_is_no_worse_than_a_beat_boundary_inside_the_loop(genre):
    for seed in range(3):
        wav, meta = synthesize_loop(genre, np.random.default_rng(seed), 16000, 2)
        x = wav.double().numpy()
        n, beats = x.shape[1], 8
        scale = float(np.abs(np.diff(x, axis=1)).mean())
        wrap = _jump(x, 0, scale)  # x[:, -1] → x[:, 0]
        inside = [_jump(x, round(b * n / beats), scale) for b in range(1, beats)]
        assert wrap <= 2 * max(inside) + 1.0, (genre, seed, wrap, inside)


def test_notes_that_run_past_the_end_continue_at_the_start():
    n, sr = 4000, SR
    patch = BassPatch(wave="sine", release_s=0.01)
    across = bass_line([Note(start=3 * n // 4, length=n // 2, midi=45)], n, sr, patch)
    inside = bass_line([Note(start=n // 4, length=n // 4, midi=45)], n, sr, patch)
    # the crossing note's second half sounds at the loop's head, joined without a step
    assert np.abs(across[: n // 8]).max() > 0.5 and np.abs(inside[: n // 8]).max() == 0
    step = abs(across[0] - across[-1])
    assert step <= 1.5 * np.abs(np.diff(across[n // 8 : n // 4])).max()
    tail = np.arange(10.0)
    assert np.array_equal(fold(tail, 4), [0 + 4 + 8, 1 + 5 + 9, 2 + 6, 3 + 7])


def test_tempo_is_real():
    """The onset envelope's periodicity, measured blind, matches the tempo in the metadata."""
    hits, total = 0, 0
    for genre in GENRES:
        for seed, bars in enumerate((1, 2, 4)):
            wav, meta = synthesize_loop(genre, np.random.default_rng(100 + seed), 16000, bars)
            tiled = wav.repeat(1, math.ceil(10 * 16000 / wav.shape[1]))  # a loop is played looped
            ratio = estimate_tempo(tiled, 16000) / meta["bpm"]
            hits += any(abs(ratio / m - 1) < 0.04 for m in (1, 0.5, 2))
            total += 1
    assert hits >= 0.9 * total


def test_tempo_estimator_on_clicks_silence_and_short_audio():
    sr, bpm = 16000, 100
    clicks = torch.zeros(1, sr * 8)
    period = 60 / bpm * sr
    for k in range(int(clicks.shape[1] / period)):
        start = round(k * period)
        clicks[0, start : start + 200] = torch.hann_window(200)
    assert abs(estimate_tempo(clicks, sr) - bpm) < 0.02 * bpm
    assert math.isnan(estimate_tempo(torch.zeros(1, sr * 4), sr))
    with pytest.raises(ValueError, match="too short"):
        estimate_tempo(clicks[:, : sr // 2], sr)


@pytest.mark.parametrize("genre", ["techno", "house"])
def test_stems_sum_to_the_loop_and_the_kick_leads_four_on_the_floor(genre):
    for seed in range(3):
        stems, meta = synthesize_stems(genre, np.random.default_rng(seed), 16000, 2)
        wav, _ = synthesize_loop(genre, np.random.default_rng(seed), 16000, 2)
        assert torch.allclose(sum(stems.values()), wav)
        level = {name: loudness(x, 16000) for name, x in stems.items()}
        assert all(level["kick"] > level[name] + 2.0 for name in level if name != "kick"), level
        assert float(stems["bass"].std()) > 0.01 and float(stems["hats"].std()) > 0.001  # a band, not a kick alone


def test_loops_within_a_genre_differ_but_keep_its_tempo_range():
    loops = [synthesize_loop("drum-and-bass", np.random.default_rng(s), SR, 1) for s in range(4)]
    assert all(165 <= meta["bpm"] <= 178 for _, meta in loops)
    for (a, _), (b, _) in zip(loops, loops[1:]):
        assert a.shape != b.shape or not torch.allclose(a, b, atol=0.05)
