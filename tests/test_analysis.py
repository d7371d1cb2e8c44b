"""Estimating what untagged files leave out, on real recordings (Debian's sonic-pi-samples and
hydrogen-drumkits) and on the built-in synth pack's parts, whose labels are true by construction."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_tools import analysis
from data_tools.synth import loop_seed, synthesize_loop, synthesize_stems

SONIC_PI = Path("/usr/share/sonic-pi/samples")
HYDROGEN = Path("/usr/share/hydrogen/data/drumkits")
needs_sonic_pi = pytest.mark.skipif(
    not (SONIC_PI / "loop_amen.flac").is_file(),
    reason="Debian's sonic-pi-samples is not installed (apt-get install sonic-pi-samples; .ci/run does)",
)
needs_hydrogen = pytest.mark.skipif(
    not HYDROGEN.is_dir(),
    reason="Debian's hydrogen-drumkits is not installed (apt-get install hydrogen-drumkits; .ci/run does)",
)


def read(path: Path) -> tuple[torch.Tensor, int]:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), sr


# Tempo and bars measured once (see benchmarks/bench_tagging.py for how): loops with one reading.
REAL_LOOPS = {
    "loop_amen": (136.88, 1),
    "loop_breakbeat": (126.0, 1),
    "loop_safari": (119.92, 4),
    "loop_amen_full": (140.0, 4),
    "loop_mika": (120.0, 4),
    "loop_electric": (97.0, 1),
}


@needs_sonic_pi
@pytest.mark.parametrize("name", sorted(REAL_LOOPS))
def test_tempo_and_bars_of_recorded_loops(name):
    wav, sr = read(SONIC_PI / f"{name}.flac")
    found = analysis.estimate(wav, sr)
    bpm, bars = REAL_LOOPS[name]
    assert found["kind"].value == "loop"
    assert found["bpm"].value == pytest.approx(bpm, rel=0.02), found["bpm"]
    assert found["bars"].value == bars
    assert found["bpm"].confidence >= analysis.TEMPO_THRESHOLD
    assert abs(found["downbeat"].value) < 0.05  # packs cut loops on the downbeat
    assert found["role"].value == "drums" or name in ("loop_mika", "loop_safari", "loop_breakbeat")


@needs_hydrogen
@needs_sonic_pi
def test_one_shots_are_told_from_loops():
    kit = HYDROGEN / "Millo-Drums_v.1"  # a recorded kit: kick, snare, hats, toms, cymbals
    hits = [p for p in sorted(kit.iterdir()) if p.suffix in (".wav", ".flac") and p.stem != "emptySample"]
    hits += sorted(SONIC_PI.glob("drum_*_hard.flac"))
    assert len(hits) >= 20
    kinds = {hit.name: analysis.estimate(*read(hit), role="drums")["kind"].value for hit in hits}
    wrong = [name for name, kind in kinds.items() if kind != "one-shot"]
    assert len(wrong) <= 0.1 * len(hits), wrong
    for name in ("loop_amen", "loop_compus", "loop_tabla", "loop_garzul"):
        found = analysis.estimate(*read(SONIC_PI / f"{name}.flac"), role="drums")
        assert found["kind"].value == "loop", name
    # a one-shot gets no tempo, and a drum part no key
    found = analysis.estimate(*read(kit / "crash.flac"))
    assert found["kind"].value == "one-shot"
    assert found["bpm"].value is None and found["bpm"].reason == "a one-shot has no tempo"
    assert found["key"].value is None and "no key" in found["key"].reason


def test_key_of_bass_parts_and_none_for_drums():
    rng = np.random.default_rng(7)
    right = 0
    for genre in ("techno", "house", "trap", "dubstep"):
        stems, meta = synthesize_stems(genre, rng, 22050, 2, None)
        found = analysis.estimate(stems["bass"], 22050, kind="loop", bpm=meta["bpm"])
        assert found["role"].value == "bass"
        truth = meta["key"].replace("D#", "Eb").replace("G#", "Ab").replace("A#", "Bb")
        right += found["key"].value is not None and found["key"].value.rstrip("m") == truth.rstrip("m")
        drums = stems["kick"] + stems["snare"] + stems["hats"]
        found = analysis.estimate(drums, 22050, kind="loop", bpm=meta["bpm"])
        assert found["role"].value == "drums"
        assert found["key"].value is None and found["key"].reason == "a drums part has no key"
    assert right >= 3


def test_tempo_of_untagged_synth_loops_settles_double_and_half():
    rng = np.random.default_rng(3)
    for genre, bars in (("drum-and-bass", 2), ("house", 1), ("trap", 2)):
        wav, meta = synthesize_loop(genre, rng, 22050, bars)
        found = analysis.estimate(wav, 22050)
        assert found["bpm"].value == pytest.approx(meta["bpm"], rel=0.02), (genre, meta["bpm"], found["bpm"])
        assert found["bars"].value == bars


# --------------------------------------------------------------------------- bad input: null with a reason


@needs_sonic_pi
def test_a_loop_whose_length_fits_no_whole_number_of_bars():
    wav, sr = read(SONIC_PI / "loop_amen_full.flac")
    longer = torch.cat([wav, wav[:, : int(0.15 * sr)]], dim=1)  # a tail: 4 bars and a bit
    found = analysis.estimate(longer, sr)
    assert found["kind"].value == "loop"
    assert found["bpm"].value is None and found["bars"].value is None
    assert "no whole number of bars" in found["bpm"].reason
    short = analysis.estimate(*read(SONIC_PI / "loop_industrial.flac"))  # half a bar, as recorded
    assert short["bpm"].value is None and "no whole number of bars" in short["bpm"].reason


def test_silence():
    found = analysis.estimate(torch.zeros(2, 4 * 22050), 22050)
    assert set(found) == {"kind", "role", "bpm", "bars", "key"}
    assert all(e.value is None and e.reason.startswith("silent") for e in found.values())


def test_a_twenty_minute_file_is_not_read_as_a_loop():
    wav, _ = synthesize_loop("techno", np.random.default_rng(0), 8000, 4, bpm=125)
    long = wav.repeat(1, 20 * 60 * 8000 // wav.shape[1] + 1)[:, : 20 * 60 * 8000]
    start = time.perf_counter()
    found = analysis.estimate(long, 8000)
    assert time.perf_counter() - start < 30  # it looks at a minute at most
    for name in ("kind", "bpm", "bars"):
        assert found[name].value is None and "1200 s long: a song or a mix" in found[name].reason


def test_a_file_with_two_tempos():
    rng = np.random.default_rng(5)
    first, _ = synthesize_loop("house", rng, 22050, 4, bpm=124)
    second, _ = synthesize_loop("house", rng, 22050, 4, bpm=93)
    found = analysis.estimate(torch.cat([first, second], dim=1), 22050)
    assert found["bpm"].value is None and found["bars"].value is None
    assert found["bpm"].reason.startswith("two tempos"), found["bpm"].reason


def test_tempo_of_loops_whose_hits_lie_partly_off_the_sixteenth_grid():
    """Trap loops (triplet hats, rolls) fit the sixteenth grid only weakly; their length's tempo is
    still where the hits line up best, so it counts. The same loops cut 0.1 s short or 0.15 s long
    line up best a few % away from any whole-bar tempo and stay unknown."""
    sr = 22050
    seeds = [loop_seed(0, "trap", 2), loop_seed(0, "trap", 7), loop_seed(1, "trap", 3)]  # as synthesize_pack draws them
    loops = [synthesize_loop("trap", np.random.default_rng(s), sr, (1, 2, 2, 4)[s % 4]) for s in seeds]
    right = 0
    for wav, meta in loops:
        found = analysis.estimate(wav, sr)
        right += found["bpm"].value == pytest.approx(meta["bpm"], rel=0.02) and found["bars"].value == meta["bars"]
        for cut in (wav[:, : -int(0.1 * sr)], torch.cat([wav, wav[:, : int(0.15 * sr)]], dim=1)):
            found = analysis.estimate(cut, sr)
            assert found["bpm"].value is None, (meta, found["bpm"])
    assert right == len(loops)


def test_files_librosa_cannot_analyse_get_reasons_not_crashes():
    """A 1-sample file, a DC offset and nothing else, noise at 8 kHz (whose mel bands above 4 kHz
    are empty): none gets a tempo, each says why. Loops at 8 kHz mono and 96 kHz stereo still do."""
    too_short = analysis.estimate(torch.full((2, 1), 0.5), 44100)
    assert set(too_short) == {"kind", "role", "bpm", "bars", "key"}
    assert all(e.value is None and "too short to analyse" in e.reason for e in too_short.values())
    dc = analysis.estimate(torch.full((2, 96000), 0.3), 96000)
    assert all(e.value is None and e.reason.startswith("silent") for e in dc.values())
    noise = analysis.estimate(torch.randn(1, 3 * 8000, generator=torch.Generator().manual_seed(0)) * 0.3, 8000)
    assert noise["bpm"].value is None and noise["bpm"].reason, noise["bpm"]
    for sr, channels in ((8000, 1), (96000, 2)):
        wav, meta = synthesize_loop("house", np.random.default_rng(4), sr, 2)
        found = analysis.estimate(wav[:channels], sr)
        assert found["bpm"].value == pytest.approx(meta["bpm"], rel=0.02), (sr, found["bpm"])
