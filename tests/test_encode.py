"""Latent shards: encode real audio shards with a real (tiny, untrained) autoencoder and read them back."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_tools.shard import ShardOptions, shard
from wavediff.config import AERecipe, AutoencoderConfig, DataConfig, to_dict
from wavediff.errors import CheckpointError, UserError
from wavediff.io import audio
from wavediff.latents.encode import encode_shards, merge_latent_manifests
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.checkpoint import save_checkpoint, weights_hash
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.shards.loader import make_loader
from wavediff.shards.reader import audio_samples, equal_length_batches

SR = 8000
HOP = 8
LOOP = 4000  # a multiple of the hop
ODD_LOOP = 4003  # not a multiple: the model must wrap it


def tiny_ae(padding: str = "circular") -> Autoencoder:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=3, padding=padding
    )
    return Autoencoder(cfg).eval()


def save_ae(run_dir: Path, model: Autoencoder, sample_rate: int = SR) -> Path:
    recipe = AERecipe(sample_rate=sample_rate, model=model.cfg)
    return save_checkpoint(run_dir, 1, model.state_dict(), {"kind": "autoencoder", "recipe": to_dict(recipe)})


def signal(samples: int, seed: int) -> np.ndarray:
    """A loop: whole periods only, so it wraps without a jump."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / samples
    x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * k * t + rng.uniform(0, 6)) for k in rng.integers(3, 300, 4))
    return x.astype(np.float32)


def make_shards(root: Path) -> Path:
    """Loops of several lengths in two genres, one shard per sample, both splits filled."""
    src = root / "src"
    lengths = {"a": LOOP, "b": LOOP, "c": LOOP, "d": ODD_LOOP, "e": 3000, "f": 5001, "g": LOOP, "h": 6000}
    for i, (name, n) in enumerate(lengths.items()):
        genre = "house" if i % 2 else "techno"
        (src / genre).mkdir(parents=True, exist_ok=True)
        sf.write(src / genre / f"{name}.wav", signal(n, i), SR)
        (src / genre / f"{name}.json").write_text(json.dumps({"loop": True}))
    x = signal(LOOP, 0)  # "a" rotated by one latent frame: still the same loop
    sf.write(src / "techno" / "a_rolled.wav", np.roll(x, -HOP), SR)
    (src / "techno" / "a_rolled.json").write_text(json.dumps({"loop": True}))
    out = root / "shards"
    options = ShardOptions(
        sample_rate=SR, channels=1, max_seconds=None, val_fraction=0.3, workers=1, shard_size_mb=0.001
    )
    manifest = shard([src], out, options, progress=False)
    assert manifest.splits["train"].samples >= 4 and manifest.splits["val"].samples >= 1
    return out


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("encode")
    model = tiny_ae()
    ckpt = save_ae(root / "ae", model)
    shards = make_shards(root)
    out = root / "latents"
    manifest = encode_shards(ckpt, shards, out, batch_size=3, progress=False)
    return {"root": root, "model": model, "ckpt": ckpt, "shards": shards, "out": out, "manifest": manifest}


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def samples_of(folder: Path, suffix: str, read) -> dict[str, tuple]:
    """{key: (read(member bytes, member name), json)} for every `KEY.suffix` in the folder's tars."""
    found = {}
    for path in sorted(folder.glob("*.tar")):
        members = tar_members(path)
        for name in members:
            if name.endswith(suffix):
                key = name.split(".")[0]
                found[key] = (read(members[name], name), json.loads(members[f"{key}.json"]))
    return found


def latents_of(folder: Path) -> dict[str, tuple[np.ndarray, dict]]:
    return samples_of(folder, ".latent.npy", lambda data, _: np.load(io.BytesIO(data), allow_pickle=False))


def audio_of(folder: Path) -> dict[str, tuple[torch.Tensor, dict]]:
    return samples_of(folder, ".flac", lambda data, name: audio.decode(data, name)[0])


