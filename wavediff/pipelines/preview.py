"""`wavediff train-preview`: an autoencoder checkpoint + audio shards → a preview decoder.

The recipe (recipes/preview-*.toml, a PreviewRecipe) gives the decoder's widths, the loss and the
training; the hop, latent and audio channels, padding and sample rate are the autoencoder's.
Training is the shared engine's (wavediff.training.preview): resumable, locked, stopped cleanly by
SIGTERM. The checkpoint embeds the autoencoder's recipe and weights hash, and load_preview refuses
it for any other autoencoder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from wavediff.config import PreviewRecipe, load_recipe, to_dict
from wavediff.errors import DataError
from wavediff.models.checkpoint import resolve_checkpoint
from wavediff.models.factory import load_autoencoder
from wavediff.shards.format import MANIFEST_NAME, read_manifest
from wavediff.training.batches import shard_batches
from wavediff.training.engine import train
from wavediff.training.preview import PreviewObjective

DEFAULT_RECIPE = "preview-cpu"


def train_preview(
    autoencoder: str | os.PathLike,
    shards: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: str | os.PathLike = DEFAULT_RECIPE,
    overrides: Sequence[str] = (),
    max_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) in run folder `out` a preview decoder of `autoencoder` on the audio `shards`;
    returns its last checkpoint."""
    folder = resolve_checkpoint(autoencoder)
    ae, ae_recipe, ae_hash = load_autoencoder(folder, "cpu")
    manifest = read_manifest(shards, "audio")
    where = Path(shards) / MANIFEST_NAME
    if manifest.sample_rate != ae_recipe.sample_rate or manifest.channels != ae_recipe.model.channels:
        raise DataError(
            f"{where}: shards are {manifest.sample_rate} Hz × {manifest.channels} channel(s), "
            f"the autoencoder {ae_recipe.sample_rate} Hz × {ae_recipe.model.channels}"
        )
    pr = load_recipe(recipe, PreviewRecipe, list(overrides))
    pr = dataclasses.replace(
        pr, sample_rate=ae_recipe.sample_rate, data=dataclasses.replace(pr.data, path=str(Path(shards)))
    )
    embedded = {"id": ae_hash, "recipe": to_dict(ae_recipe)}
    return train(
        lambda: PreviewObjective(pr, ae, embedded),
        shard_batches(pr.data, "audio", pr.sample_rate),
        pr.train,
        out,
        batch_size=pr.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
