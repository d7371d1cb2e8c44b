"""The shard loader, on real shards written by the real sharder from audio written here."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from data_tools.shard import ShardOptions, sample_key, shard
from wavediff.config import AugmentConfig, DataConfig
from wavediff.errors import DataError
from wavediff.io.audio import decode, encode, save
from wavediff.shards.format import read_manifest
from wavediff.shards.loader import GenreVocab, build_dataset, make_loader, resolve_urls

SR = 8000
T = 4096  # window length in samples

# name: (genre folder or "", samples, loop)
CLIPS = {
    "short_loop": ("techno", 1800, True),  # tiled 2.3× into the window
    "loop_a": ("techno", 5000, True),
    "loop_b": ("house", 6000, True),
    "loop_c": ("house", 3000, True),
    "long_take": ("ambient", 9000, False),  # cropped
    "short_take": ("ambient", 2500, False),  # zero-padded
    "stray": ("", 4500, False),  # no genre folder: genre id -1
    "take_d": ("techno", 4200, False),
}


def _write_clips(src: Path) -> dict[str, dict]:
    """Stereo noise clips (left ≠ right) with sidecars; returns name → {key, wav, ...}."""
    gen = torch.Generator().manual_seed(1)
    clips = {}
    for name, (genre, n, loop) in CLIPS.items():
        path = src / genre / f"{name}.wav" if genre else src / f"{name}.wav"
        wav = 0.25 * torch.randn(2, n, generator=gen).clamp(-3, 3)
        save(path, wav, SR)
        path.with_suffix(".json").write_text(json.dumps({"loop": loop, "bpm": 120, "bars": 1}))
        key = sample_key(hashlib.sha1(path.read_bytes()).hexdigest(), 0)
        clips[name] = {"key": key, "wav": wav, "genre": genre or None, "loop": loop}
    return clips


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One folder with a shard per sample, one with every sample in a single shard."""
    root = tmp_path_factory.mktemp("data")
    clips = _write_clips(root / "src")
    options = dict(sample_rate=SR, channels=2, workers=1, val_fraction=0.0)
    many = shard([root / "src"], root / "many", ShardOptions(shard_size_mb=1e-4, **options), progress=False)
    one = shard([root / "src"], root / "one", ShardOptions(shard_size_mb=64, **options), progress=False)
    assert len(many.splits["train"].shards) == len(CLIPS)
    assert len(one.splits["train"].shards) == 1
    by_key = {c["key"]: c for c in clips.values()}
    return {"root": root, "clips": clips, "by_key": by_key, "many": root / "many", "one": root / "one"}


def _cfg(folder: Path, **kw) -> DataConfig:
    kw = {"sample_size": T, "batch_size": 3, "num_workers": 0, "shuffle_buffer": 4, **kw}
    return DataConfig(path=str(folder), **kw)


def _samples(loader, n: int | None = None) -> list[dict]:
    """Un-batch a loader's output into per-sample dicts (stopping after n samples)."""
    out = []
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            out.append({k: (v if k == "key" else v[i]) for k, v in batch.items()} | {"key": key})
            if n is not None and len(out) == n:
                return out
    return out


def _eval(data, folder="many", **kw) -> dict[str, dict]:
    return {s["key"]: s for s in _samples(make_loader(_cfg(data[folder], **kw), training=False))}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-4)  # FLAC stores 16-bit samples


# --------------------------------------------------------------------------- batches


def test_batch_shapes_and_dtypes(data):
    batch = next(iter(make_loader(_cfg(data["many"]), training=True, seed=3)))
    assert batch["audio"].shape == (3, 2, T) and batch["audio"].dtype == torch.float32
    for name in ("genre", "frames"):
        assert batch[name].dtype == torch.long and batch[name].shape == (3,)
    for name in ("bpm", "bars", "seconds", "seconds_start", "seconds_total"):
        assert batch[name].dtype == torch.float32 and batch[name].shape == (3,)
    assert batch["loop"].dtype == torch.bool
    assert len(batch["key"]) == 3 and all(k in data["by_key"] for k in batch["key"])
    assert torch.all(batch["bpm"] == 120) and torch.all(batch["bars"] == 1)