def test_latent_shards_hold_each_sample_whole_with_its_metadata(pack) -> None:
    model, manifest = pack["model"], pack["manifest"]
    ae_id = weights_hash(pack["ckpt"])
    assert len(ae_id) == 16 and int(ae_id, 16) >= 0
    source = read_manifest(pack["shards"], "audio")
    assert read_manifest(pack["out"], "latent") == manifest
    assert manifest.autoencoder == ae_id
    assert (manifest.latent_dim, manifest.hop_length, manifest.sample_rate) == (3, HOP, SR)
    assert manifest.latent_rate == SR / HOP
    assert manifest.genres == source.genres == {"house": 4, "techno": 5}
    for split in ("train", "val"):
        assert manifest.splits[split].shards == source.splits[split].shards  # names kept
        assert manifest.splits[split].samples == source.splits[split].samples
        assert manifest.splits[split].seconds == pytest.approx(source.splits[split].seconds, abs=1e-3)

    sources = audio_of(pack["shards"])
    latents = latents_of(pack["out"])
    assert latents.keys() == sources.keys()
    for key, (latent, info) in latents.items():
        wav, audio_info = sources[key]
        assert latent.dtype == np.float16
        assert latent.shape == (3, -(-wav.shape[-1] // HOP))
        assert info == {**audio_info, "autoencoder": ae_id, "latent_rate": SR / HOP, "hop_length": HOP}
        with torch.no_grad():
            alone = model.encode(wav[None])[0].numpy()  # eval mode: the posterior mean, sample on its own
        np.testing.assert_allclose(latent.astype(np.float32), alone, rtol=2e-3, atol=2e-3)


def test_statistics_are_those_of_the_train_latents(pack) -> None:
    manifest = pack["manifest"]
    train = set()
    for name in manifest.splits["train"].shards:
        train |= {n.split(".")[0] for n in tar_members(pack["out"] / name)}
    all_latents = latents_of(pack["out"])
    frames = np.concatenate([all_latents[k][0].astype(np.float64) for k in sorted(train)], axis=1)
    stats = manifest.stats
    assert stats.frames == frames.shape[1] == manifest.splits["train"].frames
    np.testing.assert_allclose(stats.mean, frames.mean(1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, frames.std(1), rtol=1e-7)
    assert stats.overall_std == pytest.approx(frames.std(), rel=1e-7)


def test_loader_reads_the_latent_shards(pack) -> None:
    cfg = DataConfig(path=str(pack["out"]), sample_size=600, batch_size=2, num_workers=0)
    loader = make_loader(cfg, "val", training=False, kind="latent")
    latents = latents_of(pack["out"])
    seen = 0
    for batch in loader:
        assert batch["latent"].shape[1:] == (3, 600)
        for key, window, genre in zip(batch["key"], batch["latent"], batch["genre"]):
            stored = torch.from_numpy(latents[key][0].astype(np.float32))
            assert torch.equal(window, stored.repeat(1, 2)[:, :600])  # a loop window wraps around
            assert loader.dataset.genres.names[genre] == latents[key][1]["genre"]
            seen += 1
    assert seen == pack["manifest"].splits["val"].samples


def test_circular_model_keeps_loops_whole(pack) -> None:
    latents = {info["source"]: z.astype(np.float32) for z, info in latents_of(pack["out"]).values()}
    # Rotating a loop by one hop rotates its latents by one frame: nothing was cut or zero-padded.
    np.testing.assert_allclose(
        np.roll(latents["techno/a.wav"], -1, axis=1), latents["techno/a_rolled.wav"], rtol=5e-3, atol=5e-3
    )
    # A loop that is not a whole number of frames is tiled circularly, as the model's own pad does.
    x = torch.from_numpy(signal(ODD_LOOP, 3))
    tiled = torch.cat([x, x[: HOP - ODD_LOOP % HOP]])[None, None]
    with torch.no_grad():
        expected = pack["model"].encode(tiled)[0].numpy()
    np.testing.assert_allclose(latents["house/d.wav"], expected, rtol=2e-3, atol=2e-3)


def test_disjoint_ranges_merged_equal_one_full_run(pack, tmp_path) -> None:
    full = pack["manifest"]
    count = len(full.splits["train"].shards) + len(full.splits["val"].shards)
    out = tmp_path / "parts"
    first = encode_shards(pack["ckpt"], pack["shards"], out, batch_size=2, shard_range=(4, count), progress=False)
    assert first.shard_range == [4, count]
    assert not (out / MANIFEST_NAME).exists() and (out / f"manifest.part-4-{count}.json").is_file()
    with pytest.raises(ValueError, match="shards 0:4 are not encoded yet|leaves shards 0:4 unencoded"):
        merge_latent_manifests(out)
    encode_shards(pack["ckpt"], pack["shards"], out, batch_size=2, shard_range=(0, 4), progress=False)
    merged = merge_latent_manifests(out)

    assert read_manifest(out, "latent") == merged
    for name in full.splits["train"].shards + full.splits["val"].shards:
        assert tar_members(out / name) == tar_members(pack["out"] / name)
    stats, want = merged.stats, full.stats
    assert stats.frames == want.frames
    np.testing.assert_allclose(stats.mean, want.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, want.std, rtol=1e-9)
    assert stats.overall_std == pytest.approx(want.overall_std, rel=1e-9)
    for split in ("train", "val"):
        for field in ("shards", "samples", "frames", "shard_samples"):
            assert getattr(merged.splits[split], field) == getattr(full.splits[split], field)
        assert merged.splits[split].seconds == pytest.approx(full.splits[split].seconds, abs=2e-3)
    assert dataclasses.replace(merged, splits={}, stats=None) == dataclasses.replace(full, splits={}, stats=None)

    # A full run over the same folder replaces the partial manifests.
    encode_shards(pack["ckpt"], pack["shards"], out, progress=False)
    assert sorted(p.name for p in out.glob("manifest*")) == [MANIFEST_NAME]


def test_overlapping_ranges_do_not_merge(pack, tmp_path) -> None:
    out = tmp_path / "overlap"
    encode_shards(pack["ckpt"], pack["shards"], out, shard_range=(0, 3), progress=False)
    encode_shards(pack["ckpt"], pack["shards"], out, shard_range=(2, 9), progress=False)
    with pytest.raises(ValueError, match=r"manifest.part-2-9.json: shard range 2:9 overlaps"):
        merge_latent_manifests(out)


def test_batches_group_equal_lengths_and_keep_every_item() -> None:
    lengths = [5, 7, 5, 5, 9, 7, 5, 11, 5]
    items = [(i, torch.full((1, n), float(i))) for i, n in enumerate(lengths)]
    seen = []
    for tags, batch in equal_length_batches(items, 2):
        assert batch.shape[0] == len(tags) <= 2
        assert all(lengths[t] == batch.shape[-1] for t in tags)
        assert [int(b[0, 0]) for b in batch] == tags
        seen += tags
    assert sorted(seen) == list(range(len(lengths)))


def test_bad_inputs_fail_clearly(pack, tmp_path) -> None:
    ckpt, shards = pack["ckpt"], pack["shards"]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/manifest.json: no manifest"):
        encode_shards(ckpt, tmp_path, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="holds latent shards, expected audio"):
        encode_shards(ckpt, pack["out"], tmp_path / "o", progress=False)
    other_rate = save_ae(tmp_path / "ae16k", pack["model"], sample_rate=16000)
    with pytest.raises(ValueError, match=f"{shards}/manifest.json: shards are 8000 Hz, the autoencoder takes 16000 Hz"):
        encode_shards(other_rate, shards, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="shard range 3:99 is outside its 9 shards"):
        encode_shards(ckpt, shards, tmp_path / "o", shard_range=(3, 99), progress=False)
    with pytest.raises(CheckpointError, match=f"{tmp_path}: not a checkpoint"):
        encode_shards(tmp_path, shards, tmp_path / "o", progress=False)
    recipe = to_dict(AERecipe(sample_rate=SR, model=pack["model"].cfg))
    denoiser = save_checkpoint(tmp_path / "unet", 1, pack["model"].state_dict(), {"kind": "unet", "recipe": recipe})
    with pytest.raises(CheckpointError, match="config.json: a unet checkpoint, not an autoencoder"):
        encode_shards(denoiser, shards, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="no partial manifests"):
        merge_latent_manifests(pack["out"])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.tar"))


def test_variants_add_changed_copies_of_train_samples_only(pack, tmp_path):
    from wavediff.latents.encode import AudioVariant

    variants = [AudioVariant(gain_db=-6.0), AudioVariant(invert=True)]
    out = tmp_path / "augmented"
    manifest = encode_shards(pack["ckpt"], pack["shards"], out, batch_size=3, variants=variants, progress=False)
    plain = pack["manifest"].splits
    assert manifest.splits["train"].samples == 3 * plain["train"].samples
    assert manifest.splits["val"].samples == plain["val"].samples
    samples = {}
    for path in sorted(out.glob("train-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".latent.npy"):
                    samples[member.name[: -len(".latent.npy")]] = np.load(io.BytesIO(tar.extractfile(member).read()))
    key = next(k for k in samples if k.endswith("-inv"))
    original = key[: -len("-g+0dB-inv")]
    assert {f"{original}-g-6dB", f"{original}-g+0dB-inv"} <= samples.keys()
    source = {k: w for path in sorted(pack["shards"].glob("train-*.tar")) for k, _, w in audio_samples(path, SR)}
    with torch.no_grad():  # the copy is the encoding of the changed audio, not a changed latent
        expected = pack["model"].encode(-source[original][None])[0].numpy()
    np.testing.assert_allclose(samples[key].astype(np.float32), expected, atol=2e-3)


def test_a_shard_damaged_mid_way_stops_encode_naming_it(pack, tmp_path):
    (tmp_path / "src").mkdir()
    for i in range(11):
        sf.write(tmp_path / "src" / f"s{i:02d}.wav", signal(LOOP, 20 + i), SR)
    options = ShardOptions(sample_rate=SR, channels=1, max_seconds=None, val_fraction=0.0, workers=1)
    shard([tmp_path / "src"], tmp_path / "shards", options, progress=False)
    tar = tmp_path / "shards" / "train-000000.tar"
    with tarfile.open(tar) as t:
        offset = t.getmembers()[2 * 5].offset  # the 6th sample's header
        flac = t.getmembers()[2 * 4]  # the 5th sample's audio
    data = bytearray(tar.read_bytes())
    data[offset : offset + 512] = b"\x07" * 512  # tarfile takes a bad header for the end of the archive
    tar.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"train-000000\.tar: read 5 of the 11 samples"):
        encode_shards(pack["ckpt"], tmp_path / "shards", tmp_path / "latents", progress=False)
    assert not (tmp_path / "latents" / MANIFEST_NAME).exists()
    tar.write_bytes(tar.read_bytes()[: flac.offset_data + flac.size // 2])  # cut inside a member: tarfile raises
    with pytest.raises(UserError, match=r"train-000000\.tar: damaged tar \(unexpected end of data"):
        encode_shards(pack["ckpt"], tmp_path / "shards", tmp_path / "latents", progress=False)
