"""Loop files: smpl/acid chunks written into real WAVs and read back (by us and by
libsndfile), and periodic resizing of a loop to an exact length."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from soundfile import _ffi, _snd

from wavediff.errors import AudioError
from wavediff.io import audio
from wavediff.io.audio import LoopInfo, read_loop_info, resize_loop

SR = 8000

# libsndfile commands (sndfile.h), to read the chunks back with an independent parser.
SFC_GET_INSTRUMENT, SFC_GET_LOOP_INFO = 0x10D0, 0x10E0
SF_LOOP_INFO_SIZE = 44  # short num, short den, int mode, int beats, float bpm, int root, int future[6]
SF_INSTRUMENT_SIZE = 16 + 16 * 16  # gain, 6 chars, pad, loop_count, then 16 loops of 4 ints
SF_LOOP_FORWARD = 801


def noise(channels: int, samples: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed))


def chunks_of(data: bytes) -> list[tuple[bytes, int, int]]:
    """(id, size, offset) of every chunk; asserts the walk lands exactly on the file's end."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    out, pos = [], 12
    while pos < len(data):
        cid, size = struct.unpack("<4sI", data[pos : pos + 8])
        out.append((cid, size, pos))
        pos += 8 + size + (size & 1)
    assert pos == len(data), "chunks do not tile the file"
    return out


def body(data: bytes, cid: bytes) -> bytes:
    ((_, size, pos),) = [c for c in chunks_of(data) if c[0] == cid]
    return data[pos + 8 : pos + 8 + size]


def chunk(cid: bytes, payload: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(payload)) + payload + b"\0" * (len(payload) & 1)


def riff(*parts: bytes) -> bytes:
    inner = b"WAVE" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(inner)) + inner


def plain_wav_chunks(samples: int = 101) -> bytes:
    """The fmt and data chunks of a real WAV (8-bit mono, so the data chunk is odd-sized)."""
    data = audio.encode(noise(1, samples), SR, "wav", "PCM_U8")
    return data[12:]


def acid_body(flags: int = 0x04, root: int = 60, beats: int = 8, num: int = 4, bpm: float = 128.0) -> bytes:
    return struct.pack("<IHHfIHHf", flags, root, 0x8000, 0.0, beats, 4, num, bpm)


def smpl_body(start: int, last: int, loops: int = 1) -> bytes:
    return struct.pack("<9I", 0, 0, 125000, 60, 0, 0, 0, loops, 0) + struct.pack("<6I", 0, 0, start, last, 0, 0)


def libsndfile_view(path) -> tuple[tuple, tuple]:
    """libsndfile's own reading of the acid chunk (loop info) and smpl chunk (instrument)."""
    with sf.SoundFile(str(path)) as f:
        info = _ffi.new("char[]", SF_LOOP_INFO_SIZE)
        assert _snd.sf_command(f._file, SFC_GET_LOOP_INFO, info, SF_LOOP_INFO_SIZE) == 1, "no acid chunk seen"
        inst = _ffi.new("char[]", SF_INSTRUMENT_SIZE)
        assert _snd.sf_command(f._file, SFC_GET_INSTRUMENT, inst, SF_INSTRUMENT_SIZE) == 1, "no smpl chunk seen"
        loop_info = struct.unpack("<hhiifi", bytes(_ffi.buffer(info, 20)))
        instrument = struct.unpack("<ib7xi4I", bytes(_ffi.buffer(inst, 32)))
    return loop_info, instrument


# --------------------------------------------------------------------------- loop chunks


def test_loop_chunks_round_trip_and_libsndfile_reads_them(tmp_path):
    wav = noise(2, 2000)
    loop = LoopInfo(bpm=127.3, beats=8, beats_per_bar=4, root_note=45, start=10, end=1500)
    path = audio.save(tmp_path / "loop.wav", wav, SR, loop=loop)

    got = read_loop_info(path)
    assert got is not None
    assert got.bpm == pytest.approx(127.3, abs=1e-4)  # stored as float32
    assert (got.beats, got.beats_per_bar, got.root_note, got.start, got.end) == (8, 4, 45, 10, 1500)

    data = path.read_bytes()
    assert [c[0] for c in chunks_of(data)][-2:] == [b"smpl", b"acid"]
    assert all(offset % 2 == 0 for _, _, offset in chunks_of(data))
    # the smpl loop's end is inclusive, the sample period is in nanoseconds, play count 0 = forever
    period, unity = struct.unpack_from("<2I", body(data, b"smpl"), 8)
    start, last, play_count = struct.unpack_from("<2I4xI", body(data, b"smpl"), 36 + 8)
    assert (period, unity, start, last, play_count) == (125000, 45, 10, 1499, 0)

    (num, den, mode, beats, bpm, root), (_, basenote, loops, loop_mode, loop_start, _, _) = libsndfile_view(path)
    assert (num, den, mode, beats, root) == (4, 4, SF_LOOP_FORWARD, 8, 45)
    assert bpm == pytest.approx(127.3, abs=1e-4)
    assert (basenote, loops, loop_mode, loop_start) == (45, 1, SF_LOOP_FORWARD, 10)

    back, sr = audio.load(path)
    plain, _ = audio.load(audio.save(tmp_path / "plain.wav", wav, SR))
    assert sr == SR and torch.equal(back, plain)