def test_short_loop_is_tiled(data):
    clip = data["clips"]["short_loop"]
    sample = _eval(data)[clip["key"]]
    n = clip["wav"].shape[-1]
    tiled = clip["wav"].repeat(1, math.ceil(T / n))[:, :T]
    assert _close(sample["audio"], tiled)
    assert sample["frames"] == T and sample["loop"]
    assert sample["seconds"] == pytest.approx(T / SR)
    assert sample["seconds_start"] == 0 and sample["seconds_total"] == pytest.approx(n / SR)


def test_short_non_loop_is_zero_padded(data):
    clip = data["clips"]["short_take"]
    sample = _eval(data)[clip["key"]]
    n = clip["wav"].shape[-1]
    assert sample["frames"] == n and not sample["loop"]
    assert _close(sample["audio"][:, :n], clip["wav"])
    assert torch.all(sample["audio"][:, n:] == 0)
    assert sample["seconds"] == pytest.approx(n / SR)


def test_long_sample_is_cropped_from_start_in_eval_and_anywhere_in_training(data):
    clip = data["clips"]["long_take"]
    assert _close(_eval(data)[clip["key"]]["audio"], clip["wav"][:, :T])
    starts = set()
    for seed in range(6):
        loader = make_loader(_cfg(data["one"], augment=AugmentConfig(roll=False)), training=True, seed=seed)
        for s in _samples(loader, 2 * len(CLIPS)):
            if s["key"] == clip["key"]:
                start = round(float(s["seconds_start"]) * SR)
                assert _close(s["audio"], clip["wav"][:, start : start + T])
                assert s["frames"] == T and s["seconds_total"] == pytest.approx(9000 / SR)
                starts.add(start)
    assert len(starts) > 1 and max(starts) <= 9000 - T


def test_genre_ids_follow_the_sorted_manifest_vocabulary(data):
    vocab = GenreVocab.from_manifest(read_manifest(data["many"]))
    assert vocab.names == ("ambient", "house", "techno")
    for key, sample in _eval(data).items():
        assert sample["genre"] == vocab.id(data["by_key"][key]["genre"])
    assert _eval(data)[data["clips"]["stray"]["key"]]["genre"] == -1
    # a checkpoint's vocabulary replaces the manifest's; genres outside it are unknown
    loader = make_loader(_cfg(data["many"]), training=False, genres=["techno"])
    for s in _samples(loader):
        assert s["genre"] == (0 if data["by_key"][s["key"]]["genre"] == "techno" else -1)


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("folder", ["many", "one"])
def test_eval_with_two_workers_sees_every_sample_exactly_once(data, folder):
    loader = make_loader(_cfg(data[folder], num_workers=2), training=False)
    for _ in range(2):  # persistent workers: a second pass is again exactly one pass
        keys = Counter(s["key"] for s in _samples(loader))
        assert set(keys) == set(data["by_key"]) and set(keys.values()) == {1}


@pytest.mark.parametrize("folder", ["many", "one"])
def test_eval_over_two_ranks_of_two_workers_sees_every_sample_exactly_once(data, folder):
    keys = Counter()
    for rank in (0, 1):
        loader = make_loader(_cfg(data[folder], num_workers=2), training=False, rank=rank, world_size=2)
        keys.update(s["key"] for s in _samples(loader))
    assert set(keys) == set(data["by_key"]) and set(keys.values()) == {1}


