"""TensorBoard logs of a training run: scalars, audio examples and their spectrograms.

matplotlib is not a dependency, so spectrograms are coloured here: a log-magnitude STFT
mapped through a small magma-like palette into an RGB image tensor.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import Summary

from wavediff.audio import encode

# magma, sampled at six points: dark purple (silence) to pale yellow (loud)
_PALETTE = np.array(
    [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]], dtype=np.float32
) / 255.0
DYNAMIC_RANGE_DB = 80.0


def spectrogram_image(wav: Tensor, n_fft: int = 512) -> Tensor:
    """(channels, samples) audio → (3, frequency, frames) RGB in [0, 1], low frequencies at the bottom.

    Channels are mixed down; levels are dB relative to the loudest bin, clipped at −80 dB. The hop
    (n_fft/16 to n_fft/4) aims at ~256 frames, so short clips do not come out as thin strips.
    """
    mono = wav.detach().float().cpu().mean(0)
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    hop = max(n_fft // 16, min(n_fft // 4, mono.numel() // 256))
    spec = torch.stft(mono, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-10))
    level = ((db - db.max()) / DYNAMIC_RANGE_DB + 1).clamp(0, 1).flip(0).numpy()
    anchors = np.linspace(0, 1, len(_PALETTE))
    rgb = np.stack([np.interp(level, anchors, _PALETTE[:, c]) for c in range(3)])
    return torch.from_numpy(rgb.astype(np.float32))


def memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated on a GPU, process peak RSS otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class TrainLogger:
    """A SummaryWriter for the main process; on other processes every call does nothing.

    `purge_step` hides events a crashed run logged after its last checkpoint, so a resumed
    run's curves do not double back.
    """

    def __init__(self, log_dir: str | os.PathLike, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(str(Path(log_dir)), purge_step=purge_step) if enabled else None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def audio(self, name: str, wav: Tensor, sample_rate: int, step: int) -> None:
        """Audio (stereo kept: SummaryWriter.add_audio takes mono only) and its spectrogram image."""
        if self.writer is None:
            return
        wav = wav.detach().float().cpu().clamp(-1, 1)
        data = encode(wav, sample_rate, "wav", "PCM_16")
        clip = Summary.Audio(
            sample_rate=sample_rate,
            num_channels=wav.shape[0],
            length_frames=wav.shape[-1],
            encoded_audio_string=data,
            content_type="audio/wav",
        )
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=f"audio/{name}", audio=clip)]), step)
        self.writer.add_image(f"spectrogram/{name}", spectrogram_image(wav), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
