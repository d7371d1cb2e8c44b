"""The one exception type for the user's mistakes.

A UserError is something the user can fix: a file that is missing, broken or of the wrong
kind, a setting out of range, a checkpoint that does not fit. Its message names the file or
the setting and the problem, and the command line prints it as one line. Every other
exception is a bug (or the machine's trouble) and keeps its traceback.

The specific kinds below are UserErrors too; they exist where a caller acts on one kind (the
sharder skips an AudioError and goes on). UserError is a ValueError, so code written against
the ValueErrors these used to be still catches them.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """A mistake in what the user gave: the message names the file or setting and the problem."""


class ConfigError(UserError):
    """A recipe or override that does not fit the config; the message names the key."""


class AudioError(UserError):
    """A file that cannot be used as audio; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, or does not fit its model; the message names it."""


class DataError(UserError):
    """Data that cannot be trained on as configured (missing shards, wrong sample rate,
    latents of another autoencoder): stops the run, since skipping would hide it."""


class MetadataError(UserError):
    """A metadata file (sidecar, metadata.csv/jsonl) that cannot be read; the message names it."""
