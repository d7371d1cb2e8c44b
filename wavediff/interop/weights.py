"""Reading another tool's weight files safely, and the renamings every converter shares."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from wavediff.errors import CheckpointError

PICKLED = (".ckpt", ".pt", ".pth", ".bin")

# torch.nn.utils.weight_norm's names → the parametrization wavediff's models use (both styles
# occur in published checkpoints: the first in older files, the second in newer ones).
WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or of a pickled checkpoint loaded with
    `weights_only=True` (never running code from the file); a Lightning `state_dict` is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
    if path.suffix not in PICKLED:
        raise CheckpointError(f"{path}: weights must be a .safetensors file or a {'/'.join(PICKLED)} checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: holds more than tensors, and is only loaded with weights_only=True ({first}); "
            "load it in the tool that wrote it and save its state_dict, or use a .safetensors file"
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: not a state dict (a {type(data).__name__})")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def under_prefix(
    state: Mapping[str, torch.Tensor], prefixes: Iterable[str], marker: str, where: str | os.PathLike, what: str
) -> tuple[str, dict[str, torch.Tensor]]:
    """(prefix, the tensors under it with the prefix removed) for the first prefix under which a
    key starts with `marker`: a whole model's checkpoint holds the part we want under a prefix."""
    prefixes = list(prefixes)
    for prefix in prefixes:
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k.startswith(marker) for k in found):
            return prefix, found
    sample = ", ".join(sorted(state)[:3]) or "none"
    tried = ", ".join(f"'{p}'" for p in prefixes)
    raise CheckpointError(f"{where}: no {what} weights under any of the prefixes {tried} (its first keys: {sample})")


def as_float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Half-precision releases become float32, which wavediff trains and encodes in."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
