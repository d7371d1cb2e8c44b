"""Untagged packs through the real jobs: `data shard` estimates what names leave out, `data tag`
writes the draft a user corrects, `data inspect` counts where values came from, and training
leaves one-shots out unless asked."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_recipes import TINY_DENOISER

from data_tools.inspect import format_manifest
from data_tools.instruments import kick
from data_tools.shard import ShardOptions, merge_parts, shard
from data_tools.synth import synthesize_loop, synthesize_pack, synthesize_stems
from data_tools.tag import tag
from wavediff.config import ROLES, DataConfig, DiffusionRecipe, load_recipe
from wavediff.generation.generate import generate
from wavediff.models.factory import load_denoiser
from wavediff.shards.format import read_manifest, shard_paths
from wavediff.shards.loader import make_loader
from wavediff.training.diffusion import train_diffusion

SR = 22050


def write(path: Path, wav: torch.Tensor | np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.numpy() if isinstance(wav, torch.Tensor) else wav
    sf.write(path, data.T if data.ndim == 2 else data, sr)
    return path


def samples(out: Path) -> dict[str, dict]:
    """The JSON of every sample, by source path."""
    found = {}
    for split in ("train", "val"):
        for path in shard_paths(out, read_manifest(out), split):
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        info = json.loads(tar.extractfile(member).read())
                        found[info["source"]] = info
    return found


def options(**kw) -> ShardOptions:
    return ShardOptions(**{"sample_rate": SR, "channels": 1, "workers": 1, "val_fraction": 0.0, **kw})


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> tuple[Path, dict]:
    """A producer's folder: role folders, plain names, a one-shot beside the loops, one tagged name."""
    root = tmp_path_factory.mktemp("pack")
    rng = np.random.default_rng(1)
    beat, beat_meta = synthesize_loop("house", rng, SR, 2)
    stems, bass_meta = synthesize_stems("techno", rng, SR, 2, None)
    tagged, _ = synthesize_loop("techno", rng, SR, 1, bpm=120)
    truth = {
        "Drums/break01.wav": (write(root / "Drums" / "break01.wav", beat), beat_meta),
        "Bass/line.wav": (write(root / "Bass" / "line.wav", stems["bass"]), bass_meta),
        "Drums/beat_120bpm.wav": (write(root / "Drums" / "beat_120bpm.wav", tagged), {"bpm": 120}),
    }
    hit = kick(SR, rng, start_hz=200, end_hz=50, sweep_s=0.03, decay_s=0.15, click=0.4, drive=2.0)
    write(root / "Misc" / "x01.wav", np.pad(hit, (0, SR // 2)) * 0.8)
    return root, truth


@pytest.fixture(scope="module")
def sharded(pack, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shards")
    return out, shard([pack[0]], out, options(), progress=False)


def test_untagged_loops_get_tempo_bars_kind_and_role(pack, sharded):
    _, truth = pack
    out, manifest = sharded
    found = samples(out)
    beat = found["Drums/break01.wav"]
    assert beat["bpm"] == pytest.approx(truth["Drums/break01.wav"][1]["bpm"], rel=0.02)
    assert beat["bars"] == 2 and beat["loop"] is True and beat["kind"] == "loop"
    assert beat["bpm_source"] == beat["bars_source"] == beat["kind_source"] == "estimated"
    assert beat["bpm_confidence"] >= 0.6
    assert beat["role"] == "drums" and beat["role_source"] == "name"  # "break" beats the folder's "Drums"
    assert beat["key"] is None and beat["key_reason"] == "a drums part has no key"
    line = found["Bass/line.wav"]
    assert line["role"] == "bass" and line["role_source"] == "folder"
    assert line["key_source"] == "estimated" and line["key"] is not None
    assert line["bpm"] == pytest.approx(truth["Bass/line.wav"][1]["bpm"], rel=0.02)
    tagged = found["Drums/beat_120bpm.wav"]
    assert (tagged["bpm"], tagged["bpm_source"], tagged["bars"]) == (120.0, "name", 1)
    assert "bpm_confidence" not in tagged
    hit = found["Misc/x01.wav"]
    assert hit["kind"] == "one-shot" and hit["kind_source"] == "estimated" and hit["loop"] is False
    assert hit["bpm"] is None and hit["bpm_reason"] == "a one-shot has no tempo"
    assert manifest.kinds == {"loop": 3, "one-shot": 1}
    assert manifest.roles == {"bass": 2, "drums": 2}  # a kick alone reads as bass (analysis.estimate_role)
    assert manifest.metadata_sources["bpm"] == {"estimated": 2, "name": 1, "unknown": 1}
    assert manifest.bpm["min"] == pytest.approx(min(beat["bpm"], line["bpm"], 120.0))


def test_inspect_counts_sources_kinds_and_roles(sharded):
    text = format_manifest(sharded[1])
    assert "kinds: loop (3), one-shot (1)" in text
    assert "roles: " in text and "bass (1)" in text
    assert "where values came from (samples):" in text
    assert "bpm   estimated (2), name (1), unknown (1)" in text


def test_training_leaves_one_shots_out_unless_asked(sharded):
    out, _ = sharded

    def count(one_shots: bool) -> tuple[int, set[int]]:
        cfg = DataConfig(path=str(out), sample_size=4096, batch_size=1, num_workers=0, one_shots=one_shots)
        batches = list(make_loader(cfg, "train", training=False))
        return len(batches), {int(b["role"][0]) for b in batches}

    loops, roles = count(False)
    assert loops == 3 and -1 not in roles  # every sample has a role
    assert count(True)[0] == 4


def test_merged_parts_count_the_same(pack, tmp_path):
    for i in range(2):
        shard([pack[0]], tmp_path, options(), progress=False, part=(i, 2))
    merged = merge_parts(tmp_path)
    whole = shard([pack[0]], tmp_path / "whole", options(), progress=False)
    for field in ("kinds", "roles", "metadata_sources"):
        assert getattr(merged, field) == getattr(whole, field), field


def copy_pack(pack: Path, root: Path) -> Path:
    for path in pack.rglob("*.wav"):
        target = root / path.relative_to(pack)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return root


def test_data_tag_writes_a_draft_that_a_correction_overrides(pack, tmp_path):
    root = copy_pack(pack[0], tmp_path / "pack")
    (root / "Misc" / "metadata.csv").write_text("file_name,genre\nx01.wav,techno\n")  # the user's: kept
    written = tag([root], workers=1, progress=False)
    draft = root / "Drums" / "metadata.csv"
    assert written == {draft: 2, root / "Bass" / "metadata.csv": 1, root / "Misc" / "metadata.draft.csv": 1}
    rows = {row["file_name"]: row for row in csv.DictReader(draft.open())}
    assert rows["break01.wav"]["role"] == "drums" and rows["break01.wav"]["kind"] == "loop"
    assert float(rows["break01.wav"]["bpm"]) == pytest.approx(pack[1]["Drums/break01.wav"][1]["bpm"], rel=0.02)
    assert rows["break01.wav"]["bars"] == "2" and float(rows["break01.wav"]["bpm_confidence"]) >= 0.6
    assert "key: a drums part has no key" in rows["break01.wav"]["notes"]
    assert (root / "Misc" / "metadata.csv").read_text() == "file_name,genre\nx01.wav,techno\n"
    assert (root / "Misc" / "metadata.draft.csv").is_file()

    # the user corrects the tempo (they hear it at half) and the role; the sharder takes theirs
    rows["break01.wav"].update(bpm=f"{float(rows['break01.wav']['bpm']) / 2:.2f}", bars="1", role="melodic")
    with draft.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows["break01.wav"]))
        writer.writeheader()
        writer.writerows(rows.values())
    out = tmp_path / "shards"
    shard([root], out, options(), progress=False)
    beat = samples(out)["Drums/break01.wav"]
    assert beat["bpm"] == pytest.approx(float(rows["break01.wav"]["bpm"]))
    assert (beat["bpm_source"], beat["bars"], beat["role"], beat["role_source"]) == ("csv", 1, "melodic", "csv")
    assert "bpm_confidence" not in beat


@pytest.mark.slow  # a fresh process loads librosa's kernels: tens of seconds on a busy machine
def test_data_tag_command(pack, tmp_path):
    root = copy_pack(pack[0], tmp_path / "pack")
    result = subprocess.run(
        [sys.executable, "-m", "wavediff.cli", "data", "tag", str(root), "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"{root / 'Drums' / 'metadata.csv'}: 2 file(s)" in result.stdout
    rows = list(csv.DictReader((root / "Misc" / "metadata.csv").open()))
    assert rows[0]["file_name"] == "x01.wav" and rows[0]["kind"] == "one-shot"


# --------------------------------------------------------------------------- bad input never stops the job


def test_bad_inputs_get_null_estimates_with_reasons_and_the_job_goes_on(tmp_path):
    rng = np.random.default_rng(2)
    loop, meta = synthesize_loop("techno", rng, 8000, 2)
    first, _ = synthesize_loop("house", rng, 8000, 4, bpm=124)
    second, _ = synthesize_loop("house", rng, 8000, 4, bpm=93)
    root = tmp_path / "pack"
    write(root / "good.wav", loop, 8000)
    write(root / "tail.wav", torch.cat([loop, loop[:, :1200]], dim=1), 8000)  # 2 bars and 0.15 s
    write(root / "silence.wav", np.zeros((2, 4 * 8000), dtype=np.float32), 8000)
    write(root / "two.wav", torch.cat([first, second], dim=1), 8000)
    out = tmp_path / "shards"
    manifest = shard([root], out, options(sample_rate=8000, max_seconds=30.0), progress=False)
    assert [s["reason"] for s in manifest.skipped] == ["silent (RMS below -60 dBFS)"]
    found = {source: info for source, info in samples(out).items()}
    assert found["good.wav"]["bpm"] == pytest.approx(meta["bpm"], rel=0.02)
    assert "no whole number of bars" in found["tail.wav"]["bpm_reason"]
    assert found["two.wav"]["bpm_reason"].startswith("two tempos")
    assert manifest.splits["train"].samples == 3


def test_a_twenty_minute_file_is_sharded_in_chunks_without_a_tempo(tmp_path):
    loop, _ = synthesize_loop("techno", np.random.default_rng(2), 8000, 2)
    write(tmp_path / "pack" / "mix.wav", loop.repeat(1, 20 * 60 * 8000 // loop.shape[1] + 1)[:, : 20 * 60 * 8000], 8000)
    manifest = shard([tmp_path / "pack"], tmp_path / "out", options(sample_rate=8000), progress=False)
    assert manifest.splits["train"].samples == 40  # 30 s chunks
    info = samples(tmp_path / "out")["mix.wav"]
    assert info["bpm"] is None and "1200 s long: a song or a mix" in info["bpm_reason"]
    assert info["kind"] is None and "a song or a mix" in info["kind_reason"]
    assert info["loop"] is False


def test_a_denoiser_trains_on_roles_and_generates_at_one(sharded, tmp_path):
    recipe = load_recipe(
        "loops-tiny-cpu",
        DiffusionRecipe,
        [
            f'data.path="{sharded[0]}"',
            'autoencoder=""',
            *TINY_DENOISER,
            f"sample_rate={SR}",
            "model.attention_levels=[]",  # a waveform model: attention over every sample would be slow
            "conditioning.role=true",
            "train.steps=2",
            "train.sample_every=1000",
            "sampling.steps=2",
        ],
    )
    last = train_diffusion(recipe, tmp_path / "run", progress=False)
    model = load_denoiser(last, "cpu")
    assert "role" in model.conditioner.names and model.recipe.conditioning.roles == list(ROLES)
    audio, info = generate(model, genre=None, bpm=240, bars=1, role="bass")
    assert info["role"] == "bass" and audio.shape[-1] == SR


def test_bad_and_odd_files_through_shard_and_tag_in_worker_processes(tmp_path):
    """Every bad input of the issue, and files librosa cannot analyse, in one pack through the
    sharder and `data tag`, each with two worker processes: both jobs finish, every file keeps
    its row, and each bad one has a null tempo with its reason."""
    rng = np.random.default_rng(2)
    loop, meta = synthesize_loop("techno", rng, 8000, 2)
    first, _ = synthesize_loop("house", rng, 8000, 4, bpm=124)
    second, _ = synthesize_loop("house", rng, 8000, 4, bpm=93)
    hi, hi_meta = synthesize_loop("house", rng, 96000, 1)
    root = tmp_path / "pack"
    write(root / "tail.wav", torch.cat([loop, loop[:, :1200]], dim=1), 8000)  # 2 bars and 0.15 s
    write(root / "silence.wav", np.zeros((2, 4 * 8000), dtype=np.float32), 8000)
    write(root / "two.wav", torch.cat([first, second], dim=1), 8000)
    write(root / "mix.wav", loop.repeat(1, 70 * 8000 // loop.shape[1] + 1)[:, : 70 * 8000], 8000)  # a 70 s song
    write(root / "one.wav", np.full((2, 1), 0.5, dtype=np.float32), 44100)  # a single sample
    write(root / "dc.wav", np.full((2, 96000), 0.3, dtype=np.float32), 96000)  # an offset and nothing else
    write(root / "mono8k.wav", loop[0], 8000)
    write(root / "stereo96k.wav", hi, 96000)
    bad = {
        "tail.wav": "no whole number of bars",
        "two.wav": "two tempos",
        "mix.wav": "70 s long: a song or a mix",
        "one.wav": "too short to analyse",
        "dc.wav": "silent",
    }

    out = tmp_path / "shards"
    manifest = shard([root], out, options(sample_rate=8000, max_seconds=30.0, workers=2), progress=False)
    skipped = {Path(s["path"]).name: s["reason"] for s in manifest.skipped}
    found = samples(out)
    assert set(found) | set(skipped) == {p.name for p in root.iterdir()}, (sorted(found), skipped)
    assert skipped["silence.wav"].startswith("silent") and skipped["one.wav"].startswith("too short")
    for name, reason in bad.items() - {("one.wav", bad["one.wav"])}:
        assert found[name]["bpm"] is None and reason in found[name]["bpm_reason"], found[name]
    assert found["mono8k.wav"]["bpm"] == pytest.approx(meta["bpm"], rel=0.02)
    assert found["stereo96k.wav"]["bpm"] == pytest.approx(hi_meta["bpm"], rel=0.02)

    written = tag([root], workers=2, progress=False)
    assert written == {root / "metadata.csv": 8}
    rows = {row["file_name"]: row for row in csv.DictReader((root / "metadata.csv").open())}
    for name, reason in {**bad, "silence.wav": "silent"}.items():
        assert rows[name]["bpm"] == "" and "bpm: " in rows[name]["notes"] and reason in rows[name]["notes"], rows[name]
    assert float(rows["mono8k.wav"]["bpm"]) == pytest.approx(meta["bpm"], rel=0.02)
    assert float(rows["stereo96k.wav"]["bpm"]) == pytest.approx(hi_meta["bpm"], rel=0.02)


def test_finetune_on_a_plain_named_pack_trains_on_estimated_tempos_and_roles(latent_pack, tmp_path):
    """`finetune` shards the pack itself: a pack with no tempo in its names and no sidecars reaches
    the latents it trains on with estimated tempo, bars and kind, and with a role, which a base
    conditioned on role learns from (its batches carry the role index, not the null one)."""
    from test_finetune import SMALL
    from test_train_diffusion import tiny

    from wavediff.pipelines.finetune import finetune
    from wavediff.training.diffusion import train_diffusion

    base = tmp_path / "base"
    train_diffusion(
        tiny(
            latent_pack, "conditioning.role=true", "train.steps=1", "train.checkpoint_every=1", "train.sample_every=0"
        ),
        base,
        progress=False,
    )
    tagged = tmp_path / "tagged"
    synthesize_pack(tagged, genres=["house"], loops_per_genre=3, sample_rate=8000, bars=2, seed=1)
    truth = {}
    for i, path in enumerate(sorted(tagged.rglob("*.wav"))):  # plain names, no sidecars
        plain = write(tmp_path / "pack" / "loops" / f"beat{i:02d}.wav", sf.read(path, always_2d=True)[0].T, 8000)
        truth[f"loops/{plain.name}"] = json.loads(path.with_suffix(".json").read_text())
    finetune(base, tmp_path / "pack", genre="house", steps=1, out=tmp_path / "run", overrides=SMALL, progress=False)

    for folder in (
        *(tmp_path / "run" / "data").glob("pack-*/audio"),
        *(tmp_path / "run" / "data").glob("pack-*/latents-*"),
    ):
        found = samples(folder)
        assert set(truth) <= set(found), folder
        for name, meta in truth.items():
            info = found[name]
            assert info["bpm"] == pytest.approx(meta["bpm"], rel=0.02) and info["bpm_source"] == "estimated", info
            assert info["bars"] == 2 and info["kind"] == "loop" and info["role"] in ROLES, info
    recipe = load_recipe(
        "loops-tiny-cpu", DiffusionRecipe, [f'data.path="{next((tmp_path / "run" / "data").glob("pack-*/latents-*"))}"']
    )
    batch = next(
        iter(
            make_loader(
                dataclasses.replace(recipe.data, num_workers=0, sample_size=64), "train", training=False, kind="latent"
            )
        )
    )
    assert (batch["role"] >= 0).all()
