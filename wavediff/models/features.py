"""Frame features for comparing sets of audio without a pretrained network: log-mel and MFCC.

Everything is analysed at one rate (ANALYSIS_RATE, mono), so a 44.1 kHz stereo loop and an
8 kHz mono one are described in the same units and two sets made at different rates still
compare. Levels are absolute (dB relative to a full-scale sine), not normalised per clip: a
set that is too quiet or too loud should measure as different. A loop is framed
circularly (its first frames see its end, as when it plays), so its edges add no artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

from wavediff.io.audio import conform

ANALYSIS_RATE = 16000
N_FFT = 512  # 32 ms
HOP = 256  # 16 ms
N_MELS = 64
N_MFCC = 20
DB_FLOOR = -100.0  # digital silence reads as this, not as −∞

_MEL = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, ANALYSIS_RATE / 2, N_MELS, ANALYSIS_RATE, norm=None, mel_scale="htk")
_DCT = AF.create_dct(N_MFCC, N_MELS, norm="ortho")
_WINDOW = torch.hann_window(N_FFT, dtype=torch.float64)
# A full-scale sine centred on a bin has |X| = sum(window) / 2 there: that power is 0 dB.
_FULL_SCALE = float(_WINDOW.sum() / 2) ** 2


@dataclass(frozen=True)
class ClipFeatures:
    """One clip's frames: log-mel (frames, N_MELS) and MFCC (frames, N_MFCC), in float64."""

    logmel: Tensor
    mfcc: Tensor

    def embedding(self) -> Tensor:
        """The clip as one vector: per-band mean and standard deviation of its log-mel frames (dB).

        Used for diversity: two loops with the same spectrum and the same movement in it are
        close, whatever their phase or the order of their hits.
        """
        return torch.cat([self.logmel.mean(0), self.logmel.std(0, unbiased=False)])


def log_mel(wav: Tensor, sample_rate: int, loop: bool = False) -> Tensor:
    """(channels, samples) or (samples,) audio at any rate → (frames, N_MELS) dB at ANALYSIS_RATE, mono.

    A loop gives one frame per hop of its period, framed around the wrap; other audio is
    zero-padded by half a window at each end.
    """
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise ValueError(f"audio must be (channels, samples) with at least one sample, got shape {tuple(wav.shape)}")
    mono = conform(wav.float(), sample_rate, ANALYSIS_RATE, 1)[0].double()
    n = mono.numel()
    if loop:  # frame k centred on sample k·HOP of the period, read around the wrap
        frames = -(-n // HOP)
        padded = mono[torch.arange(-(N_FFT // 2), (frames - 1) * HOP + N_FFT // 2) % n]
    else:
        padded = torch.nn.functional.pad(mono, (N_FFT // 2, N_FFT // 2))
    return mel_db(padded)


def mel_db(padded: Tensor) -> Tensor:
    """(..., length) mono audio at ANALYSIS_RATE, already padded for framing → (..., frames, N_MELS) dB.

    Batched and differentiable, in the input's dtype: the genre classifier's front end too.
    """
    window = _WINDOW.to(padded.device, padded.dtype)
    shape = padded.shape[:-1]
    spec = (
        torch.stft(padded.reshape(-1, padded.shape[-1]), N_FFT, HOP, window=window, center=False, return_complex=True)
        .abs()
        .pow(2)
    )
    mel = _MEL.to(spec.device, spec.dtype).T @ spec / _FULL_SCALE
    db = 10 * torch.log10(mel.clamp_min(10 ** (DB_FLOOR / 10)))
    return db.transpose(-1, -2).reshape(*shape, -1, N_MELS)


def clip_features(wav: Tensor, sample_rate: int, loop: bool = False) -> ClipFeatures:
    """Log-mel frames and the MFCCs of the same frames (the DCT of the log-mel)."""
    logmel = log_mel(wav, sample_rate, loop)
    return ClipFeatures(logmel, logmel @ _DCT.to(logmel.dtype))
