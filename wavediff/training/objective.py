"""What a model plugs into the shared training engine.

The engine owns everything that is the same for every model: devices, precision,
accumulation, clipping, schedules, EMA, checkpoints, signals, logging. An objective owns
what differs: its networks, which optimizer a step updates, the loss, and what a
checkpoint must carry to rebuild the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from wavediff.config import OptimizerConfig, to_dict

Batch = Mapping[str, Any]


class Objective(Protocol):
    kind: str  # the checkpoint kind (a key of wavediff.models.factory.BUILDERS)
    exported: str  # the network whose EMA weights a checkpoint exports
    sample_rate: int  # of the audio that `examples` returns

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by name; the engine prepares them (device, DDP, autocast)."""
        ...

    def optimizers(self) -> dict[str, tuple[str, OptimizerConfig]]:
        """Optimizer name → (network it updates, its settings)."""
        ...

    def to(self, device: torch.device) -> None:
        """Move what is not trained (loss filters, metric buffers) to the training device."""
        ...

    def optimizer_for(self, step: int) -> str:
        """The one optimizer that step `step` updates (alternate them for adversarial training)."""
        ...

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss to minimise for `optimizer`, detached terms to log) for one micro-batch.

        Call networks through `nets` (the prepared ones), and their forward only: that is
        what distributed training and autocast wrap.
        """
        ...

    def batch_seconds(self, batch: Batch) -> float:
        """Seconds of audio a (CPU-side) batch holds: the throughput numerator."""
        ...

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        """({name: (channels, samples) audio}, {metric: value}) made by the EMA model from a batch."""
        ...

    def checkpoint_config(self) -> dict[str, Any]:
        """{"kind", "recipe", ...}: what config.json needs to rebuild the exported model."""
        ...


class ObjectiveBase:
    """What objectives share: one trained network (`model`, exported under `exported`) updated by
    the recipe's one optimizer, audio seconds from the batch's "seconds", and a checkpoint config
    of the kind and the whole recipe. An objective overrides what differs (the autoencoder adds
    its discriminator, the denoiser its autoencoder's id) and supplies `loss` and `examples`."""

    kind: str
    exported: str

    def __init__(self, recipe: Any, model: nn.Module) -> None:
        self.recipe = recipe  # a recipe dataclass: .sample_rate and .train.optimizer
        self.sample_rate: int = recipe.sample_rate
        self.model = model

    def networks(self) -> dict[str, nn.Module]:
        return {self.exported: self.model}

    def optimizers(self) -> dict[str, tuple[str, OptimizerConfig]]:
        return {self.exported: (self.exported, self.recipe.train.optimizer)}

    def to(self, device: torch.device) -> None:
        """Nothing outside the network."""

    def optimizer_for(self, step: int) -> str:
        return self.exported

    def batch_seconds(self, batch: Batch) -> float:
        return float(batch["seconds"].sum())

    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "recipe": to_dict(self.recipe)}
