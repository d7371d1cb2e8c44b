"""Audio in and out: the one place that decodes, encodes, resamples and levels audio,
and that reads and writes a WAV's loop points and tempo.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from wavediff.errors import AudioError, UserError
from wavediff.io.files import atomic_write_bytes

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
_SURROUND_51 = torch.tensor([[1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0], [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071]])


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


# What soundfile raises for bytes it cannot decode.
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError)


def _open(source, name: str) -> sf.SoundFile:
    """An open SoundFile, once the header passed the checks it allows."""
    missing = _missing_audio_bytes(source)
    if missing:
        size, present = missing
        raise AudioError(name, f"truncated: header declares {size} bytes of audio, the file holds {present}")
    try:
        return sf.SoundFile(source)
    except _DECODE_ERRORS as e:
        raise AudioError(name, f"cannot decode audio ({_clean(e)})") from None


# Float samples past this are not a hot master but a broken file (1e30 in a float WAV): clipped,
# they would train as a full-scale square wave.
MAX_PEAK_DB = 40.0


def _check_samples(data: np.ndarray, f: sf.SoundFile, name: str) -> None:
    """Float and lossy codecs can decode to NaN, infinity or absurd levels; integer PCM (every
    FLAC, most WAV) cannot, so it skips the scan."""
    if f.subtype.startswith("PCM_") or data.size == 0:
        return
    if not np.isfinite(data).all():
        raise AudioError(name, "decodes to NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > 10 ** (MAX_PEAK_DB / 20):
        level = f"peaks at {20 * math.log10(peak):+.0f} dBFS"
        raise AudioError(name, f"{level}: not audio (float samples far beyond full scale)")


def _read(source, name: str) -> tuple[torch.Tensor, int]:
    with _open(source, name) as f:
        declared = f.frames
        sample_rate = f.samplerate
        try:
            data = f.read(dtype="float32", always_2d=True)
        except _DECODE_ERRORS as e:
            raise AudioError(name, f"cannot decode audio ({_clean(e)})") from None
        if data.shape[0] == 0:
            raise AudioError(name, "holds no audio samples")
        if declared > 0 and data.shape[0] < declared:
            raise AudioError(name, f"truncated: header declares {declared} frames, only {data.shape[0]} decode")
        _check_samples(data, f, name)
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
        for chunk, size, start in _chunks(f, order, end):
            if chunk == wanted:
                present = end - start
                if size in _UNKNOWN_SIZES or size <= present:
                    return None
                return size, present
        return None
    finally:
        if f is source:
            f.seek(0)
        else:
            f.close()


# The data-chunk sizes streaming writers leave behind: "the audio runs to the end".
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def _chunks(f: BinaryIO, order: str, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(id, declared size, offset of the body) of each chunk after a 12-byte RIFF/FORM header.

    Bodies of odd size are followed by a pad byte that their size does not count.
    """
    pos = 12
    while pos + 8 <= end:
        f.seek(pos)
        chunk, size = struct.unpack(order + "4sI", f.read(8))
        yield chunk, size, pos + 8
        pos += 8 + size + (size & 1)


# libsndfile's words for bytes in no format it knows. Opening a file by path whose name ends
# in .mp3, it blames a pipe: its MPEG reader found no frames in what is a plain file.
_UNRECOGNISED = ("Format not recognised.", "File does not exist or is not a regular file (possibly a pipe?).")


def _clean(e: Exception) -> str:
    # libsndfile's message repeats the path (or a BytesIO repr); the caller names the file.
    text = e.error_string if isinstance(e, sf.LibsndfileError) else str(e)
    if text in _UNRECOGNISED:
        return "format not recognised: no audio header or MPEG frames found"
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