@pytest.mark.parametrize("folder", ["many", "one"])
def test_training_ranks_read_disjoint_samples_each_epoch(data, folder):
    urls = resolve_urls(_cfg(data[folder]), "train")
    per_epoch = len(CLIPS) // 2  # 8 samples, 2 ranks, 4 each (one-sample shards or sample split)
    epochs = []
    for rank in (0, 1):
        ds = build_dataset(urls, sample_size=T, training=True, seed=5, shuffle_buffer=4, rank=rank, world_size=2)
        stream = iter(ds)
        epochs.append([{next(stream)["key"] for _ in range(per_epoch)} for _ in range(3)])
    for mine, theirs in zip(*epochs):
        assert len(mine) == per_epoch and not mine & theirs and mine | theirs == set(data["by_key"])
    if folder == "many":  # shards are dealt anew each epoch
        assert len({frozenset(e) for e in epochs[0]}) > 1


def test_same_seed_same_batches_other_seed_other_batches(data):
    aug = AugmentConfig(roll=True, gain_db=6.0, polarity=True, channel_swap=True)

    def first(seed):
        loader = make_loader(_cfg(data["many"], augment=aug, num_workers=2), training=True, seed=seed)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    a, b, c = first(7), first(7), first(8)
    for x, y in zip(a, b):
        assert x["key"] == y["key"] and torch.equal(x["audio"], y["audio"])
    assert any(x["key"] != z["key"] or not torch.equal(x["audio"], z["audio"]) for x, z in zip(a, c))


# --------------------------------------------------------------------------- augmentation


def test_roll_rotates_loops(data):
    clip = data["clips"]["loop_c"]  # 3000 samples: the window holds it tiled, then rotated
    n = clip["wav"].shape[-1]
    urls = resolve_urls(_cfg(data["many"]), "train")
    ds = build_dataset(urls, sample_size=T, training=True, seed=0, augment=AugmentConfig(roll=True), shuffle_buffer=4)
    starts = set()
    stream = iter(ds)
    while len(starts) < 3:
        s = next(stream)
        if s["key"] == clip["key"]:
            start = round(s["seconds_start"] * SR)
            assert _close(s["audio"], clip["wav"][:, (start + torch.arange(T)) % n])
            assert s["frames"] == T
            starts.add(start)
    assert max(starts) > 0


def _decoded_members(folder: Path) -> dict[str, torch.Tensor]:
    """key → the whole decode of its FLAC member, read with plain tarfile."""
    members = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".flac"):
                    members[member.name[: -len(".flac")]] = decode(tar.extractfile(member).read())[0]
    return members


def test_training_windows_are_exact_spans_of_the_decoded_member(data):
    """Windows are decoded alone: each must equal the same span of a whole decode, whichever
    way it was cut (a loop rolled inside, wrapped around its end, or tiled; a take cropped or padded)."""
    members = _decoded_members(data["one"])
    urls = resolve_urls(_cfg(data["one"]), "train")
    ds = build_dataset(urls, sample_size=T, training=True, seed=4, augment=AugmentConfig(roll=True), shuffle_buffer=4)
    cuts = set()
    stream = iter(ds)
    for _ in range(10 * len(CLIPS)):
        s = next(stream)
        whole = members[s["key"]]
        n, start = whole.shape[-1], round(s["seconds_start"] * SR)
        if s["loop"]:
            expected, valid = whole[:, (start + torch.arange(T)) % n], T
            cuts.add("tiled" if n < T else "wrapped" if start + T > n else "inside")
        else:
            valid = min(T, n - start)
            expected = torch.nn.functional.pad(whole[:, start : start + valid], (0, T - valid))
            cuts.add("padded" if valid < T else "cropped")
        assert torch.equal(s["audio"], expected) and s["frames"] == valid, (s["key"], start)
    assert cuts == {"tiled", "wrapped", "inside", "padded", "cropped"}


