"""wavediff.io.audio on real files of every kind a user's sample folder holds."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from wavediff.errors import AudioError
from wavediff.io import audio


def tone(freq: float, sr: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(frames, channels) sine, the layout soundfile writes."""
    t = np.arange(int(round(sr * seconds))) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 - 0.25 * c) for c in range(channels)], axis=1).astype(np.float32)


def amplitude_at(wav: torch.Tensor, sr: int, freq: float) -> float:
    """Peak amplitude of one sinusoid, from a Hann-windowed spectrum."""
    x = wav[0].double().numpy()
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    bin_ = int(round(freq * len(x) / sr))
    return float(spectrum[max(bin_ - 2, 0) : bin_ + 3].max())


def cut_in_half(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------- reading


def test_8bit_wav(tmp_path):
    path = tmp_path / "eight.wav"
    sf.write(path, tone(440, 8000, 0.5, channels=2), 8000, subtype="PCM_U8")
    wav, sr = audio.load(path)
    assert sr == 8000 and wav.shape == (2, 4000) and wav.dtype == torch.float32
    expected = torch.from_numpy(tone(440, 8000, 0.5, channels=2).T.copy())
    assert torch.allclose(wav, expected, atol=1 / 64)


def test_24bit_96k_flac_keeps_precision_and_resamples(tmp_path):
    path = tmp_path / "hires.flac"
    data = tone(1000, 96000, 0.25, channels=2)
    sf.write(path, data, 96000, subtype="PCM_24")
    wav, sr = audio.load(path)
    assert sr == 96000 and wav.shape == (2, 24000)
    assert torch.allclose(wav, torch.from_numpy(data.T.copy()), atol=2 / 2**23)  # 24-bit, not 16
    low, low_sr = audio.load(path, sample_rate=16000, channels=1)
    assert low_sr == 16000 and low.shape == (1, 4000)
    assert amplitude_at(low, 16000, 1000) == pytest.approx(0.5 * 0.875, rel=0.02)


def test_mono_ogg_22k_to_stereo(tmp_path):
    path = tmp_path / "mono.ogg"
    sf.write(path, tone(500, 22050, 0.5), 22050, format="OGG", subtype="VORBIS")
    wav, sr = audio.load(path)
    assert sr == 22050 and wav.shape == (1, 11025)
    stereo, _ = audio.load(path, channels=2)
    assert stereo.shape == (2, 11025) and torch.equal(stereo[0], stereo[1])
    assert amplitude_at(wav, 22050, 500) == pytest.approx(0.5, rel=0.05)


def test_mp3_write_then_read(tmp_path):
    wav = torch.from_numpy(tone(440, 16000, 1.0, channels=2).T.copy())
    path = audio.save(tmp_path / "loop.mp3", wav, 16000)
    back, sr = audio.load(path)
    assert sr == 16000 and back.shape[0] == 2
    assert abs(back.shape[1] - 16000) <= 1152  # at most one MPEG frame of padding
    n = min(back.shape[1], 16000)
    corr = np.corrcoef(back[0, :n].numpy(), wav[0, :n].numpy())[0, 1]
    assert corr > 0.95


def test_aiff(tmp_path):
    path = tmp_path / "x.aiff"
    sf.write(path, tone(440, 11025, 0.3, channels=2), 11025, format="AIFF", subtype="PCM_16")
    wav, sr = audio.load(path)
    assert sr == 11025 and wav.shape == (2, 3308)


def test_short_file_loads_and_has_loudness(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, tone(440, 8000, 0.1), 8000)
    wav, sr = audio.load(path)
    assert wav.shape == (1, 800)
    assert math.isfinite(audio.loudness(wav, sr))  # measured tiled: shorter than one 400 ms block


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "name, fmt, subtype",
    [("cut.wav", "WAV", "PCM_16"), ("cut.flac", "FLAC", "PCM_16"), ("cut.aiff", "AIFF", "PCM_16")],
)
def test_truncated_files_are_errors(tmp_path, name, fmt, subtype):
    path = tmp_path / name
    sf.write(path, tone(440, 8000, 1.0, channels=2), 8000, format=fmt, subtype=subtype)
    cut_in_half(path)
    with pytest.raises(AudioError) as e:
        audio.load(path)
    assert e.value.path == str(path) and str(path) in str(e.value)
    with pytest.raises(AudioError):  # the same bytes from memory (a shard member)
        audio.decode(path.read_bytes(), name)