class EncodedAudio:
    """An encoded file held in memory, opened but not decoded: its length and rate come
    from the header, and `read` decodes one span alone.

    Why: a training window is a few seconds of a longer shard member, and decoding is
    most of a loader's work; the window's start is drawn from the length, which only the
    header knows, so one open serves both. Spans are exact (the same samples as a full
    decode) for WAV, AIFF and FLAC. Only the decoded span is checked, so a member damaged
    elsewhere goes unnoticed here (`wavediff data inspect` decodes whole members).
    Use as a context manager; errors are AudioError naming the file, as from `decode`.
    """

    def __init__(self, data: bytes, name: str = "<bytes>"):
        if not data:
            raise AudioError(name, "empty audio data")
        self.name = name
        self._file = _open(io.BytesIO(data), name)
        self.frames, self.sample_rate, self.channels = self._file.frames, self._file.samplerate, self._file.channels
        self._position = 0
        if self.frames <= 0:
            self.close()
            raise AudioError(name, "holds no audio samples")

    def read(self, start: int, frames: int) -> torch.Tensor:
        """(channels, frames) float32 from frame `start`; the span must lie inside the file.

        The tensor is a transposed view of the interleaved decode: whatever consumes it
        (a stack into a batch, a resampler) makes the one copy to planar layout."""
        self._check_span(start, frames)
        out = torch.empty(frames, self.channels)
        self.read_into(start, out)
        return out.T

    def read_into(self, start: int, out: torch.Tensor) -> None:
        """Decode the len(out) frames from `start` into `out`, a C-contiguous (frames,
        channels) float32 tensor: the decoder's own layout, so a caller assembling a
        window from several spans (a loop that wraps) writes each in place, copying nothing.

        Reading on from where the last read ended, or from the start of a file just opened,
        seeks nothing (a FLAC seek costs about a tenth of decoding a 2 s window)."""
        frames = out.shape[0]
        self._check_span(start, frames)
        if out.dtype != torch.float32 or out.shape[1:] != (self.channels,) or not out.is_contiguous():
            raise ValueError(
                f"{self.name}: out must be a contiguous float32 ({frames}, {self.channels}) tensor, "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        try:
            if start != self._position:
                self._file.seek(start)
            got = _read_frames(self._file, out)
        except _DECODE_ERRORS as e:
            raise AudioError(self.name, f"cannot decode audio ({_clean(e)})") from None
        self._position = start + got
        if got < frames:
            raise AudioError(
                self.name,
                f"truncated or corrupt: decoding stops at frame {start + got} of the {self.frames} its header declares",
            )
        _check_samples(out.numpy(), self._file, self.name)

    def _check_span(self, start: int, frames: int) -> None:
        if frames < 1 or not 0 <= start <= self.frames - frames:
            raise ValueError(f"{self.name}: span of {frames} frames at {start} is outside its {self.frames} frames")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EncodedAudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_frames(f: sf.SoundFile, out: torch.Tensor) -> int:
    """Decode len(out) frames at f's position into `out` ((frames, channels) float32, C
    order); returns the count decoded. libsndfile's own call, because SoundFile.read seeks
    to where it already is after every read, and in a FLAC file that seek decodes again."""
    return sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", out.data_ptr()), len(out))


def conform(wav: torch.Tensor, sr: int, sample_rate: int | None = None, channels: int | None = None) -> torch.Tensor:
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
        raise UserError(f"sample rates must be positive, got {from_sr} → {to_sr}")
    return _resampler(int(from_sr), int(to_sr), wav.dtype, wav.device)(wav)


@functools.lru_cache(maxsize=16)
def _resampler(from_sr: int, to_sr: int, dtype: torch.dtype, device: torch.device) -> AT.Resample:
    # Building the sinc kernel costs several times more than applying it, and a dataset
    # resamples thousands of files between the same few rates.
    return AT.Resample(from_sr, to_sr, dtype=dtype, **_RESAMPLE_KW).to(device)


def resize_loop(wav: torch.Tensor, samples: int) -> torch.Tensor:
    """Stretch one period of a loop, (..., N), to exactly `samples`, by band-limited
    periodic (Fourier) interpolation.

    Why not cut or pad: a decoded loop comes out a little off the exact bar length, and
    a cut clicks at the wrap. Treating the audio as one period of a periodic signal keeps
    the wrap as smooth as the rest, at a pitch change of a few cents. Shrinking drops the
    partials above the new Nyquist frequency.
    """
    if samples < 1:
        raise UserError(f"samples must be at least 1, got {samples}")
    n = wav.shape[-1]
    if n < 1:
        raise UserError("cannot resize a loop of 0 samples")
    if n == samples:
        return wav
    spectrum = torch.fft.rfft(wav, dim=-1)
    kept = min(n, samples)
    out = spectrum.new_zeros(*wav.shape[:-1], samples // 2 + 1)
    out[..., : kept // 2 + 1] = spectrum[..., : kept // 2 + 1]
    if kept % 2 == 0:
        # The shorter length's Nyquist bin stands for a +f/-f pair folded into one bin.
        # Growing an even length: the pair splits again, half to each side. Shrinking to
        # an even length: the input's +f and -f bins both fold onto it, and irfft keeps
        # only the real part of a Nyquist bin.
        out[..., kept // 2] *= 0.5 if samples > n else 2.0
    return torch.fft.irfft(out, n=samples, dim=-1) * (samples / n)


def convert_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Mono↔stereo, and more channels down to stereo or mono.

    Five-point-one uses the ITU downmix; other layouts send even channels left and odd
    ones right, which keeps the stereo image of interleaved multi-mic recordings.
    """
    if channels not in (1, 2):
        raise UserError(f"channels must be 1 or 2, got {channels}")
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


def normalize_loudness(wav: torch.Tensor, sr: int, target_lufs: float = -14.0, peak_db: float = -1.0) -> torch.Tensor:
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
    rms = float(torch.linalg.vector_norm(wav)) / math.sqrt(wav.numel())  # one pass, no float64 copy
    return rms == 0.0 or 20 * math.log10(rms) < threshold_db


def _format_for(name: str, format: str) -> str:
    fmt = format.lower()
    if fmt == "wave":
        fmt = "wav"
    if fmt not in _WRITE_FORMATS:
        raise UserError(f"{name}: cannot write format {fmt!r}; choose one of {sorted(_WRITE_FORMATS)}")
    return fmt


def _encode(wav: torch.Tensor, sr: int, format: str, subtype: str | None, name: str) -> bytes:
    sf_format, default_subtype = _WRITE_FORMATS[_format_for(name, format)]
    wav = wav.detach().to(torch.float32).cpu()
    if not torch.isfinite(wav).all():  # clipping would turn them into full-scale DC
        raise AudioError(name, "audio holds NaN or infinite samples; refusing to write it")
    data = wav.clamp(-1.0, 1.0).numpy().T
    buf = io.BytesIO()
    try:
        sf.write(buf, data, sr, format=sf_format, subtype=subtype or default_subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"{name}: cannot encode {format} at {sr} Hz ({_clean(e)})") from None
    return buf.getvalue()


def encode(wav: torch.Tensor, sr: int, format: str = "flac", subtype: str | None = None) -> bytes:
    """Encode to bytes in memory (shard members)."""
    return _encode(wav, sr, format, subtype, "<bytes>")


@dataclass(frozen=True)
class LoopInfo:
    """What a sampler or DAW needs to loop and stretch a file in time with a song."""

    bpm: float  # tempo
    beats: int  # beats in the file (bars × beats_per_bar)
    beats_per_bar: int = 4  # meter numerator (denominator 4)
    root_note: int | None = None  # MIDI note of the loop's key root, when known
    start: int = 0  # loop start sample
    end: int | None = None  # loop end sample, exclusive; None = the file's end


# 'smpl' (RIFF 1991 / Multimedia Programming Interface), little-endian, 36 bytes then
# 24 per loop: manufacturer, product, sample period (ns), MIDI unity note, MIDI pitch
# fraction, SMPTE format, SMPTE offset, number of loops, sampler-data bytes (all u32);
# each loop: identifier, type (0 = forward), start, end (inclusive: that sample plays
# too), fraction, play count (0 = forever), all u32.
_SMPL = struct.Struct("<9I")
_SMPL_LOOP = struct.Struct("<6I")
# 'acid' (Sonic Foundry ACID; no published spec, the layout libsndfile's
# wav_read_acid_chunk reads), 24 bytes: flags u32, root note u16, unknown u16 (0x8000 in
# files seen in the wild), unknown f32 (0.0), number of beats u32, meter denominator u16,
# meter numerator u16, tempo f32 (BPM). Flags: 0x01 one-shot, 0x02 root note set,
# 0x04 stretch, 0x08 disk-based.
_ACID = struct.Struct("<IHHfIHHf")
_ACID_ONE_SHOT, _ACID_ROOT_SET, _ACID_STRETCH = 0x01, 0x02, 0x04


def _check_loop(loop: LoopInfo, samples: int, name: str) -> tuple[int, int]:
    """(start, exclusive end) of a valid loop, else ValueError naming the file."""
    end = samples if loop.end is None else loop.end
    problems = [
        (not (math.isfinite(loop.bpm) and loop.bpm > 0), f"bpm must be positive, got {loop.bpm}"),
        (loop.beats < 1, f"beats must be at least 1, got {loop.beats}"),
        (loop.beats_per_bar < 1, f"beats_per_bar must be at least 1, got {loop.beats_per_bar}"),
        (
            loop.root_note is not None and not 0 <= loop.root_note <= 127,
            f"root_note must be a MIDI note 0-127, got {loop.root_note}",
        ),
        (
            not 0 <= loop.start < end <= samples,
            f"loop points must satisfy 0 ≤ start < end ≤ {samples} samples, got start {loop.start}, end {end}",
        ),
    ]
    for bad, reason in problems:
        if bad:
            raise UserError(f"{name}: {reason}")
    return loop.start, end


def _loop_chunks(loop: LoopInfo, start: int, end: int, sr: int) -> bytes:
    unity = 60 if loop.root_note is None else loop.root_note
    smpl = _SMPL.pack(0, 0, round(1e9 / sr), unity, 0, 0, 0, 1, 0) + _SMPL_LOOP.pack(0, 0, start, end - 1, 0, 0)
    flags = _ACID_STRETCH | (0 if loop.root_note is None else _ACID_ROOT_SET)
    acid = _ACID.pack(flags, unity, 0x8000, 0.0, loop.beats, 4, loop.beats_per_bar, loop.bpm)
    return b"".join(struct.pack("<4sI", cid, len(body)) + body for cid, body in ((b"smpl", smpl), (b"acid", acid)))


def _with_loop_chunks(riff: bytes, loop: LoopInfo, start: int, end: int, sr: int) -> bytes:
    """Append smpl and acid chunks to the WAV soundfile wrote and fix the RIFF size."""
    if len(riff) % 2:  # every chunk starts on an even offset
        riff += b"\0"
    out = riff + _loop_chunks(loop, start, end, sr)
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


def save(
    path: str | os.PathLike,
    wav: torch.Tensor,
    sr: int,
    format: str | None = None,
    subtype: str | None = None,
    loop: LoopInfo | None = None,
) -> Path:
    """Write wav/flac/mp3/ogg atomically: a reader never sees a half-written file.

    Samples are clipped to [-1, 1]; the format comes from the suffix unless given. A WAV
    gets `loop` as smpl and acid chunks, which samplers and DAWs read; flac, mp3 and ogg
    have no place for it, so for them it is checked and not written (the generator's
    JSON sidecar records it for every format).
    """
    path = Path(path)
    if wav.dim() != 2:
        raise UserError(f"{path}: audio must be (channels, samples), got shape {tuple(wav.shape)}")
    fmt = _format_for(str(path), format or path.suffix.lstrip("."))
    data = _encode(wav, sr, fmt, subtype, str(path))
    if loop is not None:
        start, end = _check_loop(loop, wav.shape[-1], str(path))
        if fmt == "wav":
            data = _with_loop_chunks(data, loop, start, end, sr)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def read_loop_info(path: str | os.PathLike) -> LoopInfo | None:
    """The loop a WAV's acid chunk (tempo, beats, meter, root) and smpl chunk (first loop's
    points) describe.

    None for a file that is not a WAV or has no acid chunk, and for an acid chunk that
    marks a one-shot or gives no tempo or beats: a smpl chunk alone holds loop points but
    no tempo. `end` comes back explicit whenever a smpl loop is present. Raises AudioError
    for a chunk cut short or too small for its layout.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            bodies = _loop_chunk_bodies(f, path)
    except OSError as e:
        raise AudioError(path, f"cannot open ({e.strerror or _clean(e)})") from None
    acid = bodies.get(b"acid")
    if acid is None:
        return None
    if len(acid) < _ACID.size:
        raise AudioError(path, f"garbled acid chunk: {len(acid)} bytes, its layout needs {_ACID.size}")
    flags, root, _, _, beats, _, numerator, bpm = _ACID.unpack_from(acid)
    if flags & _ACID_ONE_SHOT or beats < 1 or not (math.isfinite(bpm) and bpm > 0):
        return None
    loop_start, loop_end = _smpl_loop(bodies.get(b"smpl"), path)
    return LoopInfo(
        bpm=float(bpm),
        beats=beats,
        beats_per_bar=numerator or 4,
        root_note=root if flags & _ACID_ROOT_SET else None,
        start=loop_start,
        end=loop_end,
    )


def _loop_chunk_bodies(f: BinaryIO, path: Path) -> dict[bytes, bytes]:
    """The first smpl and acid chunk bodies of a WAV ({} for any other file)."""
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return {}
    end = f.seek(0, io.SEEK_END)
    bodies: dict[bytes, bytes] = {}
    for chunk, size, start in _chunks(f, "<", end):
        if chunk == b"data" and size in _UNKNOWN_SIZES:
            break  # streamed: the audio runs to the end, no chunk after it can be found
        if start + size > end:
            name = chunk.decode("latin-1")
            raise AudioError(path, f"truncated: its {name!r} chunk declares {size} bytes, {end - start} remain")
        if chunk in (b"smpl", b"acid") and chunk not in bodies:
            f.seek(start)
            bodies[chunk] = f.read(size)
    return bodies


def _smpl_loop(body: bytes | None, path: Path) -> tuple[int, int | None]:
    """(start, exclusive end) of a smpl chunk's first loop; (0, None) when it has none."""
    if body is None:
        return 0, None
    if len(body) < _SMPL.size:
        raise AudioError(path, f"garbled smpl chunk: {len(body)} bytes, its header needs {_SMPL.size}")
    loops = _SMPL.unpack_from(body)[7]
    if loops == 0:
        return 0, None
    if len(body) < _SMPL.size + loops * _SMPL_LOOP.size:
        raise AudioError(path, f"garbled smpl chunk: {loops} loops declared, {len(body)} bytes hold fewer")
    _, _, start, last, _, _ = _SMPL_LOOP.unpack_from(body, _SMPL.size)
    if last < start:
        raise AudioError(path, f"garbled smpl chunk: loop ends at sample {last}, before its start {start}")
    return start, last + 1


def loop_samples(bpm: float, bars: int, sample_rate: int, beats_per_bar: int = 4) -> int:
    """Length in samples of `bars` whole bars: the one rounding every loop length uses."""
    return round(bars * beats_per_bar * 60 / bpm * sample_rate)