def test_defaults_loop_the_whole_file_with_no_root(tmp_path):
    path = audio.save(tmp_path / "whole.wav", noise(1, 1234), SR, loop=LoopInfo(bpm=120, beats=4))
    assert read_loop_info(path) == LoopInfo(bpm=120.0, beats=4, beats_per_bar=4, root_note=None, start=0, end=1234)
    (_, _, _, _, _, root), (_, basenote, _, _, _, _, _) = libsndfile_view(path)
    assert root == -1 and basenote == 60  # acid says "no root"; smpl's unity note defaults to middle C
    flags = struct.unpack_from("<I", body(path.read_bytes(), b"acid"))[0]
    assert flags == 0x04  # stretch on, root not set, a loop (not a one-shot)


def test_odd_sized_audio_keeps_the_chunks_word_aligned(tmp_path):
    loop = LoopInfo(bpm=90, beats=3, beats_per_bar=3, root_note=40)
    path = audio.save(tmp_path / "odd.wav", noise(1, 801), SR, subtype="PCM_U8", loop=loop)
    data = path.read_bytes()
    kinds = {cid: (size, offset) for cid, size, offset in chunks_of(data)}
    assert kinds[b"data"][0] == 801 and kinds[b"smpl"][1] % 2 == 0 and kinds[b"acid"][1] % 2 == 0
    assert read_loop_info(path).beats_per_bar == 3
    assert sf.info(str(path)).frames == 801


def test_other_formats_take_the_loop_and_carry_nothing(tmp_path):
    wav, loop = noise(1, 1000), LoopInfo(bpm=120, beats=4)
    flac = audio.save(tmp_path / "a.flac", wav, SR, loop=loop)
    assert flac.read_bytes() == audio.save(tmp_path / "b.flac", wav, SR).read_bytes()
    assert read_loop_info(flac) is None
    assert read_loop_info(audio.save(tmp_path / "plain.wav", wav, SR)) is None
    text = tmp_path / "notes.wav"
    text.write_text("not a wav")
    assert read_loop_info(text) is None


@pytest.mark.parametrize(
    "loop, problem",
    [
        (LoopInfo(bpm=0, beats=4), "bpm"),
        (LoopInfo(bpm=math.nan, beats=4), "bpm"),
        (LoopInfo(bpm=120, beats=0), "beats"),
        (LoopInfo(bpm=120, beats=4, start=500, end=500), "start < end"),
        (LoopInfo(bpm=120, beats=4, start=-1), "start < end"),
        (LoopInfo(bpm=120, beats=4, end=1001), "start < end"),
        (LoopInfo(bpm=120, beats=4, root_note=128), "root_note"),
    ],
)
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_bad_loop_info_is_refused_naming_the_file(tmp_path, loop, problem, suffix):
    path = tmp_path / f"bad{suffix}"
    with pytest.raises(ValueError, match=problem) as err:
        audio.save(path, noise(1, 1000), SR, loop=loop)
    assert str(path) in str(err.value)
    assert not path.exists()


def test_reader_skips_unknown_and_odd_chunks_and_takes_the_first_loop(tmp_path):
    path = tmp_path / "crafted.wav"
    path.write_bytes(
        riff(
            plain_wav_chunks(),
            chunk(b"junk", b"abc"),  # odd size: one pad byte follows
            chunk(b"acid", acid_body(flags=0x06, root=50, beats=16, bpm=174.0)),
            chunk(b"LIST", b"INFOxxxx"),
            chunk(b"smpl", smpl_body(3, 99)),
        )
    )
    assert read_loop_info(path) == LoopInfo(bpm=174.0, beats=16, root_note=50, start=3, end=100)
    assert sf.info(str(path)).frames == 101


