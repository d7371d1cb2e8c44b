"""How well an autoencoder reconstructs: the three numbers the field reports (multi-resolution
STFT distance, mel distance, SI-SDR), and a one-file round trip to listen to.

Metrics are computed sample by sample and then averaged, so a number does not depend on the
batch size (auraloss's spectral convergence would otherwise pool a whole batch). Samples go
through the model whole, as `wavediff encode` sends them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from wavediff.errors import UserError
from wavediff.io import audio
from wavediff.models.factory import load_autoencoder, load_preview
from wavediff.models.losses import METRIC_FFT_SIZES, ReconstructionMetrics
from wavediff.shards.format import MANIFEST_NAME, shard_paths
from wavediff.shards.reader import audio_samples, check_audio_shards, equal_length_batches

METRICS = ("stft", "mel", "si_sdr")


@torch.inference_mode()
def evaluate_autoencoder(
    ae_ckpt: str | os.PathLike,
    shards_folder: str | os.PathLike,
    split: str = "val",
    max_samples: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    preview: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Mean STFT distance, mel distance and SI-SDR (dB) over the samples of one split.

    Samples shorter than the largest metric FFT size cannot be measured; they are counted
    in 'too_short', not averaged. With `preview` (a preview decoder of this autoencoder), the
    same numbers for its decode of the same latents, against the audio ("preview") and against
    the full decode ("preview_vs_full").
    """
    if max_samples is not None and max_samples < 1:
        raise UserError(f"max_samples must be positive or None, got {max_samples}")
    model, recipe, ae_id = load_autoencoder(ae_ckpt, device)
    manifest = check_audio_shards(shards_folder, recipe.sample_rate, model.cfg.channels)
    if split not in manifest.splits or not manifest.splits[split].shards:
        raise UserError(f"{Path(shards_folder) / MANIFEST_NAME}: the '{split}' split has no shards to evaluate")
    device = next(model.parameters()).device
    fast = load_preview(preview, ae_id, device) if preview is not None else None
    metrics = ReconstructionMetrics(recipe.sample_rate).to(device)
    paths = shard_paths(shards_folder, manifest, split)
    totals = dict.fromkeys(METRICS, 0.0)
    previews = {name: dict.fromkeys(METRICS, 0.0) for name in ("preview", "preview_vs_full")}
    counted = too_short = 0

    def long_enough() -> Iterator[tuple[str, torch.Tensor]]:
        nonlocal too_short
        taken = 0
        for path in paths:
            for key, _, wav in audio_samples(path, recipe.sample_rate):
                if max_samples is not None and taken >= max_samples:
                    return
                taken += 1
                if wav.shape[-1] < max(METRIC_FFT_SIZES):
                    too_short += 1
                    continue
                yield key, wav

    for _, x in equal_length_batches(long_enough(), batch_size):
        x = x.to(device)
        recon, info = model(x)
        quick = fast.decode(info["latents"], x.shape[-1]) if fast is not None else None
        for i in range(x.shape[0]):
            one = slice(i, i + 1)
            for name, value in metrics(recon[one], x[one]).items():
                totals[name] += value
            if quick is not None:
                for against, target in (("preview", x), ("preview_vs_full", recon)):
                    for name, value in metrics(quick[one], target[one]).items():
                        previews[against][name] += value
            counted += 1
    if not counted:
        raise UserError(
            f"{Path(shards_folder) / MANIFEST_NAME}: no '{split}' sample is long enough to measure"
            f" (at least {max(METRIC_FFT_SIZES)} samples)"
        )
    return {
        "autoencoder": ae_id,
        "split": split,
        "samples": counted,
        "too_short": too_short,
        **{name: total / counted for name, total in totals.items()},
        **({k: {n: t / counted for n, t in v.items()} for k, v in previews.items()} if fast is not None else {}),
    }


@torch.inference_mode()
def reconstruct_file(
    ae_ckpt: str | os.PathLike,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    device: str | torch.device | None = None,
) -> Path:
    """Encode and decode one file at the autoencoder's rate and channels, keeping its length;
    the format of `out_path` comes from its suffix."""
    model, recipe, _ = load_autoencoder(ae_ckpt, device)
    wav, sr = audio.load(in_path, recipe.sample_rate, model.cfg.channels)
    recon, _ = model(wav[None].to(next(model.parameters()).device))
    return audio.save(out_path, recon[0].float().cpu(), sr)