def test_gain_polarity_and_channel_swap_keep_shape_and_content(data):
    aug = AugmentConfig(roll=False, gain_db=6.0, polarity=True, channel_swap=True)
    clip = data["clips"]["long_take"]
    urls = resolve_urls(_cfg(data["many"]), "train")
    ds = build_dataset(urls, sample_size=T, channels=2, training=True, seed=2, augment=aug, shuffle_buffer=4)
    seen = set()
    stream = iter(ds)
    for _ in range(40 * len(CLIPS)):
        s = next(stream)
        if s["key"] != clip["key"]:
            continue
        start = round(s["seconds_start"] * SR)
        base = clip["wav"][:, start : start + T]
        swapped = bool((s["audio"][0] @ base[1]).abs() > (s["audio"][0] @ base[0]).abs())
        ref = base.flip(0) if swapped else base
        gain = float((s["audio"] * ref).sum() / (ref * ref).sum())
        assert s["audio"].shape == (2, T)
        assert _close(s["audio"], gain * ref) and abs(20 * math.log10(abs(gain))) <= 6.0 + 1e-3
        seen.add((swapped, gain < 0))
    assert len(seen) >= 3  # swaps and flips both happen, and not always


# --------------------------------------------------------------------------- latents


def _latent_tar(path: Path, latents: dict[str, np.ndarray], meta: dict) -> None:
    with wds.TarWriter(str(path), encoder=False) as sink:
        for key, latent in latents.items():
            buf = io.BytesIO()
            np.save(buf, latent)
            sink.write({"__key__": key, "latent.npy": buf.getvalue(), "json": json.dumps(meta).encode()})


def test_latent_shards_crop_in_frames_and_update_timing(tmp_path):
    hop, sr, frames, crop = 256, SR, 40, 16
    gen = np.random.default_rng(0)
    latents = {f"k{i}": gen.standard_normal((4, frames)).astype(np.float16) for i in range(3)}
    meta = {
        "autoencoder": "ae-1",
        "hop_length": hop,
        "sample_rate": sr,
        "offset_s": 10.0,
        "duration_s": frames * hop / sr,
        "source_duration_s": 60.0,
        "loop": False,
        "genre": "house",
        "bpm": 128,
    }
    _latent_tar(tmp_path / "lat.tar", latents, meta)
    ds = build_dataset(
        str(tmp_path / "lat.tar"),
        kind="latent",
        sample_size=crop,
        sample_rate=sr,
        genres=["house"],
        training=True,
        seed=1,
        autoencoder="ae-1",
        shuffle_buffer=2,
    )
    stream = iter(ds)
    starts = set()
    for _ in range(12):
        s = next(stream)
        assert s["latent"].shape == (4, crop) and s["latent"].dtype == torch.float32
        start = (s["seconds_start"] - 10.0) * sr / hop
        assert start == pytest.approx(round(start), abs=1e-6)
        start = round(start)
        assert torch.equal(s["latent"], torch.from_numpy(latents[s["key"]][:, start : start + crop].astype(np.float32)))
        assert s["seconds"] == pytest.approx(crop * hop / sr) and s["seconds_total"] == 60.0
        assert s["genre"] == 0 and s["bpm"] == 128
        starts.add(start)
    assert len(starts) > 1
    tar = str(tmp_path / "lat.tar")
    other = build_dataset(tar, kind="latent", sample_size=crop, training=False, autoencoder="ae-2")
    with pytest.raises(DataError, match="k0.*ae-1"):
        next(iter(other))
    other = build_dataset(tar, kind="latent", sample_size=crop, training=False, sample_rate=16000)
    with pytest.raises(DataError, match="k0: sample rate 8000 Hz, expected 16000"):
        next(iter(other))


# --------------------------------------------------------------------------- bad data


def _audio_member(seconds: float = 0.5) -> bytes:
    return encode(0.1 * torch.randn(2, int(SR * seconds)), SR, "flac")


