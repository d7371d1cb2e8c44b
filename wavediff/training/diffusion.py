"""The denoiser objective and `train_diffusion`, the `wavediff train` entry.

Before training, the recipe is resolved against its data, and the resolved recipe is what
the checkpoint stores: the channel count, the genre vocabulary (sorted names from the
shards' manifest) and sigma_data (the latent shards' measured std; for waveform models the
RMS of the first clips of the train split). The latent shards must come from the recipe's
autoencoder (ids are compared), and that autoencoder's weights and recipe go into every
checkpoint, so `wavediff generate CKPT` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from wavediff.config import DiffusionConfig, DiffusionRecipe, to_dict
from wavediff.errors import ConfigError, DataError
from wavediff.generation.generate import generate
from wavediff.models.autoencoder import Autoencoder
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion
from wavediff.models.factory import load_autoencoder
from wavediff.models.text import encode_prompts
from wavediff.shards.format import Manifest, read_manifest
from wavediff.shards.loader import make_loader
from wavediff.training.batches import shard_batches
from wavediff.training.engine import train
from wavediff.training.objective import Batch, ObjectiveBase

SIGMA_DATA_CLIPS = 32  # waveform models: clips measured for sigma_data
EXAMPLE_STEPS = 25  # sampler steps of the examples written to TensorBoard


def batch_conditions(batch: Batch) -> Conditions:
    """The conditions a loader batch describes: its genre, tempo, the length of the loop it was cut
    from, where in that loop the window starts (it sets the tempo clock's phase), its role and key."""
    return Conditions(
        batch["genre"],
        batch["bpm"],
        batch["seconds_total"],
        batch["bars"],
        batch["seconds_start"],
        batch.get("role"),
        batch.get("key_class"),
    )


def _measure_rms(recipe: DiffusionRecipe) -> float:
    """RMS of the first clips of the train split, in file order: the same on every rank."""
    data = dataclasses.replace(recipe.data, num_workers=0, batch_size=1)
    loader = make_loader(data, "train", training=False, kind="audio", expect_sample_rate=recipe.sample_rate)
    total, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= SIGMA_DATA_CLIPS:
            break
        real = batch["audio"][..., : int(batch["frames"][0])]
        total += float(real.double().pow(2).sum())
        count += real.numel()
    if count == 0 or total == 0:
        raise DataError(f"{recipe.data.path}: the train split holds no audio to measure sigma_data from")
    return (total / count) ** 0.5


def _normalization(recipe: DiffusionRecipe, manifest: Manifest, channels: int) -> DiffusionConfig:
    """recipe.diffusion with what maps data to the model's space filled in from the shards."""
    cfg = recipe.diffusion
    where = Path(recipe.data.path) / "manifest.json"
    if cfg.normalize == "global":
        sigma_data = cfg.sigma_data
        if sigma_data <= 0:
            sigma_data = manifest.stats.overall_std if recipe.data_kind == "latent" else _measure_rms(recipe)
        return dataclasses.replace(cfg, sigma_data=round(sigma_data, 6))
    if recipe.data_kind != "latent":
        raise ConfigError('diffusion.normalize = "channel" needs latent shards (an autoencoder); use "global"')
    stats = manifest.stats
    mean = cfg.channel_mean or (stats.mean if stats is not None else None)
    std = cfg.channel_std or (stats.std if stats is not None else None)
    if mean is None or std is None:
        raise DataError(f"{where}: no per-channel statistics to normalize by (encode the latents again)")
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"diffusion.channel_mean/channel_std need {channels} values each, one per latent channel")
    if min(std) <= 0:
        raise ConfigError(f"diffusion.channel_std must be positive, got {min(std)} (a constant latent channel?)")
    return dataclasses.replace(
        cfg, sigma_data=1.0, channel_mean=[round(m, 6) for m in mean], channel_std=[round(s, 6) for s in std]
    )


