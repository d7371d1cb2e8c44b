"""TensorBoard logs of a training run: scalars, audio examples and their spectrograms
(coloured by wavediff.evaluation.images.spectrogram_image)."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import Summary

from wavediff.evaluation.images import spectrogram_image
from wavediff.io.audio import encode


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
