"""k-diffusion's samplers and noise schedules by name, behind one call (run_sampler).

Every sampler sees the same Denoiser (conditioning and classifier-free guidance folded in),
and every stochastic one draws its noise per batch item from that item's seed, so a loop
depends only on its own seed and settings.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from wavediff.config import SamplingConfig
from wavediff.errors import UserError
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion

# Readable name → k-diffusion sampler function name.
SAMPLERS = {
    "euler": "sample_euler",
    "euler-ancestral": "sample_euler_ancestral",
    "heun": "sample_heun",
    "dpm2": "sample_dpm_2",
    "dpm2-ancestral": "sample_dpm_2_ancestral",
    "lms": "sample_lms",
    "dpmpp-2s-ancestral": "sample_dpmpp_2s_ancestral",
    "dpmpp-sde": "sample_dpmpp_sde",
    "dpmpp-2m": "sample_dpmpp_2m",
    "dpmpp-2m-sde": "sample_dpmpp_2m_sde",
    "dpmpp-3m-sde": "sample_dpmpp_3m_sde",
    "dpm-fast": "sample_dpm_fast",
    "dpm-adaptive": "sample_dpm_adaptive",
}
_BROWNIAN = {"dpmpp-sde", "dpmpp-2m-sde", "dpmpp-3m-sde"}  # draw correlated noise from a Brownian tree
_ANCESTRAL = {"euler-ancestral", "dpm2-ancestral", "dpmpp-2s-ancestral", "dpm-fast", "dpm-adaptive"}
_ADAPTIVE = {"dpm-fast", "dpm-adaptive"}  # take (σ_min, σ_max, steps), not a list of σ
SCHEDULES = ("karras", "exponential", "polyexponential")


def _k_sampling() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import k_diffusion.sampling
    return k_diffusion.sampling


def check_settings(settings: SamplingConfig, **numbers: float | None) -> None:
    """Refuse unknown names and impossible numbers before any work is done.

    `numbers` are the caller's other settings by name (bpm, strength, start, …; None: not
    given). A NaN or infinity in any of them, or in the sampling settings, would sample to
    non-finite audio, so every one must be finite.
    """
    if settings.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {settings.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if settings.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {settings.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if settings.steps < 1:
        raise UserError(f"steps must be at least 1, got {settings.steps}")
    scales = {"cfg scale": settings.cfg_scale, "prompt cfg scale": settings.prompt_cfg_scale}
    for name, value in {**scales, "rho": settings.rho, **numbers}.items():
        if value is not None and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value:g}")
    for name, value in scales.items():
        if value < 0:
            raise UserError(f"{name} must not be negative, got {value:g}")
    if settings.rho <= 0:
        raise UserError(f"rho must be positive, got {settings.rho:g}")


def sigmas_for(model: LoopDiffusion, settings: SamplingConfig, device: torch.device | str) -> Tensor:
    """The noise levels a run of `settings.steps` steps visits, high to low, ending at 0."""
    k = _k_sampling()
    lo, hi, n = model.recipe.diffusion.sigma_min, model.recipe.diffusion.sigma_max, settings.steps
    if settings.schedule == "karras":
        return k.get_sigmas_karras(n, lo, hi, settings.rho, device=device)
    if settings.schedule == "exponential":
        return k.get_sigmas_exponential(n, lo, hi, device=device)
    return k.get_sigmas_polyexponential(n, lo, hi, settings.rho, device=device)


def seeded_noise(shape: Sequence[int], seeds: Sequence[int], device: torch.device | str) -> Tensor:
    """(len(seeds), *shape) standard normal noise, item i from seeds[i], drawn on the CPU (device-independent)."""
    items = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(items).to(device)


class _ItemNoise:
    """A k-diffusion noise sampler drawing each item's noise from its own generator."""

    def __init__(self, x: Tensor, seeds: Sequence[int]) -> None:
        self.shape, self.device, self.dtype = x.shape[1:], x.device, x.dtype
        self.generators = [torch.Generator().manual_seed(s + 1_000_003) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        items = [torch.randn(tuple(self.shape), generator=g) for g in self.generators]
        return torch.stack(items).to(self.device, self.dtype)


@dataclass
class Denoiser:
    """D(x, σ) as a k-diffusion sampler sees it: conditions, guidance and the loop switch bound in.

    With cfg_scale ≠ 1 the conditional and unconditional passes run as one batch of 2B;
    `known` (x0, mask) clamps the denoised estimate to known frames (inpainting).

    With a prompt (or a negative prompt) each condition kind gets its own scale: three passes,
    u with nothing, s with the structured controls, f with those and the prompt, combine as
    u + cfg_scale·(s − u) + prompt_scale·(f − s). A negative prompt stands in for "no prompt"
    in u and s, so f − s points from it to the prompt. The samplers see one denoiser as ever.
    """

    model: LoopDiffusion
    cond: Conditions | None
    cfg_scale: float = 1.0
    circular: bool = False
    known: tuple[Tensor, Tensor] | None = None
    prompt_scale: float | None = None  # None: cfg_scale
    negative: tuple[Tensor, Tensor] | None = None  # a negative prompt's (embeddings, mask), models.text
    tile: bool = True  # how a loop is denoised (LoopDiffusion.denoise; SamplingConfig.loops)
    calls: int = field(default=0, init=False)

    def _by_kind(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Guidance of the structured controls and of the prompt, each at its scale (see the class docstring)."""
        cond, names = self.cond, self.model.conditioner.names
        prompt_scale = self.cfg_scale if self.prompt_scale is None else self.prompt_scale
        if self.cfg_scale == 1.0 and prompt_scale == 1.0:
            return self.model.denoise(x, sigma, cond, None, self.circular, self.tile)
        b, text = x.shape[0], names.index("text")
        without = cond
        if self.negative is not None:
            neg, mask = (t.expand(b, *t.shape[1:]) for t in self.negative)
            without = dataclasses.replace(cond, text=neg, text_mask=mask)
        drop = torch.zeros(3 * b, len(names), dtype=torch.bool, device=x.device)
        drop[:b] = True  # u: nothing…
        drop[: 2 * b, text] = self.negative is None  # u and s: no prompt (or the negative one)
        out = self.model.denoise(
            torch.cat([x, x, x]),
            sigma.repeat(3),
            Conditions.cat([without, without, cond]),
            drop,
            self.circular,
            self.tile,
        )
        u, s, f = out.chunk(3)
        return u + (s - u) * self.cfg_scale + (f - s) * prompt_scale

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        sigma = sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma
        conditioner = self.model.conditioner
        guided = conditioner is not None and self.cond is not None and self.cfg_scale != 1.0
        prompted = self.cond is not None and (self.cond.text is not None or self.negative is not None)
        if conditioner is not None and "text" in conditioner.names and prompted:
            denoised = self._by_kind(x, sigma)
        elif guided:
            b = x.shape[0]
            drop = torch.zeros(2 * b, len(self.model.conditioner.names), dtype=torch.bool, device=x.device)
            drop[b:] = True
            both = self.model.denoise(
                torch.cat([x, x]), torch.cat([sigma, sigma]), self.cond.repeat(2), drop, self.circular, self.tile
            )
            cond, uncond = both.chunk(2)
            denoised = uncond + (cond - uncond) * self.cfg_scale
        else:
            denoised = self.model.denoise(x, sigma, self.cond, None, self.circular, self.tile)
        if self.known is not None:
            x0, mask = self.known
            denoised = torch.where(mask, x0, denoised)
        return denoised


def run_sampler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    settings: SamplingConfig,
    seeds: Sequence[int],
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Integrate from x at sigmas[0] down the schedule with the named sampler."""
    k = _k_sampling()
    fn = getattr(k, SAMPLERS[settings.sampler])
    kwargs: dict[str, Any] = {"disable": not progress, "callback": callback}
    positive = sigmas[sigmas > 0]
    if settings.sampler in _BROWNIAN:  # bounds a hair wider than the schedule: float32 σ must fall inside
        lo, hi = float(positive.min()) * (1 - 1e-4), float(positive.max()) * (1 + 1e-4)
        kwargs["noise_sampler"] = k.BrownianTreeNoiseSampler(x, lo, hi, seed=list(seeds))
    elif settings.sampler in _ANCESTRAL:
        kwargs["noise_sampler"] = _ItemNoise(x, seeds)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seeds[0] if seeds else 0)  # samplers that draw unused noise stay deterministic
        if settings.sampler in _ADAPTIVE:
            lo, hi = float(positive.min()), float(positive.max())
            if settings.sampler == "dpm-fast":
                return fn(denoiser, x, lo, hi, max(1, len(positive)), **kwargs)
            return fn(denoiser, x, lo, hi, **kwargs)
        return fn(denoiser, x, sigmas, **kwargs)