def resolve(recipe: DiffusionRecipe) -> tuple[DiffusionRecipe, Autoencoder | None, dict[str, Any] | None]:
    """(resolved recipe, frozen autoencoder or None, {"id", "recipe"} of the autoencoder or None)."""
    if not recipe.data.path:
        raise ConfigError(
            "data.path is empty: point it at latent shards (`wavediff encode`) or, for a waveform model, audio shards"
        )
    kind = recipe.data_kind
    manifest = read_manifest(recipe.data.path, kind)
    where = Path(recipe.data.path) / "manifest.json"
    if manifest.sample_rate != recipe.sample_rate:
        raise ConfigError(f"{where}: shards are {manifest.sample_rate} Hz but sample_rate is {recipe.sample_rate}")
    autoencoder, ae_info = None, None
    if recipe.autoencoder:
        autoencoder, ae_recipe, ae_id = load_autoencoder(recipe.autoencoder, "cpu")
        if manifest.autoencoder != ae_id:
            raise DataError(
                f"{where}: latents of autoencoder {manifest.autoencoder!r}, but {recipe.autoencoder} is {ae_id!r}"
            )
        ae_info = {"id": ae_id, "recipe": to_dict(ae_recipe)}
        channels = manifest.latent_dim
    else:
        channels = manifest.channels
    if recipe.channels not in (0, channels):
        raise ConfigError(f"channels is {recipe.channels} but the shards in {where} hold {channels}")
    genres = recipe.conditioning.genres or sorted(manifest.genres)
    resolved = dataclasses.replace(
        recipe,
        channels=channels,
        conditioning=dataclasses.replace(recipe.conditioning, genres=list(genres)),
        diffusion=_normalization(recipe, manifest, channels),
    )
    return resolved, autoencoder, ae_info


def genre_examples(model: nn.Module, recipe: DiffusionRecipe, batch: Batch) -> dict[str, Tensor]:
    """One loop per genre (one unconditional loop without genres), at a tempo that genre has in the
    batch, with the recipe's sampling settings (at most EXAMPLE_STEPS steps): the examples in TensorBoard."""
    settings = dataclasses.replace(recipe.sampling, steps=min(recipe.sampling.steps, EXAMPLE_STEPS))
    genres = recipe.conditioning.genres if recipe.conditioning.genre else []
    bpm = batch["bpm"].float().cpu()
    known = bpm[bpm > 0]
    default = float(known.median()) if known.numel() else 120.0
    audio = {}
    for i, name in enumerate(genres or [None]):
        of_genre = bpm[(batch["genre"].cpu() == i) & (bpm > 0)]
        tempo = float(of_genre[0]) if of_genre.numel() else default
        loops, _ = generate(model, genre=name, bpm=tempo, bars=settings.example_bars, seed=i, settings=settings)
        audio[f"{name or 'loop'}-{tempo:.0f}bpm"] = loops[0]
    return audio


class DiffusionObjective(ObjectiveBase):
    """The Objective for a LoopDiffusion denoiser; see the module docstring."""

    kind = "diffusion"
    exported = "denoiser"

    def __init__(self, recipe: DiffusionRecipe, autoencoder: Autoencoder | None, ae_info: dict[str, Any] | None):
        super().__init__(recipe, LoopDiffusion(recipe, autoencoder))
        self.ae_info = ae_info
        self.member = recipe.data_kind

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cond = batch_conditions(batch)
        if self.recipe.conditioning.text:
            cond.text, cond.text_mask = encode_prompts(batch["prompt"], batch["frames"].device)
        losses = nets["denoiser"](batch[self.member], cond, batch["frames"])
        loss = losses.mean()
        return loss, {"diffusion/loss": loss.detach()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        return genre_examples(model, self.recipe, batch), {}

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), "autoencoder": self.ae_info}


def train_diffusion(
    recipe: DiffusionRecipe, run_dir: str | os.PathLike, *, max_steps: int | None = None, progress: bool = True
) -> Path:
    """Train (or resume) a denoiser in `run_dir`; returns the last checkpoint folder."""
    resolved, autoencoder, ae_info = resolve(recipe)
    member = resolved.data_kind
    return train(
        lambda: DiffusionObjective(resolved, autoencoder, ae_info),
        shard_batches(resolved.data, member, resolved.sample_rate, resolved.conditioning.genres),
        resolved.train,
        run_dir,
        batch_size=resolved.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