@pytest.mark.parametrize(
    "parts, reason",
    [
        ((chunk(b"acid", acid_body()[:10]),), "garbled acid"),
        ((chunk(b"acid", acid_body()), chunk(b"smpl", smpl_body(0, 50, loops=3))), "garbled smpl"),
        ((chunk(b"acid", acid_body()), chunk(b"smpl", smpl_body(60, 50))), "garbled smpl"),
        ((chunk(b"acid", acid_body()), chunk(b"smpl", smpl_body(0, 50))[:-10]), "truncated"),
    ],
)
def test_reader_reports_a_cut_or_garbled_chunk(tmp_path, parts, reason):
    path = tmp_path / "broken.wav"
    path.write_bytes(riff(plain_wav_chunks(), *parts))
    with pytest.raises(AudioError, match=reason) as err:
        read_loop_info(path)
    assert err.value.path == str(path)


def test_reader_finds_no_loop_in_one_shots_or_smpl_alone(tmp_path):
    one_shot, smpl_only = tmp_path / "hit.wav", tmp_path / "smpl.wav"
    one_shot.write_bytes(riff(plain_wav_chunks(), chunk(b"acid", acid_body(flags=0x01))))
    smpl_only.write_bytes(riff(plain_wav_chunks(), chunk(b"smpl", smpl_body(0, 100))))
    assert read_loop_info(one_shot) is None and read_loop_info(smpl_only) is None
    with pytest.raises(AudioError, match="cannot open"):
        read_loop_info(tmp_path / "missing.wav")


# --------------------------------------------------------------------------- resize_loop


def partials(n: int, parts: list[tuple[int, float, float]]) -> torch.Tensor:
    """Sum of cosines with whole cycles over n samples: (cycles, amplitude, phase)."""
    t = torch.arange(n, dtype=torch.float64) / n
    return sum(a * torch.cos(2 * math.pi * k * t + p) for k, a, p in parts)


@pytest.mark.parametrize(  # every parity of N and M, growing and shrinking
    "n, m", [(64, 100), (64, 101), (63, 100), (63, 101), (100, 64), (101, 64), (100, 63), (101, 63)]
)
def test_whole_cycle_sinusoids_resize_to_the_same_sinusoids(n, m):
    low = min(n, m)
    parts = [(0, 0.1, 0.0), (1, 0.4, 0.3), (5, 0.2, 1.0), (low // 2 - 1, 0.1, -0.5)]
    if low % 2 == 0:  # a cosine right at the shorter length's Nyquist frequency
        parts.append((low // 2, 0.1, 0.0))
    x = partials(n, parts).float()
    y = resize_loop(x[None], m)
    assert y.shape == (1, m) and y.dtype == torch.float32
    assert torch.allclose(y[0].double(), partials(m, parts), atol=2e-6)


def test_same_length_is_identity_and_batch_dims_resize_alike():
    x = noise(2, 500)
    assert torch.equal(resize_loop(x, 500), x)
    batch = torch.stack([noise(2, 500, seed) for seed in range(3)])  # (3, 2, 500)
    out = resize_loop(batch, 517)
    assert out.shape == (3, 2, 517)
    for i in range(3):
        assert torch.allclose(out[i], resize_loop(batch[i], 517), atol=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        resize_loop(x, 0)


def test_resized_loop_stays_periodic_and_wraps_as_smoothly_as_inside():
    # band-limited periodic noise: random partials below a quarter of the sample rate
    rng = np.random.default_rng(0)
    n, m = 800, 803
    parts = [(k, float(rng.uniform(0, 1) / k), float(rng.uniform(0, 2 * math.pi))) for k in range(1, 200)]
    y = resize_loop(partials(n, parts).float()[None], m)[0]
    steps = torch.cat([y.diff(), (y[:1] - y[-1:])]).abs()  # last entry: the wrap
    assert steps[-1] <= steps[:-1].max()
    # playing it twice is the same loop stretched over twice the length: no seam anywhere
    twice = resize_loop(partials(n, parts).float().repeat(2)[None], 2 * m)[0]
    assert torch.allclose(twice, y.repeat(2), atol=1e-5)


# --------------------------------------------------------------------------- no garbage written


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_non_finite_audio_is_refused_and_nothing_written(tmp_path, bad, suffix):
    wav = noise(1, 800)
    wav[0, 100] = bad
    path = tmp_path / f"loop.{suffix}"
    with pytest.raises(AudioError, match="NaN or infinite"):
        audio.save(path, wav, SR, loop=LoopInfo(bpm=120, beats=1))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    from wavediff.io.files import atomic_write_json

    path = tmp_path / "sidecar.json"
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"sidecar.json.*settings\.cfg_scale"):
            atomic_write_json(path, {"seed": 0, "settings": {"cfg_scale": bad}})
        assert not list(tmp_path.iterdir())
    atomic_write_json(path, {"bpm": 120.5, "seeds": [1, 2]})
    assert path.read_text() == '{\n  "bpm": 120.5,\n  "seeds": [\n    1,\n    2\n  ]\n}\n'
