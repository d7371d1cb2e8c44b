"""The genre (or role) classifier's objective and `train_classifier`, the `train-classifier` entry.

It trains with the shared engine on random windows of the train split (loops rolled,
gain and polarity varied), then is scored on the whole clips of the val split, which
it never saw: that accuracy is what makes its verdict on generated loops mean something,
so it is printed, written beside the run (RUN/val-accuracy.json) and repeated by `eval`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wavediff.config import ROLES, ClassifierRecipe
from wavediff.errors import ConfigError
from wavediff.evaluation.suite import VAL_REPORT, classifier_report
from wavediff.io.files import atomic_write_json
from wavediff.models.classifier import GenreClassifier
from wavediff.models.factory import load_classifier
from wavediff.shards.format import read_manifest
from wavediff.training.batches import shard_batches
from wavediff.training.engine import train
from wavediff.training.objective import Batch, ObjectiveBase


def resolve(recipe: ClassifierRecipe) -> ClassifierRecipe:
    """The recipe with the shards' sample rate and the label's vocabulary filled in: the sorted
    genres, or the roles the shards hold in ROLES order."""
    if not recipe.data.path:
        raise ConfigError("data.path is empty: point it at audio shards (`wavediff data shard`)")
    manifest = read_manifest(recipe.data.path, "audio")
    where = Path(recipe.data.path) / "manifest.json"
    if recipe.sample_rate not in (0, manifest.sample_rate):
        raise ConfigError(f"{where}: shards are {manifest.sample_rate} Hz but sample_rate is {recipe.sample_rate}")
    found = sorted(manifest.genres) if recipe.label == "genre" else [r for r in ROLES if manifest.roles.get(r)]
    vocabulary = recipe.genres or found
    if recipe.label == "role" and not set(vocabulary) <= set(ROLES):
        raise ConfigError(f"{where}: a role classifier's classes must be among {list(ROLES)}, got {vocabulary}")
    if len(vocabulary) < 2:
        raise ConfigError(
            f"{where}: a {recipe.label} classifier needs shards of at least 2 {recipe.label}s, "
            f"found {vocabulary or 'none'}"
        )
    return dataclasses.replace(recipe, sample_rate=manifest.sample_rate, genres=list(vocabulary))


class ClassifierObjective(ObjectiveBase):
    """Cross-entropy on the label (genre or role) of each window; windows without a known one do not count."""

    kind = "classifier"
    exported = "classifier"

    def __init__(self, recipe: ClassifierRecipe) -> None:
        super().__init__(recipe, GenreClassifier(recipe))
        # The loader hands roles on as ROLES indices; a role classifier's classes may be fewer.
        self.role_class = torch.tensor([recipe.genres.index(r) if r in recipe.genres else -1 for r in ROLES])
        self.label = recipe.label

    def targets(self, batch: Batch) -> Tensor:
        """The class index of each window, −1 where its label is unknown (or not in the vocabulary)."""
        if self.label == "genre":
            return batch["genre"]
        roles = batch["role"]
        return torch.where(roles >= 0, self.role_class.to(roles.device)[roles.clamp_min(0)], -1)

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = nets["classifier"](batch["audio"])
        labels = self.targets(batch)
        if not bool((labels >= 0).any()):  # nothing to learn from: a zero that keeps the graph
            return logits.sum() * 0, {}
        loss = nn.functional.cross_entropy(logits, labels, ignore_index=-1)
        known = labels >= 0
        accuracy = (logits.argmax(-1)[known] == labels[known]).float().mean()
        return loss, {"classifier/loss": loss.detach(), "classifier/train_accuracy": accuracy.detach()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """No audio; the EMA model's accuracy on the batch."""
        labels = self.targets(batch)
        known = labels >= 0
        predicted = model(batch["audio"].float()).argmax(-1)
        return {}, {"classifier_batch_accuracy": float((predicted[known] == labels[known]).float().mean())}


def train_classifier(
    recipe: ClassifierRecipe, run_dir: str | os.PathLike, *, max_steps: int | None = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) a genre (or role) classifier in `run_dir`; returns (last checkpoint, its val accuracy
    report: wavediff.evaluation.suite.classifier_report, whose accuracy is None without a val split)."""
    resolved = resolve(recipe)
    last = train(
        lambda: ClassifierObjective(resolved),
        shard_batches(
            resolved.data, "audio", resolved.sample_rate, resolved.genres if resolved.label == "genre" else None
        ),
        resolved.train,
        run_dir,
        batch_size=resolved.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
    report = {"checkpoint": str(last), **classifier_report(load_classifier(last), resolved.data.path)}
    atomic_write_json(Path(run_dir) / VAL_REPORT, report)
    return last, report
