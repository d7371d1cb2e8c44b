"""Audio in and out: the one place that decodes, encodes, resamples and levels audio.

Everything is a float32 tensor shaped (channels, samples). soundfile does the codecs
(torchaudio's own load/save need torchcodec, which we do not depend on); torchaudio
does resampling and loudness.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from wavediff.files import atomic_write_bytes

AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc"})

# soundfile (format, default subtype) for each file type we write.
_WRITE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}

# Kaiser-windowed sinc, the "kaiser_best" setting of torchaudio's resampling tutorial.
_RESAMPLE_KW = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)

# ITU-R BS.775 5.1 → stereo downmix, channel order L R C LFE Ls Rs.
_SURROUND_51 = torch.tensor(
    [[1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0], [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071]]
)


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _read(source, name: str) -> tuple[torch.Tensor, int]:
    missing = _missing_audio_bytes(source)
    if missing:
        size, present = missing
        raise AudioError(name, f"truncated: header declares {size} bytes of audio, the file holds {present}")
    try:
        with sf.SoundFile(source) as f:
            declared = f.frames
            sample_rate = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise AudioError(name, f"cannot decode audio ({_clean(e)})") from None
    if data.shape[0] == 0:
        raise AudioError(name, "holds no audio samples")
    if declared > 0 and data.shape[0] < declared:
        raise AudioError(name, f"truncated: header declares {declared} frames, only {data.shape[0]} decode")
    if not np.isfinite(data).all():
        raise AudioError(name, "decodes to NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), sample_rate


def _missing_audio_bytes(source) -> tuple[int, int] | None:
    """(declared, present) sizes of a WAV/AIFF audio chunk cut short, else None.

    libsndfile quietly decodes whatever a cut WAV or AIFF still holds and reports that
    as the length, so the frame-count check in _read cannot see the loss; the chunk
    header still says how much audio there should be. Streaming writers leave the size
    as 0 or 0xFFFFFFFF ("unknown"), which is not a truncation. A file that cannot be
    opened is left for libsndfile to report.
    """
    try:
        f = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
    except OSError:
        return None
    try:
        head = f.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            order, wanted = "<", b"data"
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            order, wanted = ">", b"SSND"
        else:
            return None
        end = f.seek(0, io.SEEK_END)
        pos = 12
        while pos + 8 <= end:
            f.seek(pos)
            chunk, size = struct.unpack(order + "4sI", f.read(8))
            if chunk == wanted:
                present = end - pos - 8
                if size in (0, 0xFFFFFFFF) or size <= present:
                    return None
                return size, present
            pos += 8 + size + (size & 1)
        return None
    finally:
        if f is source:
            f.seek(0)
        else:
            f.close()


def _clean(e: Exception) -> str:
    # libsndfile's message repeats the path (or a BytesIO repr); the caller names the file.
    text = e.error_string if isinstance(e, sf.LibsndfileError) else str(e)
    return " ".join(text.split()) or type(e).__name__


def load(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    channels: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode a file to (channels, samples) float32, optionally resampled and re-channelled.

    Raises AudioError naming the file for anything that is not usable audio: empty,
    truncated, corrupt, or an unknown format.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(path, f"cannot open ({e.strerror or _clean(e)})") from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    wav, sr = _read(str(path), str(path))
    return conform(wav, sr, sample_rate, channels), sample_rate or sr


def decode(data: bytes, name: str = "<bytes>") -> tuple[torch.Tensor, int]:
    """Decode an encoded file held in memory (a shard member, for instance)."""
    if not data:
        raise AudioError(name, "empty audio data")
    return _read(io.BytesIO(data), name)


def conform(
    wav: torch.Tensor, sr: int, sample_rate: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Bring audio to the asked rate and channel count (None keeps what it has)."""
    if channels is not None:
        wav = convert_channels(wav, channels)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
    return wav