def test_corrupt_member_and_truncated_shard_are_skipped_with_a_warning(tmp_path):
    meta = json.dumps({"sample_rate": SR, "loop": True}).encode()
    with wds.TarWriter(str(tmp_path / "a.tar"), encoder=False) as sink:
        sink.write({"__key__": "good1", "flac": _audio_member(), "json": meta})
        sink.write({"__key__": "broken", "flac": b"fLaC not really", "json": meta})
        sink.write({"__key__": "good2", "flac": _audio_member(), "json": meta})
    with wds.TarWriter(str(tmp_path / "b.tar"), encoder=False) as sink:
        sink.write({"__key__": "good3", "flac": _audio_member(), "json": meta})
        sink.write({"__key__": "cut", "flac": _audio_member(2.0), "json": meta})
    whole = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(whole[: len(whole) // 2])
    urls = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    ds = build_dataset(urls, sample_size=T, sample_rate=SR, training=False)
    with pytest.warns(RuntimeWarning) as caught:
        keys = [s["key"] for s in ds]
    assert keys == ["good1", "good2", "good3"]
    messages = " | ".join(str(w.message) for w in caught)
    assert "a.tar: sample broken" in messages and "b.tar" in messages


def test_a_member_damaged_inside_the_window_is_skipped_naming_it(tmp_path):
    meta = json.dumps({"sample_rate": SR, "loop": True}).encode()
    flac = bytearray(_audio_member(1.0))
    middle = len(flac) // 2
    flac[middle : middle + 64] = bytes(b ^ 0x5A for b in flac[middle : middle + 64])
    with wds.TarWriter(str(tmp_path / "a.tar"), encoder=False) as sink:
        sink.write({"__key__": "good1", "flac": _audio_member(), "json": meta})
        sink.write({"__key__": "damaged", "flac": bytes(flac), "json": meta})
        sink.write({"__key__": "good2", "flac": _audio_member(), "json": meta})
    ds = build_dataset([str(tmp_path / "a.tar")], sample_size=SR, sample_rate=SR, training=False)
    with pytest.warns(RuntimeWarning, match=r"a\.tar: sample damaged: "):
        keys = [s["key"] for s in ds]
    assert keys == ["good1", "good2"]


def test_sample_rate_mismatch_is_an_error_naming_shard_and_key(data):
    urls = resolve_urls(_cfg(data["many"]), "train")
    ds = build_dataset(urls, sample_size=T, sample_rate=16000, training=False)
    with pytest.raises(DataError, match=r"train-\d{6}\.tar: sample [0-9a-f]{16}_000: .*16000"):
        next(iter(ds))
    with pytest.raises(DataError, match="manifest.json.*8000 Hz.*16000"):
        make_loader(_cfg(data["many"]), expect_sample_rate=16000)


def test_missing_folder_manifest_or_shards_are_clear_errors(data, tmp_path):
    with pytest.raises(DataError, match="nowhere: shard folder does not exist"):
        resolve_urls(_cfg(tmp_path / "nowhere"), "train")
    with pytest.raises(FileNotFoundError, match="manifest.json: no manifest"):
        resolve_urls(_cfg(tmp_path), "train")
    with pytest.raises(DataError, match="split 'val' lists no shards"):
        resolve_urls(_cfg(data["many"]), "val")
    with pytest.raises(DataError, match=r"many/train-000008.tar: shard not found"):
        resolve_urls(_cfg(data["many"], train="train-{000000..000099}.tar"), "train")
    with pytest.raises(DataError, match="data.path is empty"):
        resolve_urls(DataConfig(), "train")


def test_gzipped_local_shards_and_webdataset_metadata_members_read_like_plain_ones(data, tmp_path):
    """Local shards are read by random access, not webdataset's streaming: the same samples,
    compressed or not, with webdataset's `__...__` members left out."""
    urls = resolve_urls(_cfg(data["many"]), "train")
    for i, url in enumerate(urls):
        with tarfile.open(url) as src, tarfile.open(tmp_path / f"{i}.tar.gz", "w:gz") as dst:
            for member in src:
                dst.addfile(member, src.extractfile(member))
            if i == 0:
                meta = tarfile.TarInfo("__index__/k.json")
                meta.size = 2
                dst.addfile(meta, io.BytesIO(b"{}"))
    gz = [str(tmp_path / f"{i}.tar.gz") for i in range(len(urls))]
    plain = list(build_dataset(urls, sample_size=T, training=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shard skipped, no sample made of the metadata
        packed = list(build_dataset(gz, sample_size=T, training=False))
    assert [s["key"] for s in packed] == [s["key"] for s in plain] and len(plain) == len(CLIPS)
    assert all(torch.equal(a["audio"], b["audio"]) for a, b in zip(plain, packed))


def test_brace_patterns_and_pipe_urls_reach_the_same_samples(data):
    cfg = _cfg(data["many"], train="train-{000000..000003}.tar")
    urls = resolve_urls(cfg, "train")
    assert urls == [str(data["many"] / f"train-{i:06d}.tar") for i in range(4)]
    piped = ["pipe:cat " + u for u in urls]
    direct = [s["key"] for s in build_dataset(urls, sample_size=T, training=False)]
    assert [s["key"] for s in build_dataset(piped, sample_size=T, training=False)] == direct
    assert len(direct) == 4
    assert len(list(tarfile.open(urls[0]))) == 2  # one sample: .flac + .json


def _damage_header(tar: Path, member: int) -> None:
    """Overwrite the header block of the tar's `member`-th member: tarfile takes it for the end."""
    with tarfile.open(tar) as t:
        offset = t.getmembers()[member].offset
    data = bytearray(tar.read_bytes())
    data[offset : offset + 512] = b"\x07" * 512
    tar.write_bytes(bytes(data))


@pytest.fixture
def eleven(tmp_path):
    """A real shard folder of one shard holding 11 samples."""
    gen = torch.Generator().manual_seed(3)
    for i in range(11):
        save(tmp_path / "src" / f"c{i:02d}.wav", 0.2 * torch.randn(2, 2000, generator=gen), SR)
    options = ShardOptions(sample_rate=SR, workers=1, val_fraction=0.0)
    manifest = shard([tmp_path / "src"], tmp_path / "out", options, progress=False)
    assert manifest.splits["train"].shards == ["train-000000.tar"]
    return tmp_path / "out"


def test_a_damaged_tar_header_mid_shard_is_a_warning_naming_shard_and_shortfall(eleven):
    _damage_header(eleven / "train-000000.tar", 2 * 5)  # the 6th sample's first member
    with pytest.warns(RuntimeWarning, match=r"train-000000\.tar: .*read 5 of the 11 samples"):
        evaluated = _samples(make_loader(_cfg(eleven), training=False))
    assert len(evaluated) == 5
    with pytest.warns(RuntimeWarning, match=r"train-000000\.tar: .*read 5 of the 11 samples"):
        _samples(make_loader(_cfg(eleven), training=True), 12)


def test_a_shard_cut_at_a_member_boundary_is_a_warning_from_the_manifest_count(eleven):
    tar = eleven / "train-000000.tar"
    with tarfile.open(tar) as t:
        offset = t.getmembers()[2 * 7].offset
    tar.write_bytes(tar.read_bytes()[:offset])  # tarfile sees a clean end after 7 samples
    with pytest.warns(RuntimeWarning, match=r"train-000000\.tar: read 7 of the 11 samples"):
        assert len(_samples(make_loader(_cfg(eleven), training=False))) == 7
    manifest = json.loads((eleven / "manifest.json").read_text())
    del manifest["splits"]["train"]["shard_samples"]  # as written before the per-shard count
    (eleven / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match=r"train-000000\.tar: read 7 of the 11 samples"):
        _samples(make_loader(_cfg(eleven), training=False))  # a split of one shard: its count is the split's


def test_manifests_without_per_shard_counts_still_load(data, tmp_path):
    manifest = json.loads((data["many"] / "manifest.json").read_text())
    for entry in manifest["splits"].values():
        entry.pop("shard_samples", None)
    old = tmp_path / "old"
    old.mkdir()
    for name in manifest["splits"]["train"]["shards"]:
        (old / name).write_bytes((data["many"] / name).read_bytes())
    (old / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_samples(make_loader(_cfg(old), training=False))) == len(CLIPS)
