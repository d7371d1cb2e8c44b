"""The distillation objective: a student that samples in a few steps without guidance.

The student starts as a copy of the teacher (same network, same conditioning) and learns the
guided teacher: every target is computed with classifier-free guidance at the teacher's scale,
so the student samples with cfg 1, one network pass per step instead of two.

The student samples with a fixed schedule of `steps` noise levels s_0 > … > s_{N−1} (the
teacher's Karras schedule at N steps) and then 0.

- "progressive" (Salimans & Ho's progressive distillation, in one round): a training
  example is a window noised to a student level s_i (its forward-process marginal); the
  guided teacher integrates the probability-flow ODE from there to s_{i+1} with
  `teacher_substeps` Heun steps; the student's target is the denoised estimate that makes
  one Euler step land where the teacher landed. The student then samples with "euler".
- "consistency" (Song et al.'s consistency distillation): the student maps a point at any
  level of the teacher's fine grid (the student levels, each interval cut in
  `teacher_substeps`) to the same clean estimate as an EMA copy of itself maps the point one
  guided-teacher Heun step further down. It samples with "consistency": denoise, re-noise to
  the next level, denoise.

Conditions are dropped at random as in diffusion training, for student and teacher alike,
so unknown genre, tempo or length (vary and inpaint on a bare clip) are learnt too; every
`circular_every`-th batch is distilled in loop mode (the U-Net wraps), as generate samples.
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

STUDENT_SAMPLERS = {"progressive": "euler", "consistency": "consistency"}
CONSISTENCY_EMA = 0.95  # decay of the consistency target's weights, per micro-batch


def student_sampling(teacher: SamplingConfig, settings: DistillConfig) -> SamplingConfig:
    """The student's sampling settings: its step count and sampler, no guidance."""
    return dataclasses.replace(
        teacher,
        steps=settings.steps,
        sampler=STUDENT_SAMPLERS[settings.method],
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
        grid = sigmas_for(teacher, dataclasses.replace(recipe.sampling, steps=settings.steps), "cpu")
        self.levels = grid  # s_0 … s_{N−1}, 0
        cut = settings.teacher_substeps
        fine = [substeps(grid[i], grid[i + 1], cut, recipe.sampling.rho) for i in range(len(grid) - 2)]
        self.fine = torch.cat([f[:-1] for f in fine] + [grid[-2:-1]])  # positive levels, high to low
        self.target = copy.deepcopy(student).eval().requires_grad_(False) if settings.method == "consistency" else None
        self.heun = dataclasses.replace(recipe.sampling, sampler="heun")

    def networks(self) -> dict[str, nn.Module]:
        """The student, and the consistency target: a network of the run (never optimized), so its
        weights are in every checkpoint's training state and a resumed run goes on with them."""
        return {**super().networks(), **({"consistency_target": self.target} if self.target is not None else {})}

    def to(self, device: torch.device) -> None:
        """The frozen teacher lives outside the trained networks."""
        self.teacher.to(device)

    def _teacher(self, x: Tensor, levels: Tensor, cond: Conditions, circular: bool) -> Tensor:
        """The guided teacher's ODE solution from x at levels[0] down to levels[-1] (Heun)."""
        denoiser = Denoiser(self.teacher, cond, self.cfg_scale, circular)
        return run_sampler(denoiser, x, levels.to(x.device), self.heun, [0] * x.shape[0])

    def loss(
        self, optimizer: str, nets: Mapping[str, nn.Module], batch: Batch, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        student = nets["denoiser"]
        x0 = self.teacher.to_model(batch[self.member])
        cond = batch_conditions(batch)
        if self.teacher.conditioner is not None:
            names = self.teacher.conditioner.names
            cond = dropped(cond, self.teacher.conditioner.random_drop(x0.shape[0], x0.device), names)
        every = self.settings.circular_every
        circular = every > 0 and step % every == every - 1
        noise = torch.randn_like(x0)
        if self.target is None:
            i = int(torch.randint(len(self.levels) - 1, ()))
            high, low = self.levels[i], self.levels[i + 1]
            x = x0 + noise * high
            with torch.no_grad():
                levels = substeps(high, low, self.settings.teacher_substeps, self.heun.rho)
                landed = self._teacher(x, levels, cond, circular)
            # the denoised estimate whose Euler step from (x, high) lands at (landed, low)
            target = x - (landed - x) * (high / (low - high))
        else:
            target_net = nets["consistency_target"]
            self._follow(target_net, student)
            n = int(torch.randint(len(self.fine) - 1, ()))
            high, low = self.fine[n], self.fine[n + 1]
            x = x0 + noise * high
            with torch.no_grad():
                landed = self._teacher(x, torch.stack([high, low]), cond, circular)
                sigma_low = low.to(x0.device).expand(x0.shape[0])
                target = target_net.denoise(landed, sigma_low, cond, None, circular)
        sigma = high.to(x0.device).expand(x0.shape[0])
        losses = student(x, cond, batch["frames"], target=target, sigma=sigma, circular=circular)
        loss = losses.mean()
        return loss, {"distill/loss": loss.detach(), "distill/sigma": sigma[0].detach()}

    @staticmethod
    @torch.no_grad()
    def _follow(target: nn.Module, student: nn.Module) -> None:
        """Move the consistency target's weights a step towards the student's (an EMA)."""
        for mine, theirs in zip(target.parameters(), student.parameters()):
            mine.lerp_(theirs.detach(), 1 - CONSISTENCY_EMA)

    def examples(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], dict[str, float]]:
        return genre_examples(model, self.recipe, batch), {}

    def checkpoint_config(self) -> dict[str, Any]:
        return {**super().checkpoint_config(), **self.extra}
