"""A small genre (or role) classifier: the judge behind the evaluation suite's genre adherence,
and with `label = "role"` the role judge of its prompt adherence.

No pretrained audio model can load here, so the suite trains its own on the reference
shards. It sees audio as the metrics do (wavediff.models.features: log-mel at the analysis rate,
so it reads any sample rate) with each clip's mean level removed, so a generated loop that
is quieter than the training loops is judged on its sound, not its gain. Conv blocks
over time with the mel bands as channels, then mean and max pooling over time: any
length goes in, one genre comes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from wavediff.config import ClassifierRecipe
from wavediff.errors import UserError
from wavediff.io.audio import conform
from wavediff.models.features import ANALYSIS_RATE, N_FFT, N_MELS, mel_db

DB_SCALE = 20.0  # log-mel dB are divided by this: unit-ish inputs


class GenreClassifier(nn.Module):
    """(batch, channels, samples) audio at recipe.sample_rate → (batch, classes) logits; the classes
    are recipe.genres, the vocabulary of recipe.label (genres, or roles)."""

    def __init__(self, recipe: ClassifierRecipe) -> None:
        super().__init__()
        if len(recipe.genres) < 2:
            raise UserError(f"a {recipe.label} classifier needs at least 2 classes, got {recipe.genres}")
        if recipe.sample_rate <= 0:
            raise UserError(f"classifier sample_rate must be positive, got {recipe.sample_rate}")
        cfg = recipe.model
        if cfg.width < 1 or cfg.layers < 0 or cfg.kernel_size < 1 or not 0 <= cfg.dropout < 1:
            raise UserError(f"classifier model settings out of range: {cfg}")
        self.recipe, self.genres = recipe, list(recipe.genres)
        pad = cfg.kernel_size // 2
        blocks: list[nn.Module] = [nn.Conv1d(N_MELS, cfg.width, cfg.kernel_size, padding=pad), nn.GELU()]
        for _ in range(cfg.layers):
            blocks += [
                nn.Conv1d(cfg.width, cfg.width, cfg.kernel_size, stride=2, padding=pad),
                nn.GroupNorm(1, cfg.width),
                nn.GELU(),
            ]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.width, len(self.genres)))

    @property
    def sample_rate(self) -> int:
        return self.recipe.sample_rate

    @property
    def label(self) -> str:
        """What it tells apart: "genre" or "role"."""
        return self.recipe.label

    def features(self, x: Tensor) -> Tensor:
        """(batch, channels, samples) → (batch, N_MELS, frames) level-free log-mel."""
        mono = x.mean(1)
        if self.sample_rate != ANALYSIS_RATE:
            mono = AF.resample(mono, self.sample_rate, ANALYSIS_RATE)
        db = mel_db(nn.functional.pad(mono, (N_FFT // 2, N_FFT // 2))).transpose(1, 2)
        return (db - db.mean(dim=(1, 2), keepdim=True)) / DB_SCALE

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(self.features(x))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))

    @torch.no_grad()
    def classify(self, wav: Tensor, sample_rate: int) -> str:
        """The class (genre, or role) of one (channels, samples) clip at any rate and channel count, judged whole."""
        device = next(self.parameters()).device
        x = conform(wav.float().cpu(), sample_rate, self.sample_rate, 1)
        if x.shape[-1] < N_FFT:
            x = nn.functional.pad(x, (0, N_FFT - x.shape[-1]))
        return self.genres[int(self(x[None].to(device)).argmax(-1))]


def genre_accuracy(model: GenreClassifier, items: Iterable[tuple[Tensor, int, str]]) -> dict[str, Any]:
    """Share of (wav, sample_rate, label) clips the classifier assigns to their label (genre, or role
    for a role classifier): overall, per label, and chance (one over the labels it knows). Labels it
    does not know are skipped. The keys say "genre" whatever the label, as reports always have."""
    hits: dict[str, list[int]] = {}
    skipped = 0
    for wav, sr, genre in items:
        if genre not in model.genres:
            skipped += 1
            continue
        hits.setdefault(genre, []).append(int(model.classify(wav, sr) == genre))
    total = sum(len(h) for h in hits.values())
    if not total:
        raise UserError(f"no clip of a {model.label} the classifier knows ({', '.join(model.genres)})")
    return {
        "accuracy": sum(sum(h) for h in hits.values()) / total,
        "samples": total,
        "per_genre": {g: sum(h) / len(h) for g, h in sorted(hits.items())},
        "chance": 1 / len(model.genres),
        "skipped": skipped,
    }