def test_truncated_wav_says_so(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(440, 8000, 1.0), 8000)
    cut_in_half(path)
    with pytest.raises(AudioError, match="truncated"):
        audio.load(path)


def test_streamed_wav_with_unknown_length_still_loads(tmp_path):
    """Writers that stream to a pipe leave the data size as 0xFFFFFFFF: not a truncation."""
    path = tmp_path / "streamed.wav"
    sf.write(path, tone(440, 8000, 0.5), 8000)
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    wav, _ = audio.load(path)
    assert wav.shape == (1, 4000)


def test_random_bytes_named_wav(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="cannot decode") as e:
        audio.load(path)
    assert "BytesIO" not in str(e.value) and str(e.value).count(str(path)) == 1


def test_empty_file_and_empty_bytes(tmp_path):
    path = tmp_path / "empty.flac"
    path.touch()
    with pytest.raises(AudioError, match="empty"):
        audio.load(path)
    with pytest.raises(AudioError, match="empty"):
        audio.decode(b"", "member.flac")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioError, match="cannot open"):
        audio.load(tmp_path / "nope.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match="dir.wav"):
        audio.load(tmp_path / "dir.wav")


def test_nan_samples_are_rejected(tmp_path):
    path = tmp_path / "nan.wav"
    data = tone(440, 8000, 0.2)
    data[10] = np.nan
    sf.write(path, data, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        audio.load(path)


# --------------------------------------------------------------------------- resampling


def test_resample_keeps_the_passband_and_removes_what_would_alias():
    sr, to = 32000, 8000
    low = torch.from_numpy(tone(1000, sr, 1.0).T.copy())
    high = torch.from_numpy(tone(7000, sr, 1.0).T.copy())  # above the new 4 kHz Nyquist
    out_low, out_high = audio.resample(low, sr, to), audio.resample(high, sr, to)
    assert out_low.shape == (1, 8000)
    assert amplitude_at(out_low, to, 1000) == pytest.approx(0.5, rel=0.01)
    # Without the low-pass, 7 kHz would fold to 1 kHz at full level.
    assert amplitude_at(out_high, to, 1000) < 0.5 * 10 ** (-60 / 20)


def test_resample_odd_ratio_and_noop():
    wav = torch.from_numpy(tone(440, 22050, 1.0, channels=2).T.copy())
    out = audio.resample(wav, 22050, 16000)
    assert out.shape == (2, 16000)
    assert amplitude_at(out, 16000, 440) == pytest.approx(0.5, rel=0.01)
    assert audio.resample(wav, 22050, 22050) is wav
    with pytest.raises(ValueError, match="positive"):
        audio.resample(wav, 0, 16000)


# --------------------------------------------------------------------------- channels


def test_mono_stereo_conversions():
    mono = torch.linspace(-1, 1, 100)[None]
    stereo = audio.convert_channels(mono, 2)
    assert stereo.shape == (2, 100) and torch.equal(stereo[0], stereo[1])
    stereo[0] += 1  # a real copy, not a view of the mono signal
    assert torch.equal(mono, torch.linspace(-1, 1, 100)[None])
    pair = torch.stack([torch.ones(50), -torch.ones(50) * 0.5])
    assert torch.allclose(audio.convert_channels(pair, 1), torch.full((1, 50), 0.25))


def test_51_downmix_follows_itu_weights():
    norm = 1 + 2 * 0.7071
    only = lambda ch: torch.zeros(6, 10).index_fill_(0, torch.tensor([ch]), 1.0)  # noqa: E731
    centre = audio.convert_channels(only(2), 2)
    assert torch.allclose(centre, torch.full((2, 10), 0.7071 / norm))
    assert torch.count_nonzero(audio.convert_channels(only(3), 2)) == 0  # LFE is left out
    left_surround = audio.convert_channels(only(4), 2)
    assert torch.allclose(left_surround[0], torch.full((10,), 0.7071 / norm)) and left_surround[1].abs().max() == 0
    full = audio.convert_channels(torch.ones(6, 10), 2)
    assert torch.allclose(full, torch.ones(2, 10), atol=1e-4)  # never louder than full scale
    assert audio.convert_channels(torch.ones(6, 10), 1).shape == (1, 10)


def test_other_multichannel_layouts_alternate_left_right():
    wav = torch.stack([torch.full((8,), float(i)) for i in range(4)])
    out = audio.convert_channels(wav, 2)
    assert torch.allclose(out[:, 0], torch.tensor([1.0, 2.0]))  # mean of 0,2 and of 1,3
    with pytest.raises(ValueError, match="1 or 2"):
        audio.convert_channels(wav, 3)


def test_load_conforms_rate_and_channels(tmp_path):
    path = tmp_path / "six.wav"
    sf.write(path, np.tile(tone(440, 16000, 0.5), (1, 6)), 16000)
    wav, sr = audio.load(path, sample_rate=8000, channels=2)
    assert sr == 8000 and wav.shape == (2, 4000)


# --------------------------------------------------------------------------- loudness


def noise(sr: int, seconds: float, channels: int = 2, level: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(channels, int(sr * seconds), generator=g) * level


def test_normalize_to_target_lufs():
    wav = noise(16000, 1.0)
    out = audio.normalize_loudness(wav, 16000, target_lufs=-23.0)
    assert audio.loudness(out, 16000) == pytest.approx(-23.0, abs=0.05)


def test_normalize_respects_the_peak_ceiling():
    wav = noise(16000, 1.0)
    out = audio.normalize_loudness(wav, 16000, target_lufs=0.0, peak_db=-1.0)
    ceiling = 10 ** (-1 / 20)
    assert float(out.abs().max()) == pytest.approx(ceiling, rel=1e-5)
    assert audio.loudness(out, 16000) < -1.0  # the ceiling won over the loudness target


def test_silence_is_left_alone_and_is_silent():
    quiet = torch.zeros(2, 8000)
    assert audio.loudness(quiet, 8000) == float("-inf")
    assert torch.equal(audio.normalize_loudness(quiet, 8000), quiet)
    assert audio.is_silent(quiet)
    assert audio.is_silent(noise(8000, 0.5, level=1e-4))  # -80 dBFS
    assert not audio.is_silent(noise(8000, 0.5, level=1e-2))  # -40 dBFS
    assert audio.is_silent(noise(8000, 0.5, level=1e-2), threshold_db=-30)
    assert audio.is_silent(torch.zeros(2, 0)) and audio.loudness(torch.zeros(2, 0), 8000) == float("-inf")


def test_loudness_of_51_surround():
    """BS.1770 takes at most five channels: 5.1 is measured without its LFE."""
    wav = noise(16000, 1.0, channels=6)
    with_lfe = audio.loudness(wav, 16000)
    wav[3] *= 10
    assert audio.loudness(wav, 16000) == pytest.approx(with_lfe)
    assert math.isfinite(audio.loudness(noise(16000, 1.0, channels=8), 16000))
    out = audio.normalize_loudness(noise(16000, 1.0, channels=6), 16000, target_lufs=-20.0)
    assert audio.loudness(out, 16000) == pytest.approx(-20.0, abs=0.05)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_save_each_format(tmp_path, fmt):
    wav = torch.from_numpy(tone(440, 16000, 0.5, channels=2).T.copy())
    path = audio.save(tmp_path / f"sub/out.{fmt}", wav, 16000)
    back, sr = audio.load(path)
    assert sr == 16000 and back.shape[0] == 2
    assert sf.info(path).format == {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[fmt]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "loop.wav"
    first = torch.full((1, 800), 0.25)
    audio.save(path, first, 8000)
    audio.save(path, torch.full((1, 400), -0.5), 8000)  # replaces it
    back, _ = audio.load(path)
    assert back.shape == (1, 400)
    assert os.listdir(tmp_path) == ["loop.wav"]
    # A failed encode (MP3 has no 96 kHz) must leave the previous file intact.
    target = tmp_path / "keep.mp3"
    audio.save(target, first, 16000)
    before = target.read_bytes()
    with pytest.raises(ValueError, match="keep.mp3"):
        audio.save(target, first, 96000)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.mp3", "loop.wav"]


def test_save_rejects_bad_shapes_and_formats(tmp_path):
    with pytest.raises(ValueError, match="channels, samples"):
        audio.save(tmp_path / "x.wav", torch.zeros(100), 8000)
    with pytest.raises(ValueError, match="cannot write format"):
        audio.save(tmp_path / "x.aiff", torch.zeros(1, 100), 8000)
    assert list(tmp_path.iterdir()) == []


def test_save_clips_to_full_scale(tmp_path):
    path = audio.save(tmp_path / "hot.flac", torch.full((1, 800), 3.0), 8000)
    assert float(audio.load(path)[0].max()) <= 1.0


def test_encode_decode_round_trip_in_memory():
    wav = torch.from_numpy(tone(440, 8000, 0.5, channels=2).T.copy())
    data = audio.encode(wav, 8000, "FLAC")
    back, sr = audio.decode(data, "member.flac")
    assert sr == 8000 and torch.allclose(back, wav, atol=1 / 2**15)
    with pytest.raises(AudioError, match="member.flac"):
        audio.decode(data[: len(data) // 3], "member.flac")


# --------------------------------------------------------------------------- windows of encoded audio


def _noise_bytes(fmt: str, subtype: str, channels: int, frames: int = 12000) -> bytes:
    """Noise (every sample different, so an off-by-one span cannot match) in memory."""
    x = np.random.default_rng(channels).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt, subtype, channels",
    [("WAV", "PCM_16", 2), ("WAV", "FLOAT", 1), ("FLAC", "PCM_16", 2), ("FLAC", "PCM_24", 1), ("AIFF", "PCM_16", 2)],
)
def test_encoded_audio_spans_equal_slices_of_a_full_decode(fmt, subtype, channels):
    data = _noise_bytes(fmt, subtype, channels)
    full, sr = audio.decode(data, "member")
    n = full.shape[-1]
    # whole, first and last frames, across FLAC's 4096-frame blocks, to the end; out of order,
    # so reads go backwards, forwards, on from where the last one stopped, and again
    spans = [(0, n), (n - 1, 1), (0, 1), (0, 3), (4095, 2), (4097, 5000), (9097, n - 9097), (100, 4096), (4196, 10)]
    with audio.EncodedAudio(data, "member") as clip:
        assert (clip.frames, clip.sample_rate, clip.channels) == (n, sr, channels)
        for start, frames in spans:
            span = clip.read(start, frames)
            assert span.shape == (channels, frames) and span.dtype == torch.float32
            assert torch.equal(span, full[:, start : start + frames]), (start, frames)
        with pytest.raises(ValueError, match="outside its 12000 frames"):
            clip.read(n - 10, 11)


def test_encoded_audio_reads_spans_in_place_into_one_buffer():
    data = _noise_bytes("FLAC", "PCM_16", 2)
    full = audio.decode(data, "member")[0]
    out = torch.full((6000, 2), 7.0)
    with audio.EncodedAudio(data, "member") as clip:
        clip.read_into(9000, out[:3000])  # a wrap: the loop's end, then its start
        clip.read_into(0, out[3000:])
        assert torch.equal(out.T, torch.cat([full[:, 9000:], full[:, :3000]], dim=1))
        with pytest.raises(ValueError, match="contiguous float32 \\(10, 2\\)"):
            clip.read_into(0, torch.empty(2, 10).T)
        with pytest.raises(ValueError, match="contiguous float32"):
            clip.read_into(0, torch.empty(10, 1))
        with pytest.raises(ValueError, match="outside its 12000 frames"):
            clip.read_into(11995, out[:10])


def test_encoded_audio_errors_name_the_sample():
    flac = _noise_bytes("FLAC", "PCM_16", 2)
    with pytest.raises(AudioError, match="^a.tar: sample k: empty"):
        audio.EncodedAudio(b"", "a.tar: sample k")
    with pytest.raises(AudioError, match="^a.tar: sample k: cannot decode"):
        audio.EncodedAudio(np.random.default_rng(0).bytes(4096), "a.tar: sample k")
    wav = _noise_bytes("WAV", "PCM_16", 2)
    with pytest.raises(AudioError, match="^a.tar: sample k: truncated"):
        audio.EncodedAudio(wav[: len(wav) // 2], "a.tar: sample k")
    damaged = bytearray(flac)
    middle = len(flac) // 2
    damaged[middle : middle + 64] = bytes(b ^ 0x5A for b in damaged[middle : middle + 64])
    with audio.EncodedAudio(bytes(damaged), "a.tar: sample k") as clip:
        assert torch.equal(clip.read(0, 1000), audio.decode(flac)[0][:, :1000])  # before the damage: fine
        with pytest.raises(AudioError, match="^a.tar: sample k: "):
            clip.read(0, clip.frames)
    nan = tone(440, 8000, 0.2)
    nan[10] = np.nan
    buf = io.BytesIO()
    sf.write(buf, nan, 8000, format="WAV", subtype="FLOAT")
    with audio.EncodedAudio(buf.getvalue(), "a.tar: sample k") as clip:
        with pytest.raises(AudioError, match="NaN"):
            clip.read(0, 20)
