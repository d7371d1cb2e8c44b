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

from wavediff.config import OptimizerConfig

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
