"""The genre classifier's objective and `train_classifier`, the `train-classifier` entry.

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

from torch import Tensor, nn

from wavediff.config import ClassifierRecipe
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
    """The recipe with the shards' sample rate and sorted genre vocabulary filled in."""
    if not recipe.data.path:
        raise ConfigError("data.path is empty: point it at audio shards (`wavediff data shard`)")
    manifest = read_manifest(recipe.data.path, "audio")
    where = Path(recipe.data.path) / "manifest.json"
    if recipe.sample_rate not in (0, manifest.sample_rate):
        raise ConfigError(f"{where}: shards are {manifest.sample_rate} Hz but sample_rate is {recipe.sample_rate}")
    genres = recipe.genres or sorted(manifest.genres)
    if len(genres) < 2:
        raise ConfigError(f"{where}: a genre classifier needs shards of at least 2 genres, found {genres or 'none'}")
    return dataclasses.replace(recipe, sample_rate=manifest.sample_rate, genres=list(genres))


class ClassifierObjective(ObjectiveBase):
    """Cross-entropy on the genre of each window; windows without a known genre do not count."""

    kind = "classifier"
    exported = "classifier"

    def __init__(self, recipe: ClassifierRecipe) -> None:
        super().__init__(recipe, GenreClassifier(recipe))

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = nets["classifier"](batch["audio"])
        labels = batch["genre"]
        if not bool((labels >= 0).any()):  # nothing to learn from: a zero that keeps the graph
            return logits.sum() * 0, {}
        loss = nn.functional.cross_entropy(logits, labels, ignore_index=-1)
        known = labels >= 0
        accuracy = (logits.argmax(-1)[known] == labels[known]).float().mean()
        return loss, {"classifier/loss": loss.detach(), "classifier/train_accuracy": accuracy.detach()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """No audio; the EMA model's accuracy on the batch."""
        known = batch["genre"] >= 0
        predicted = model(batch["audio"].float()).argmax(-1)
        return {}, {"classifier_batch_accuracy": float((predicted[known] == batch["genre"][known]).float().mean())}


def train_classifier(
    recipe: ClassifierRecipe, run_dir: str | os.PathLike, *, max_steps: int | None = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) a genre classifier in `run_dir`; returns (last checkpoint, its val accuracy
    report: wavediff.evaluation.suite.classifier_report, whose accuracy is None without a val split)."""
    resolved = resolve(recipe)
    last = train(
        lambda: ClassifierObjective(resolved),
        shard_batches(resolved.data, "audio", resolved.sample_rate, resolved.genres),
        resolved.train,
        run_dir,
        batch_size=resolved.data.batch_size,
        max_steps=max_steps,
        progress=progress,
    )
    report = {"checkpoint": str(last), **classifier_report(load_classifier(last), resolved.data.path)}
    atomic_write_json(Path(run_dir) / VAL_REPORT, report)
    return last, report