def resample(wav: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited resampling (Kaiser-windowed sinc); a no-op when the rates match."""
    if from_sr == to_sr:
        return wav
    if from_sr <= 0 or to_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {from_sr} → {to_sr}")
    return _resampler(int(from_sr), int(to_sr), wav.dtype, wav.device)(wav)


@functools.lru_cache(maxsize=16)
def _resampler(from_sr: int, to_sr: int, dtype: torch.dtype, device: torch.device) -> AT.Resample:
    # Building the sinc kernel costs several times more than applying it, and a dataset
    # resamples thousands of files between the same few rates.
    return AT.Resample(from_sr, to_sr, dtype=dtype, **_RESAMPLE_KW).to(device)


def convert_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Mono↔stereo, and more channels down to stereo or mono.

    Five-point-one uses the ITU downmix; other layouts send even channels left and odd
    ones right, which keeps the stereo image of interleaved multi-mic recordings.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    have = wav.shape[0]
    if have == channels:
        return wav
    if have > 2:
        if have == 6:
            stereo = _SURROUND_51.to(wav) @ wav / (1 + 2 * 0.7071)
        else:
            stereo = torch.stack([wav[0::2].mean(0), wav[1::2].mean(0)])
        return stereo if channels == 2 else stereo.mean(0, keepdim=True)
    if channels == 2:
        return wav.expand(2, -1).clone()
    return wav.mean(0, keepdim=True)


def loudness(wav: torch.Tensor, sr: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770). Audio under 0.4 s is measured tiled,
    since the gating blocks are 400 ms long; silence (or no samples) gives -inf.

    BS.1770 weighs at most five channels: 5.1 is measured without its LFE channel (as
    the standard says) and other layouts past five are folded to stereo first.
    """
    if wav.numel() == 0 or wav.abs().max() == 0:
        return float("-inf")
    if wav.shape[0] == 6:
        wav = wav[[0, 1, 2, 4, 5]]
    elif wav.shape[0] > 5:
        wav = convert_channels(wav, 2)
    min_len = int(0.4 * sr) + 1
    if wav.shape[-1] < min_len:
        wav = wav.repeat(1, math.ceil(min_len / wav.shape[-1]))
    value = float(AF.loudness(wav.double(), sr))
    return value if math.isfinite(value) else float("-inf")


def normalize_loudness(
    wav: torch.Tensor, sr: int, target_lufs: float = -14.0, peak_db: float = -1.0
) -> torch.Tensor:
    """Gain to the target loudness, then lowered as needed so no sample peaks above
    peak_db dBFS. Silence is returned unchanged."""
    current = loudness(wav, sr)
    if not math.isfinite(current):
        return wav
    out = wav * 10 ** ((target_lufs - current) / 20)
    ceiling = 10 ** (peak_db / 20)
    peak = float(out.abs().max())
    if peak > ceiling:
        out = out * (ceiling / peak)
    return out


def is_silent(wav: torch.Tensor, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below threshold_db dBFS (no samples counts as silent)."""
    if wav.numel() == 0:
        return True
    rms = float(wav.double().pow(2).mean().sqrt())
    return rms == 0.0 or 20 * math.log10(rms) < threshold_db


def _format_for(name: str, format: str) -> str:
    fmt = format.lower()
    if fmt == "wave":
        fmt = "wav"
    if fmt not in _WRITE_FORMATS:
        raise ValueError(f"{name}: cannot write format {fmt!r}; choose one of {sorted(_WRITE_FORMATS)}")
    return fmt


def _encode(wav: torch.Tensor, sr: int, format: str, subtype: str | None, name: str) -> bytes:
    sf_format, default_subtype = _WRITE_FORMATS[_format_for(name, format)]
    data = wav.detach().to(torch.float32).cpu().clamp(-1.0, 1.0).numpy().T
    buf = io.BytesIO()
    try:
        sf.write(buf, data, sr, format=sf_format, subtype=subtype or default_subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot encode {format} at {sr} Hz ({_clean(e)})") from None
    return buf.getvalue()


def encode(wav: torch.Tensor, sr: int, format: str = "flac", subtype: str | None = None) -> bytes:
    """Encode to bytes in memory (shard members)."""
    return _encode(wav, sr, format, subtype, "<bytes>")


def save(
    path: str | os.PathLike,
    wav: torch.Tensor,
    sr: int,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write wav/flac/mp3/ogg atomically: a reader never sees a half-written file.

    Samples are clipped to [-1, 1]; the format comes from the suffix unless given.
    """
    path = Path(path)
    if wav.dim() != 2:
        raise ValueError(f"{path}: audio must be (channels, samples), got shape {tuple(wav.shape)}")
    data = _encode(wav, sr, format or path.suffix.lstrip("."), subtype, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
