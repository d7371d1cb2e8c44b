"""The distillation objective: a student that samples in a few steps without guidance.

The student starts as a copy of the teacher (same network, same conditioning) and learns the
guided teacher: every target is computed with classifier-free guidance at the teacher's scale,
so the student samples with cfg 1, one network pass per step instead of two.

Progressive distillation (Salimans & Ho), in one round: the student samples with Euler at a
fixed schedule of `steps` noise levels s_0 > … > s_{N−1} (the teacher's Karras schedule at
N steps) and then 0. A training example is a window noised to a level s_i (its forward-process
marginal); the guided teacher integrates the probability-flow ODE from there to s_{i+1} with
`teacher_substeps` Heun steps; the student's target is the denoised estimate whose one Euler
step lands where the teacher landed. (Consistency distillation was measured against it and
lost: BENCHMARKS.md, "Few-step".)

Conditions are dropped at random as in diffusion training, for student and teacher alike,
so unknown genre, tempo or length (vary and inpaint on a bare clip) are learnt too; every
`circular_every`-th batch is distilled in loop mode, as generate samples (SamplingConfig.loops).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from wavediff.config import DiffusionRecipe, DistillConfig, SamplingConfig
from wavediff.generation.samplers import Denoiser, run_sampler, sigmas_for
from wavediff.models.conditioning import Conditions
from wavediff.models.diffusion import LoopDiffusion
from wavediff.training.diffusion import batch_conditions, genre_examples
from wavediff.training.objective import Batch, ObjectiveBase

STUDENT_SAMPLER = "euler"  # one step of it is what the targets are solved for


def student_sampling(teacher: SamplingConfig, settings: DistillConfig) -> SamplingConfig:
    """The student's sampling settings: its step count, Euler, no guidance."""
    return dataclasses.replace(
        teacher,
        steps=settings.steps,
        sampler=STUDENT_SAMPLER,
        cfg_scale=1.0,
        distilled_steps=settings.steps,
    )


def dropped(cond: Conditions, drop: Tensor, names: list[str]) -> Conditions:
    """`cond` with the conditions `drop` (B, n) marks made unknown: what the model reads as its null."""
    genre, bpm, seconds, bars = cond.genre, cond.bpm, cond.seconds, cond.bars
    for i, name in enumerate(names):
        off = drop[:, i]
        if name == "genre":
            genre = torch.where(off, torch.full_like(genre, -1), genre)
        elif name == "tempo":
            bpm = torch.where(off, torch.zeros_like(bpm), bpm)
        else:
            seconds = torch.where(off, torch.zeros_like(seconds), seconds)
            bars = torch.where(off, torch.zeros_like(bars), bars)
    return Conditions(genre, bpm, seconds, bars, cond.start)


def substeps(high: Tensor, low: Tensor, n: int, rho: float) -> Tensor:
    """n + 1 levels from `high` down to `low`, evenly spaced in σ^(1/ρ) as a Karras schedule is;
    down to 0 it is the one step [high, 0] (a sampler's last step is a plain denoise)."""
    if float(low) == 0.0:
        return torch.stack([high, low])
    ramp = torch.linspace(0, 1, n + 1, device=high.device, dtype=torch.float64)
    a, b = high.double() ** (1 / rho), low.double() ** (1 / rho)
    return ((a + ramp * (b - a)) ** rho).to(high.dtype)


class DistillObjective(ObjectiveBase):
    """The Objective of `wavediff distill`; see the module docstring."""

    kind = "diffusion"
    exported = "denoiser"

    def __init__(
        self,
        recipe: DiffusionRecipe,
        teacher: LoopDiffusion,
        settings: DistillConfig,
        cfg_scale: float,
        checkpoint_extra: Mapping[str, Any],
    ) -> None:
        student = copy.deepcopy(teacher).train()
        student.recipe = recipe
        super().__init__(recipe, student)
        self.teacher = teacher.eval().requires_grad_(False)
        self.settings, self.cfg_scale, self.extra = settings, cfg_scale, dict(checkpoint_extra)
        self.member = recipe.data_kind
        self.levels = sigmas_for(teacher, dataclasses.replace(recipe.sampling, steps=settings.steps), "cpu")
        self.heun = dataclasses.replace(recipe.sampling, sampler="heun")

    def to(self, device: torch.device) -> None:
        """The frozen teacher lives outside the trained network."""
        self.teacher.to(device)

    def _teacher(self, x: Tensor, levels: Tensor, cond: Conditions, circular: bool) -> Tensor:
        """The guided teacher's ODE solution from x at levels[0] down to levels[-1] (Heun)."""
        denoiser = Denoiser(self.teacher, cond, self.cfg_scale, circular, tile=self.heun.loops == "tile")
        return run_sampler(denoiser, x, levels.to(x.device), self.heun, [0] * x.shape[0])

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = self.teacher.to_model(batch[self.member])
        cond = batch_conditions(batch)
        if self.teacher.conditioner is not None:
            names = self.teacher.conditioner.names
            cond = dropped(cond, self.teacher.conditioner.random_drop(x0.shape[0], x0.device), names)
        every = self.settings.circular_every
        circular = every > 0 and step % every == every - 1
        i = int(torch.randint(len(self.levels) - 1, ()))  # s_i → s_{i+1}; s_N = 0
        high, low = self.levels[i], self.levels[i + 1]
        x = x0 + torch.randn_like(x0) * high
        with torch.no_grad():
            levels = substeps(high, low, self.settings.teacher_substeps, self.heun.rho)
            landed = self._teacher(x, levels, cond, circular)
        target = x - (landed - x) * (high / (low - high))  # D whose Euler step from (x, high) lands at (landed, low)
        sigma = high.to(x0.device).expand(x0.shape[0])
        losses = nets["denoiser"](x, cond, batch["frames"], target=target, sigma=sigma, circular=circular)
        loss = losses.mean()
        return loss, {"distill/loss": loss.detach(), "distill/sigma": sigma[0].detach()}

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        return genre_examples(model, self.recipe, batch), {}

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), **self.extra}
