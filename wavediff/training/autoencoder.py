"""The autoencoder objective (stable-audio-tools' recipe) and `train_autoencoder`, the `train-ae` entry.

Generator loss: multi-resolution STFT and mel distances + KL, and from
`loss.adversarial_start` on, hinge and feature-matching losses against a multi-scale STFT
discriminator. From that step on, generator and discriminator steps alternate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from wavediff.config import AERecipe, OptimizerConfig
from wavediff.errors import ConfigError
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.discriminator import MultiScaleSTFTDiscriminator
from wavediff.models.losses import (
    METRIC_FFT_SIZES,
    ReconstructionLoss,
    ReconstructionMetrics,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)
from wavediff.shards.format import read_manifest
from wavediff.training.batches import shard_batches
from wavediff.training.engine import train
from wavediff.training.objective import Batch, ObjectiveBase


def _check(recipe: AERecipe) -> None:
    """Fail before training on settings that would only fail at the first step."""
    loss, size = recipe.loss, recipe.data.sample_size
    needs = {"loss.fft_sizes": loss.fft_sizes if loss.stft_weight else []}
    needs["loss.mel_fft_sizes"] = loss.mel_fft_sizes if loss.mel_weight else []
    needs["loss.disc_fft_sizes"] = loss.disc_fft_sizes if loss.adversarial_weight or loss.feature_weight else []
    for key, sizes in needs.items():
        if sizes and max(sizes) > size:
            raise ConfigError(f"data.sample_size {size} is shorter than the largest of {key} ({max(sizes)})")


class AutoencoderObjective(ObjectiveBase):
    """The Objective for an Autoencoder; see the module docstring."""

    kind = "autoencoder"
    exported = "autoencoder"

    def __init__(self, recipe: AERecipe) -> None:
        _check(recipe)
        super().__init__(recipe, Autoencoder(recipe.model))
        cfg = recipe.loss
        adversarial = cfg.adversarial_weight > 0 or cfg.feature_weight > 0
        channels = recipe.model.channels
        self.discriminator = MultiScaleSTFTDiscriminator.from_config(cfg, channels) if adversarial else None
        self.reconstruction = ReconstructionLoss(cfg, recipe.sample_rate)
        self.metrics = ReconstructionMetrics(recipe.sample_rate)

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"autoencoder": self.model}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def optimizers(self) -> dict[str, tuple[str, OptimizerConfig]]:
        specs = {"generator": ("autoencoder", self.recipe.train.optimizer)}
        if self.discriminator is not None:
            specs["discriminator"] = ("discriminator", self.recipe.train.disc_optimizer)
        return specs

    def to(self, device: torch.device) -> None:
        self.reconstruction.to(device)
        self.metrics.to(device)

    def _adversarial(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.recipe.loss.adversarial_start

    def optimizer_for(self, step: int) -> str:
        start = self.recipe.loss.adversarial_start
        return "discriminator" if self._adversarial(step) and (step - start) % 2 == 1 else "generator"

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x, cfg = batch["audio"], self.recipe.loss
        if optimizer == "discriminator":
            with torch.no_grad():
                recon, _ = nets["autoencoder"](x)
            logits, _ = nets["discriminator"](torch.cat([x, recon]))  # one pass over real and fake
            real, fake = zip(*(scale.chunk(2) for scale in logits))
            loss = discriminator_hinge_loss(real, fake)
            return loss, {"ae/discriminator": loss.detach()}
        recon, info = nets["autoencoder"](x)
        total, terms = self.reconstruction(recon, x)
        terms["kl"] = info["kl"]
        total = total + cfg.kl_weight * info["kl"]
        if self._adversarial(step):
            fake_logits, fake_features = nets["discriminator"](recon)
            with torch.no_grad():
                _, real_features = nets["discriminator"](x)
            terms["adversarial"] = generator_hinge_loss(fake_logits)
            terms["feature_matching"] = feature_matching_loss(real_features, fake_features)
            total = total + cfg.adversarial_weight * terms["adversarial"]
            total = total + cfg.feature_weight * terms["feature_matching"]
        return total, {f"ae/{k}": v.detach() for k, v in terms.items()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """The first clip and its reconstruction; metrics over the whole batch (clips of ≥ 2048 samples)."""
        x = batch["audio"].float()
        recon, _ = model(x)
        metrics = self.metrics(recon, x) if x.shape[-1] >= max(METRIC_FFT_SIZES) else {}
        return {"input": x[0], "reconstruction": recon[0]}, metrics


def train_autoencoder(
    recipe: AERecipe, run_dir: str | os.PathLike, *, max_steps: int | None = None, progress: bool = True
) -> Path:
    """Train (or resume) an autoencoder in `run_dir`; returns the last checkpoint folder.

    `max_steps` stops at that step without changing the schedule (see engine.train).
    """
    if recipe.data.path:
        have = read_manifest(recipe.data.path, "audio").channels
        if have != recipe.model.channels:
            raise ConfigError(
                f"{Path(recipe.data.path) / 'manifest.json'}: shards hold {have}-channel audio "
                f"but model.channels is {recipe.model.channels}"
            )
    return train(
        lambda: AutoencoderObjective(recipe),
        shard_batches(recipe.data, "audio", recipe.sample_rate),
        recipe.train,
        run_dir,
        batch_size=recipe.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
