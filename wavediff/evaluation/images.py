"""Pictures without an imaging library: coloured spectrograms (TensorBoard examples, the eval
report's grid) and PNG files.

matplotlib and Pillow are not dependencies: a spectrogram is coloured here through a small
magma-like palette, and a PNG of 8-bit RGB rows is a few lines of zlib. The grid has one
row per genre: generated loops on the left, reference loops on the right of a wider gap,
every spectrogram from the same analysis (mono at the features' analysis rate, so sets made
at different rates line up) squeezed to one width.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wavediff.io.audio import conform
from wavediff.io.files import atomic_write_bytes
from wavediff.models.features import ANALYSIS_RATE

CELL_WIDTH = 256
SPECTROGRAM_FFT = 256  # 129 frequency rows at the analysis rate
GAP, SET_GAP = 2, 12  # pixels between cells, and between the generated and reference halves
BACKGROUND, EMPTY = 255, 128  # white around cells; grey for a missing loop


# magma, sampled at six points: dark purple (silence) to pale yellow (loud)
_PALETTE = (
    np.array(
        [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]], dtype=np.float32
    )
    / 255.0
)
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


def png_bytes(rgb: np.ndarray) -> bytes:
    """(height, width, 3) uint8 → the bytes of a PNG file."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"png_bytes needs a non-empty (height, width, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width, _ = rgb.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb))  # filter 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def _cell(wav: Tensor, sample_rate: int) -> np.ndarray:
    mono = conform(wav.float().cpu(), sample_rate, ANALYSIS_RATE, 1)
    image = spectrogram_image(mono, SPECTROGRAM_FFT).numpy()  # (3, rows, frames) in [0, 1]
    columns = np.minimum((np.arange(CELL_WIDTH) * image.shape[2] / CELL_WIDTH).astype(int), image.shape[2] - 1)
    return (image[:, :, columns].transpose(1, 2, 0) * 255).round().astype(np.uint8)


def spectrogram_grid(
    rows: Sequence[tuple[Sequence[tuple[Tensor, int]], Sequence[tuple[Tensor, int]]]], per_side: int
) -> np.ndarray:
    """One row per (generated, reference) pair of (wav, sample_rate) lists; the first `per_side`
    of each side are drawn, missing ones grey. Returns (height, width, 3) uint8."""
    if not rows or per_side < 1:
        raise ValueError(f"a spectrogram grid needs at least one row and per_side ≥ 1, got {len(rows)}, {per_side}")
    height = SPECTROGRAM_FFT // 2 + 1
    side = per_side * CELL_WIDTH + (per_side - 1) * GAP
    grid = np.full((len(rows) * (height + GAP) - GAP, 2 * side + SET_GAP, 3), BACKGROUND, np.uint8)
    for r, halves in enumerate(rows):
        top = r * (height + GAP)
        for h, clips in enumerate(halves):
            for k in range(per_side):
                left = h * (side + SET_GAP) + k * (CELL_WIDTH + GAP)
                cell = _cell(*clips[k]) if k < len(clips) else np.full((height, CELL_WIDTH, 3), EMPTY, np.uint8)
                grid[top : top + height, left : left + CELL_WIDTH] = cell
    return grid


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB image atomically as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(rgb))
    return path
