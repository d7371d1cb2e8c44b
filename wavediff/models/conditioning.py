"""What the denoiser is told about the loop it makes: genre, tempo, length and (when on) role,
key and a text prompt.

Each condition becomes one vector (a token). Their sum is the pooled vector that modulates
every U-Net block; the tokens themselves feed cross-attention when the U-Net has it. A prompt
gives one such token (its mean token embedding, projected) and, for cross-attention, all its
token embeddings projected to the conditioner's width; the padding after a short prompt, and
every token of an absent or dropped prompt, is one learned pad vector.

Tempo and length are continuous, so they enter as Fourier features of their logarithms
(Stable Audio's timing conditioning does the same for seconds): 120 and 121 BPM get nearby
vectors, and a tempo between the training tempos still means something.

Every condition has a learned null vector. It stands in for unknown values (no genre, no
tempo in the metadata) and, during training, replaces the condition at random, so the
same network is also the unconditional model that classifier-free guidance subtracts.
Null and real vectors are mixed with `torch.where`, so every parameter is in every
forward pass (DistributedDataParallel requires it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from wavediff.config import ROLES, ConditioningConfig
from wavediff.errors import ConfigError, UserError
from wavediff.io.keys import KEYS, key_index
from wavediff.models.text import TEXT_DIM, TEXT_TOKENS

FOURIER_BANDS = 8  # sin/cos pairs per scalar
TEMPO_REFERENCE = 120.0  # BPM at which the tempo features are centred
SECONDS_REFERENCE = 4.0
# New conditions go last: older checkpoints' tokens (and null rows) keep their places.
CONDITIONS = ("genre", "tempo", "length", "role", "key", "text")


@dataclass
class Conditions:
    """Per-example values for a batch; 0 (or genre/role −1) means unknown."""

    genre: Tensor  # (B,) long: index into the vocabulary, −1 unknown
    bpm: Tensor  # (B,) float
    seconds: Tensor  # (B,) float: the loop's (or source's) length
    bars: Tensor  # (B,) float
    # (B,) float: where the window starts in its loop or source, in seconds (a training crop);
    # None: at the start, which is what generation makes. Only the tempo clock reads it.
    start: Tensor | None = None
    role: Tensor | None = None  # (B,) long: index into the role vocabulary, −1 unknown; None: all unknown
    key: Tensor | None = None  # (B,) long: a class of wavediff.io.keys.KEYS, −1 unknown; None: all unknown
    text: Tensor | None = None  # (B, TEXT_TOKENS, TEXT_DIM) prompt token embeddings (models.text); None: no prompt
    text_mask: Tensor | None = None  # (B, TEXT_TOKENS) bool: which of them are real tokens

    @property
    def batch_size(self) -> int:
        return self.genre.shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Conditions:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Conditions(**{name: None if t is None else fn(t) for name, t in values.items()})

    def to(self, device: torch.device | str) -> Conditions:
        return self._map(lambda t: t.to(device))

    def repeat(self, times: int) -> Conditions:
        """The batch repeated `times` over (classifier-free guidance runs cond and uncond in one pass)."""
        return self._map(lambda t: t.repeat(times, *[1] * (t.dim() - 1)))

    @staticmethod
    def cat(parts: list[Conditions]) -> Conditions:
        """Batches one after another; a value some parts lack is unknown (or no prompt) in those."""
        first = parts[0]

        def unknown(p: Conditions, name: str) -> Tensor:
            like = next(getattr(q, name) for q in parts if getattr(q, name) is not None)
            shape = (p.batch_size, *like.shape[1:])
            return like.new_zeros(shape) if name in ("text", "text_mask", "start") else like.new_full(shape, -1)

        out = {}
        for f in fields(first):
            values = [getattr(p, f.name) for p in parts]
            if all(v is None for v in values):
                out[f.name] = None
            else:
                out[f.name] = torch.cat([v if v is not None else unknown(p, f.name) for v, p in zip(values, parts)])
        return Conditions(**out)


def fourier_features(value: Tensor, bands: int = FOURIER_BANDS) -> Tensor:
    """(B,) → (B, 2·bands): sin/cos at octave-spaced frequencies; |value| ≲ 4 keeps them unaliased."""
    freqs = math.pi * 2.0 ** torch.arange(bands, device=value.device, dtype=torch.float32) / 4
    angles = value.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _mlp(features: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))


class Conditioner(nn.Module):
    """Conditions → (pooled vector (B, dim), tokens (B, n, dim)); see the module docstring."""

    def __init__(self, cfg: ConditioningConfig) -> None:
        super().__init__()
        for key in ("dropout", "dropout_all"):
            if not 0.0 <= getattr(cfg, key) < 1.0:
                raise ConfigError(f"conditioning.{key} must be in [0, 1), got {getattr(cfg, key)}")
        if cfg.dim < 1:
            raise ConfigError(f"conditioning.dim must be positive, got {cfg.dim}")
        self.cfg = cfg
        self.names = [name for name in CONDITIONS if getattr(cfg, name)]
        if not self.names:
            raise ConfigError(
                "conditioning: every condition is off; leave one on or build the U-Net without a conditioner"
            )
        self.dim = cfg.dim
        self.null = nn.Parameter(torch.randn(len(self.names), cfg.dim) * 0.02)
        if cfg.genre:
            self.genre = nn.Embedding(max(1, len(cfg.genres)), cfg.dim)
        if cfg.tempo:
            self.tempo = _mlp(2 * FOURIER_BANDS, cfg.dim)
        if cfg.length:
            self.length = _mlp(4 * FOURIER_BANDS + 1, cfg.dim)  # seconds, bars, and "bars known"
        if cfg.role:
            if list(cfg.roles) != list(ROLES[: len(cfg.roles)]):  # the loader's ids index config.ROLES
                raise ConfigError(f"conditioning.roles must be {list(ROLES)} (or a prefix), got {cfg.roles}")
            self.role = nn.Embedding(max(1, len(cfg.roles)), cfg.dim)
        if cfg.key:
            self.key = nn.Embedding(len(KEYS), cfg.dim)
        if cfg.text:
            self.text = _mlp(TEXT_DIM, cfg.dim)  # the pooled token: the prompt's mean token embedding
            self.text_tokens = nn.Linear(TEXT_DIM, cfg.dim)  # each token embedding, for cross-attention
            self.text_pad = nn.Parameter(torch.randn(cfg.dim) * 0.02)

    @property
    def genres(self) -> list[str]:
        return list(self.cfg.genres)

    def genre_id(self, name: str | None) -> int:
        """The vocabulary index of a genre name (−1 for None); an unknown name is an error listing the known ones."""
        if name is None:
            return -1
        if name not in self.cfg.genres:
            known = ", ".join(self.cfg.genres) or "none: the model has no genre vocabulary"
            raise UserError(f"unknown genre {name!r}; this model knows: {known}")
        return self.cfg.genres.index(name)

    def role_id(self, name: str | None) -> int:
        """The vocabulary index of a role (−1 for None); a model without role conditioning takes none."""
        if name is None:
            return -1
        if not self.cfg.role:
            raise UserError(f"role {name!r}: this model was trained without role conditioning")
        if name not in self.cfg.roles:
            raise UserError(f"unknown role {name!r}; this model knows: {', '.join(self.cfg.roles)}")
        return self.cfg.roles.index(name)

    def key_id(self, name: str | None) -> int:
        """The class of a key as written ("F#m", "Gb minor", "A"; −1 for None); a model without key
        conditioning takes none, and a name that is not a key is an error."""
        if name is None:
            return -1
        if not self.cfg.key:
            raise UserError(f"key {name!r}: this model was trained without key conditioning")
        index = key_index(name)
        if index < 0:
            raise UserError(f"unknown key {name!r}; write a tonic and an optional mode: Am, F#m, Gb minor, Eb")
        return index

    def _token(self, name: str, c: Conditions) -> tuple[Tensor, Tensor]:
        """(vector (B, dim), known (B,) bool) of one condition."""
        if name == "genre":
            known = (c.genre >= 0) & (c.genre < len(self.cfg.genres))
            return self.genre(c.genre.clamp(0, self.genre.num_embeddings - 1)), known
        if name == "role":
            role = c.role if c.role is not None else torch.full_like(c.genre, -1)
            known = (role >= 0) & (role < len(self.cfg.roles))
            return self.role(role.clamp(0, self.role.num_embeddings - 1)), known
        if name == "key":
            key = c.key if c.key is not None else torch.full_like(c.genre, -1)
            known = (key >= 0) & (key < len(KEYS))
            return self.key(key.clamp(0, len(KEYS) - 1)), known
        if name == "text":
            text, mask = self._text(c)
            count = mask.sum(1, keepdim=True)
            mean = (text * mask[..., None]).sum(1) / count.clamp_min(1)
            return self.text(mean), count[:, 0] > 0
        if name == "tempo":
            known = c.bpm > 0
            return self.tempo(fourier_features(torch.log2(c.bpm.clamp_min(1.0) / TEMPO_REFERENCE))), known
        known, has_bars = c.seconds > 0, c.bars > 0
        features = torch.cat(
            [
                fourier_features(torch.log2(c.seconds.clamp_min(1e-3) / SECONDS_REFERENCE)),
                fourier_features(torch.log2(c.bars.clamp_min(1.0))) * has_bars[:, None],
                has_bars[:, None].float(),
            ],
            dim=-1,
        )
        return self.length(features), known

    def _text(self, c: Conditions) -> tuple[Tensor, Tensor]:
        """The prompt's (embeddings, mask), all padding when there is none."""
        if c.text is not None and c.text_mask is not None:
            return c.text.float(), c.text_mask
        b, device = c.batch_size, c.genre.device
        return torch.zeros(b, TEXT_TOKENS, TEXT_DIM, device=device), torch.zeros(
            b, TEXT_TOKENS, dtype=torch.bool, device=device
        )

    def random_drop(self, batch_size: int, device: torch.device | str) -> Tensor:
        """(B, n) bool: which conditions training replaces by their null (global RNG, per-rank seeded)."""
        each = torch.rand(batch_size, len(self.names), device=device) < self.cfg.dropout
        every = torch.rand(batch_size, 1, device=device) < self.cfg.dropout_all
        return each | every

    def forward(self, c: Conditions, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(pooled (B, dim), tokens (B, n [+ TEXT_TOKENS], dim)). `drop` (B, n) bool nulls conditions on
        top of the unknown ones (the "text" column the whole prompt); all True is the unconditional model."""
        tokens = []
        for i, name in enumerate(self.names):
            vector, known = self._token(name, c)
            if drop is not None:
                known = known & ~drop[:, i]
            tokens.append(torch.where(known[:, None], vector, self.null[i].to(vector.dtype)))
        stacked = torch.stack(tokens, dim=1)
        if not self.cfg.text:
            return stacked.sum(dim=1), stacked
        text, mask = self._text(c)
        if drop is not None:
            mask = mask & ~drop[:, self.names.index("text"), None]
        words = self.text_tokens(text)
        words = torch.where(mask[..., None], words, self.text_pad.to(words.dtype))
        return stacked.sum(dim=1), torch.cat([stacked, words], dim=1)
