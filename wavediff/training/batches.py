"""Where a trainer's batches come from: the train split of a shard folder through the loader.

The engine only asks a BatchSource for an iterable of batches per (seed, rank, world size);
this module is the one that knows about shards, so the engine can train on anything.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence

from wavediff.config import DataConfig
from wavediff.shards.loader import Kind, make_loader
from wavediff.training.engine import BatchSource
from wavediff.training.objective import Batch
from wavediff.training.signals import STOP_SIGNALS


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader worker_init_fn: the training process, not its workers, reacts to SIGTERM/SIGUSR1."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def shard_batches(
    data: DataConfig, kind: Kind, sample_rate: int | None, genres: Sequence[str] | None = None
) -> BatchSource:
    """The BatchSource of every trainer: the train split of `data`'s shards, split by rank,
    reseeded when the engine asks, with loader workers that leave stop signals to the trainer."""

    def batches(seed: int, rank: int, world_size: int) -> Iterable[Batch]:
        loader = make_loader(
            data,
            "train",
            seed=seed,
            kind=kind,
            expect_sample_rate=sample_rate,
            genres=genres,
            rank=rank,
            world_size=world_size,
        )
        loader.worker_init_fn = ignore_stop_signals  # pre-emption must not kill the workers
        return loader

    return batches
