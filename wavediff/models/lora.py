"""Low-rank adapters (LoRA, Hu et al. 2021) for the denoiser's attention and convolution weights.

An adapter adds ΔW = (α/r)·B·A to a weight W of shape (out, in[, kernel]): A (r, in·kernel)
starts random and B (out, r) at zero, so a fresh adapter changes nothing. A few small
tensors (the genre table, which grows when a pack brings a new genre) are adapted at full
rank instead: their ΔW is a zero-initialised tensor of the weight's shape.

Adapters live beside the model they adapt, not inside it: `LoraModel` calls the frozen base
with W + ΔW through `torch.func.functional_call`, so the module that trains, is averaged
(EMA) and is checkpointed holds the adapter tensors alone, and the shared engine needs no
special case. Applying an adapter at scale s is the same arithmetic as merging it
(`merge_adapters`), so loops made with `--lora` and with a merged checkpoint are the same.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wavediff.errors import UserError

# U-Net weights that get low-rank adapters: every convolution (3-D weights; attention's
# projections are 1×1 convs) and the attention's linear projections (cross-attention keys).
ATTENTION = re.compile(r"\.(attn|cross)\.")
# Weights adapted at full rank (small, and the genre table may have grown).
FULL_TARGETS = re.compile(r"^conditioner\.genre\.weight$")


def _key(name: str) -> str:
    return name.replace(".", "/")  # parameter names may not hold dots


def lora_shapes(model: nn.Module) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """({weight name: shape} of the low-rank targets, {name: shape} of the full-rank ones) in `model`."""
    low, full = {}, {}
    for name, param in model.named_parameters():
        if (
            name.startswith("unet.")
            and name.endswith(".weight")
            and (param.dim() == 3 or (param.dim() == 2 and ATTENTION.search(name)))
        ):
            low[name] = list(param.shape)
        elif FULL_TARGETS.match(name):
            full[name] = list(param.shape)
    return low, full


class LoraAdapters(nn.Module):
    """The trained tensors of a LoRA run; `deltas(scale)` gives each adapted weight's ΔW."""

    def __init__(
        self, low: Mapping[str, Sequence[int]], full: Mapping[str, Sequence[int]], rank: int, alpha: float
    ) -> None:
        super().__init__()
        if rank < 1:
            raise UserError(f"LoRA rank must be at least 1, got {rank}")
        if not low:
            raise UserError("LoRA: the model has no attention or convolution weights to adapt")
        self.rank, self.alpha = rank, alpha
        self.shapes = {name: list(shape) for name, shape in {**low, **full}.items()}
        self.down = nn.ParameterDict()  # A: (r, in·kernel)
        self.up = nn.ParameterDict()  # B: (out, r), zero
        for name, shape in low.items():
            fan_in = math.prod(shape[1:])
            a = torch.empty(rank, fan_in)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear initialises its weight
            self.down[_key(name)] = nn.Parameter(a)
            self.up[_key(name)] = nn.Parameter(torch.zeros(shape[0], rank))
        self.full = nn.ParameterDict({_key(name): nn.Parameter(torch.zeros(shape)) for name, shape in full.items()})

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def config(self) -> dict[str, Any]:
        """What rebuilds this module (a LoRA checkpoint's config.json carries it)."""
        low = {n: s for n, s in self.shapes.items() if _key(n) in self.down}
        full = {n: s for n, s in self.shapes.items() if _key(n) in self.full}
        return {"rank": self.rank, "alpha": self.alpha, "low_rank": low, "full_rank": full}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoraAdapters:
        return cls(config["low_rank"], config["full_rank"], int(config["rank"]), float(config["alpha"]))

    def deltas(self, scale: float = 1.0) -> dict[str, Tensor]:
        """{weight name: ΔW · scale}."""
        out = {}
        for name, shape in self.shapes.items():
            key = _key(name)
            if key in self.full:
                out[name] = self.full[key] * scale
            else:
                out[name] = (self.up[key] @ self.down[key]).view(shape) * (self.scaling * scale)
        return out


def check_fits(adapters: LoraAdapters, model: nn.Module, where: str) -> None:
    """Raise one error naming the adapted weights the model lacks or has in another shape."""
    params = dict(model.named_parameters())
    problems = [
        f"{name} (adapter {tuple(shape)}, model {tuple(params[name].shape) if name in params else 'missing'})"
        for name, shape in adapters.shapes.items()
        if name not in params or list(params[name].shape) != list(shape)
    ]
    if problems:
        shown = ", ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise UserError(f"{where}: the adapter does not fit the base model: {shown}")


@torch.no_grad()
def merge_adapters(model: nn.Module, adapters: LoraAdapters, scale: float = 1.0) -> nn.Module:
    """Add the adapters' ΔW · scale into `model`'s weights, in place; returns the model."""
    check_fits(adapters, model, "merge")
    params = dict(model.named_parameters())
    for name, delta in adapters.deltas(scale).items():
        params[name].add_(delta.to(params[name].dtype))
    return model


class LoraModel(nn.Module):
    """The base model with adapters applied on the fly; only the adapters are parameters (see module docstring).

    The base is held outside the module tree: it is frozen, moved by its owner, and shared
    (not copied) when the engine deep-copies this module for the EMA.
    """

    def __init__(self, base: nn.Module, adapters: LoraAdapters) -> None:
        super().__init__()
        check_fits(adapters, base, "LoRA")
        self.adapters = adapters
        self._base = (base.requires_grad_(False),)

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        params = dict(self.base.named_parameters())
        weights = {name: params[name] + delta.to(params[name].dtype) for name, delta in self.adapters.deltas().items()}
        return functional_call(self.base, weights, args, kwargs, strict=False)

    def merged(self, scale: float = 1.0) -> nn.Module:
        """A copy of the base with the adapters baked in."""
        return merge_adapters(copy.deepcopy(self.base), self.adapters, scale)

    def __deepcopy__(self, memo: dict[int, Any]) -> LoraModel:
        memo[id(self._base)] = self._base
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new
