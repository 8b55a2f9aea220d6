"""Optimisation: SAM, the learning-rate schedules, and BatchNorm statistics held still.

- :class:`SAM`: Sharpness-Aware Minimisation (Foret et al., ICLR 2021) around any base optimiser;
  LAA-Net trains with it (rho = 0.05 over Adam, LAA-Net paper §4.1).
- :func:`lr_factor`: the per-step multiplier of the base rate for the three schedules
  (``warmup_linear``, ``step``, ``constant``).
- :func:`frozen_bn_statistics`: BatchNorm running statistics untouched in a block (SAM's second pass).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor, nn


class ScheduleConfig(Protocol):
    """The fields of :class:`~dfattn.train.TrainConfig` a schedule reads."""

    epochs: int
    schedule: str
    warmup_frac: float
    peak_factor: float
    step_epochs: int
    step_gamma: float


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation around a base optimiser (Foret et al. 2021, Algorithm 1).

    ``first_step`` moves every weight to ``w + rho * g / ||g||`` (the worst case in a ball of radius
    ``rho``, to first order); the caller recomputes the loss and gradient there; ``second_step``
    restores ``w`` and lets the base optimiser step with that gradient. The state dict is the base
    optimiser's (the perturbation lives only within a step).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05):
        if rho <= 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base, self.rho = base, rho
        self.param_groups = base.param_groups  # shared: the scheduler's lr reaches the base
        self.defaults = base.defaults
        self.state = base.state
        self._perturbation: dict[nn.Parameter, Tensor] = {}

    @torch.no_grad()
    def first_step(self) -> None:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (norm + 1e-12)
        for p in params:
            e = p.grad * scale
            p.add_(e)
            self._perturbation[p] = e
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self) -> None:
        for p, e in self._perturbation.items():
            p.sub_(e)
        self._perturbation.clear()
        self.base.step()

    def step(self, closure=None):  # pragma: no cover - the trainer calls first/second_step
        raise RuntimeError("SAM needs two gradients per step: call first_step, backward, second_step")

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)


def lr_factor(config: "ScheduleConfig", steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base rate at optimiser step ``t`` (for :class:`~torch.optim.lr_scheduler.LambdaLR`).

    ``warmup_linear`` (LAA-Net's ``LinearDecayLR``, per step instead of per epoch): from 1 to
    ``peak_factor`` over the first ``warmup_frac`` of the run, then linearly to 0 at the end;
    ``step``: ``step_gamma ** (epoch // step_epochs)``; ``constant``: 1.
    """
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "constant":
        return lambda t: 1.0
    if config.schedule == "step":
        return lambda t: config.step_gamma ** ((t // steps_per_epoch) // config.step_epochs)
    warm = int(config.warmup_frac * total)
    peak = config.peak_factor

    def factor(t: int) -> float:
        if t < warm:
            return 1.0 + (peak - 1.0) * t / warm
        return peak * max(0.0, (total - t) / max(1, total - warm))

    return factor


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics untouched inside the block (SAM's second pass sees the batch
    again at perturbed weights: its statistics should not count twice)."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


__all__ = ["SAM", "ScheduleConfig", "frozen_bn_statistics", "lr_factor"]
