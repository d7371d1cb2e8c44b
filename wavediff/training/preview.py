"""The preview decoder's objective: match the frozen autoencoder's full decoder on real latents.

Each batch of audio is encoded by the autoencoder (its posterior mean) and decoded by both
decoders at the crop's exact length; the preview learns the full decode (MR-STFT + mel, and an
L1 waveform term that keeps phase close) and, with loss.audio_weight, the audio itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from wavediff.config import PreviewRecipe
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.losses import METRIC_FFT_SIZES, ReconstructionLoss, ReconstructionMetrics, waveform_distance
from wavediff.models.preview import PreviewDecoder
from wavediff.training.objective import Batch, ObjectiveBase


def check_recipe(recipe: PreviewRecipe) -> None:
    """Fail before training on settings that would only fail at the first step."""
    loss, size = recipe.loss, recipe.data.sample_size
    sizes = [*(loss.fft_sizes if loss.stft_weight else []), *(loss.mel_fft_sizes if loss.mel_weight else [])]
    if (loss.decoder_weight or loss.audio_weight) and sizes and max(sizes) > size:
        raise ConfigError(f"data.sample_size {size} is shorter than the largest loss FFT size ({max(sizes)})")
    if min(loss.decoder_weight, loss.audio_weight, loss.waveform_weight) < 0:
        raise ConfigError("loss.decoder_weight, loss.audio_weight and loss.waveform_weight must not be negative")


class PreviewObjective(ObjectiveBase):
    """The Objective of `wavediff train-preview`; see the module docstring."""

    kind = "preview"
    exported = "preview"

    def __init__(self, recipe: PreviewRecipe, autoencoder: Autoencoder, embedded: Mapping[str, Any]) -> None:
        check_recipe(recipe)
        super().__init__(recipe, PreviewDecoder(autoencoder.cfg, recipe.model))
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.embedded = dict(embedded)
        # spectral terms only, against both targets; the waveform term is against the full decode alone
        self.spectral = ReconstructionLoss(replace(recipe.loss, waveform_weight=0.0), recipe.sample_rate)
        self.metrics = ReconstructionMetrics(recipe.sample_rate)

    def to(self, device: torch.device) -> None:
        for module in (self.autoencoder, self.spectral, self.metrics):
            module.to(device)

    @torch.no_grad()
    def _full(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(latents, the full decoder's audio at the crop's length) of a batch of audio."""
        z = self.autoencoder.encode(audio)
        return z, self.autoencoder.decode(z, audio.shape[-1])

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        audio, cfg = batch["audio"], self.recipe.loss
        z, full = self._full(audio)
        out = nets["preview"](z, audio.shape[-1])
        total = out.new_zeros((), dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        for name, weight, target in (("decoder", cfg.decoder_weight, full), ("audio", cfg.audio_weight, audio)):
            if weight:
                part, parts = self.spectral(out, target)
                total = total + weight * part
                terms.update({f"{name}_{k}": v for k, v in parts.items()})
        if cfg.waveform_weight:
            terms["waveform"] = waveform_distance(out, full)
            total = total + cfg.waveform_weight * terms["waveform"]
        return total, {f"preview/{k}": v.detach() for k, v in terms.items()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """The first clip, its full and preview decodes; metrics of the preview against both (clips ≥ 2048 samples)."""
        audio = batch["audio"].float()
        z, full = self._full(audio)
        out = model(z, audio.shape[-1])
        metrics: dict[str, float] = {}
        if audio.shape[-1] >= max(METRIC_FFT_SIZES):
            metrics = {f"vs_full/{k}": v for k, v in self.metrics(out, full).items()}
            metrics |= {f"vs_audio/{k}": v for k, v in self.metrics(out, audio).items()}
        return {"input": audio[0], "full": full[0], "preview": out[0]}, metrics

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "autoencoder": self.embedded}
