"""Parameter and FLOP counts of a model and of its components.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, the
convention of the LAA-Net reference measurements: 16.6 GFLOPs for the three-head B4 at 384 px).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(
    model: nn.Module,
    inputs: torch.Tensor,
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass, in total and per top-level child module.

    Args:
        model: the model (evaluated in its current train/eval mode).
        inputs: a batch; use batch size 1 for per-image FLOPs.
        forward: how to call the model (default ``model(inputs)``), e.g. to select heads.

    Returns:
        ``(total, {child name: flops})``.
    """
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        (forward or (lambda m, x: m(x)))(model, inputs)
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    children = {}
    for name, _ in model.named_children():
        key = f"{prefix}.{name}"
        children[name] = int(sum(per_module.get(key, {}).values()))
    return int(counter.get_total_flops()), children
