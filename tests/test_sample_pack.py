"""The pack of recorded sounds (data_tools.sample_pack): every label checked against the audio.

A small pack (one loop per genre and role, plus the sonic-pi loops) is built from the Debian
packages once; its tempos and bars are judged by our estimator (data_tools.analysis, which must
get them exactly: double or half is wrong) and by librosa's beat tracker (the field's judge, whose
double or half is let pass, since its octave errors are well known), its keys by the chroma key
estimate (wavediff.io.keys, as the eval suite uses).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_tools import analysis, sample_pack
from data_tools.shard import ShardOptions, shard
from data_tools.synth import GENRES
from wavediff.cli import main
from wavediff.errors import UserError
from wavediff.io import keys
from wavediff.io.audio import conform, loop_samples

SR = 22050
HOP = 512  # librosa's default onset hop
pytestmark = pytest.mark.skipif(
    sample_pack.missing_packages() is not None,
    reason=f"Debian packages missing: {sample_pack.missing_packages()} (apt-get install them; .ci/run does)",
)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("pack")
    return out, sample_pack.build_sample_pack(out, loops_per_cell=1, sample_rate=SR, seed=3)


def _loops(pack) -> list[tuple[Path, dict, np.ndarray]]:
    """(path, sidecar, audio as (channels, samples))."""
    out = []
    for path in pack[1]:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == SR
        out.append((path, json.loads(path.with_suffix(".json").read_text()), data.T.copy()))
    return out


def librosa_agrees(tempo: float, bpm: float) -> bool:
    """librosa's beat period within one onset frame of the label's, or of double or half of it
    (its tempo comes in steps of a frame: 129.2 and 136.0 BPM are neighbours at 22.05 kHz)."""
    frames = 60 * SR / HOP
    return any(abs(frames / tempo - frames / (bpm * f)) <= 1.0 for f in (0.5, 1.0, 2.0))


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


def test_layout_lengths_and_fields(pack):
    loops = _loops(pack)
    made = {(m["genre"], m["role"]) for _, m, _ in loops if m["source"] != "sonic-pi-samples"}
    assert made == {(g, r) for g in GENRES for r in sample_pack.ROLES}
    assert len(loops) == 3 * len(GENRES) + sum(len(v) for v in sample_pack.SONIC_PI_GENRES.values())
    for path, meta, x in loops:
        assert path.parent.name == meta["genre"] and x.shape[0] == 2, path
        assert x.shape[1] == loop_samples(meta["bpm"], meta["bars"], SR), path  # bars·240/bpm, sample-rounded
        low, high = GENRES[meta["genre"]].bpm
        assert low - 1 <= meta["bpm"] <= high + 1, path
        if meta["role"] == "drums" or meta["source"] == "sonic-pi-samples":
            assert meta["key"] is None, path
        else:
            assert keys.parse_key(meta["key"]) is not None, path
        assert 0.5 < np.abs(x).max() <= 1.0, path


def test_tempo_and_bars_agree_with_our_estimator_and_librosa(pack):
    import librosa

    ours, theirs = [], []
    for path, meta, x in _loops(pack):
        found = analysis.estimate(torch.from_numpy(x), SR)
        bpm = found["bpm"].value
        # ours: a tempo it gives must be the label's (within 2 %) with the label's bars; it may give none
        assert bpm is None or (abs(bpm / meta["bpm"] - 1) <= 0.02 and found["bars"].value == meta["bars"]), (
            path.name,
            bpm,
            found["bars"].value,
        )
        ours.append(bpm is not None)
        tempo, _ = librosa.beat.beat_track(y=x.mean(0), sr=SR, hop_length=HOP)
        theirs.append(librosa_agrees(float(np.atleast_1d(tempo)[0]), meta["bpm"]))
    # librosa's tracker misreads the half-time and broken patterns (2/3, 4/5 of the tempo): see BENCHMARKS.md
    assert _rate(theirs) >= 0.5, f"librosa's beat tracker right (double/half allowed) on {sum(theirs)}/{len(theirs)}"


@pytest.mark.filterwarnings("ignore:n_fft=:UserWarning")  # the chroma's low octaves of a one-bar loop
def test_keys_agree_with_the_chroma_estimate(pack):
    hits, exact = [], []
    for _, meta, x in _loops(pack):
        if meta["key"] is None:
            continue
        label = keys.key_index(meta["key"])
        best = keys.best_key(keys.chroma_of(conform(torch.from_numpy(x), SR, keys.CHROMA_RATE, 1)[0].numpy()))
        found = None if best is None else best[0]
        exact.append(found == label)
        hits.append(found is not None and (keys.tonic(found) == keys.tonic(label) or found == keys.relative(label)))
    assert len(hits) == 2 * len(GENRES)
    assert _rate(hits) >= 0.75, f"tonic or relative right on {sum(hits)}/{len(hits)}, exact {sum(exact)}"


def test_drums_sound_like_drums_and_every_loop_wraps_without_a_click(pack):
    for path, meta, x in _loops(pack):
        if meta["role"] == "drums" and meta["source"] == "hydrogen-drumkits":
            assert analysis.estimate(torch.from_numpy(x), SR)["key"].value is None, path.name
        if meta["source"] == "sonic-pi-samples":
            continue  # recorded as they come
        x = x.astype(np.float64)
        steps = np.abs(np.diff(x, axis=1)).max(axis=0)
        wrap = float(np.abs(x[:, 0] - x[:, -1]).max())
        assert wrap <= np.quantile(steps, 0.999), path.name


def test_labels_reach_the_shards_from_the_sidecars(pack, tmp_path):
    out, paths = pack
    shard(
        [out],
        tmp_path / "shards",
        ShardOptions(sample_rate=16000, channels=1, max_seconds=None, workers=1),
        progress=False,
    )
    sidecars = {p.stem: json.loads(p.with_suffix(".json").read_text()) for p in paths}
    seen = 0
    for tar in (tmp_path / "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            for member in t.getmembers():
                if not member.name.endswith(".json"):
                    continue
                meta = json.loads(t.extractfile(member).read())
                label = sidecars[Path(meta["source"]).stem]
                assert meta["bpm_source"] == meta["bars_source"] == "sidecar", meta
                assert (meta["genre"], meta["bpm"], meta["bars"], meta["role"]) == (
                    label["genre"],
                    label["bpm"],
                    label["bars"],
                    label["role"],
                )
                assert keys.parse_key(meta["key"]) if meta["key"] else label["key"] is None
                seen += 1
    assert seen == len(paths)


def test_same_seed_same_loop_another_seed_another():
    for role in ("drums", "bass"):
        a, meta = sample_pack.make_loop("house", role, 0, 5, SR)
        b, _ = sample_pack.make_loop("house", role, 0, 5, SR)
        c, _ = sample_pack.make_loop("house", role, 0, 6, SR)
        assert torch.equal(a, b) and meta["seed"] == sample_pack.make_loop("house", role, 0, 5, SR)[1]["seed"]
        assert a.shape != c.shape or not torch.equal(a, c)


def test_missing_packages_name_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth on it
    monkeypatch.setattr(sample_pack, "HYDROGEN_DIR", tmp_path / "drumkits")
    with pytest.raises(UserError, match=r"apt-get install hydrogen-drumkits fluidsynth$"):
        sample_pack.build_sample_pack(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_pack(tmp_path, capsys):
    assert main(["data", "sample-pack", str(tmp_path / "p"), "--loops", "0", "--sample-rate", "16000", "-q"]) == 0
    files = sorted((tmp_path / "p").rglob("*.wav"))
    assert len(files) == sum(len(v) for v in sample_pack.SONIC_PI_GENRES.values())
    assert f"wrote {len(files)} loops" in capsys.readouterr().out
    assert all(json.loads(f.with_suffix(".json").read_text())["source"] == "sonic-pi-samples" for f in files)


@pytest.mark.slow
def test_demo_pack_samples_shards_the_recorded_pack_at_the_demo_rate(tmp_path):
    from wavediff.pipelines.demo import make_demo_shards
    from wavediff.shards.format import read_manifest

    shards = make_demo_shards(tmp_path, progress=False, pack="samples")
    manifest = read_manifest(shards)
    assert (manifest.sample_rate, manifest.channels) == (16000, 1)
    assert sorted(manifest.genres) == sorted(GENRES) and manifest.skipped == []
    assert manifest.metadata_sources["bpm"] == {"sidecar": manifest.files}
    assert set(manifest.roles) == set(sample_pack.ROLES)
    with pytest.raises(UserError, match="another pack"):  # its shards are not the synth pack's
        make_demo_shards(tmp_path, progress=False, pack="synth")


def test_velocity_picks_the_kits_recorded_layer():
    kick = sample_pack.kit_parts(sample_pack.HYDROGEN_DIR / "Millo_MultiLayered2")["kick"]
    assert len(kick) == 5  # five recordings of one kick, soft to hard, as drumkit.xml lists them
    soft, hard = sample_pack.layer_for(kick, 0.1), sample_pack.layer_for(kick, 1.0)
    assert soft.path != hard.path and soft.low <= 0.1 <= soft.high and hard.low <= 1.0 <= hard.high
