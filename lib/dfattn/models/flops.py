"""Parameter and FLOP counts of a model and of its components.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, the
convention of the LAA-Net reference measurements: 16.6 GFLOPs for the three-head B4 at 384 px).
Counting needs shapes only, so a model built under ``torch.device("meta")`` with a meta input
counts instantly and allocates nothing.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _components(model: nn.Module, depth: int) -> list[str]:
    """Dotted names of the submodules ``depth`` levels down, plus shallower leaves (so that the
    components cover the model)."""
    names = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level == depth or (0 < level < depth and not any(True for _ in module.children())):
            names.append(name)
    return names


@torch.no_grad()
def count_flops(
    model: nn.Module,
    inputs: torch.Tensor,
    forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
    depth: int = 1,
) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass, in total and per submodule.

    Args:
        model: the model (evaluated in its current train/eval mode).
        inputs: a batch; use batch size 1 for per-image FLOPs (a ``meta`` tensor works).
        forward: how to call the model (default ``model(inputs)``), e.g. to select heads.
        depth: which submodules to break down: 1 = the model's children (``"decoder"``), 2 = their
            children (``"decoder.stage1"``), ...

    Returns:
        ``(total, {dotted submodule name: flops})``; a submodule that did not run counts 0. The
        parts add up to the total unless a parent does counted work (a matmul) in its own forward.
    """
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        (forward or (lambda m, x: m(x)))(model, inputs)
    flops = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    prefix = type(model).__name__

    def of(name: str) -> int:
        key = f"{prefix}.{name}"
        if key in flops:
            return int(flops[key])
        # A container its parent iterates without calling (timm's feature ``blocks``): add up its
        # top-most descendants that ran.
        ran = [k for k in flops if k.startswith(key + ".")]
        return int(sum(flops[k] for k in ran if not any(k.startswith(r + ".") for r in ran)))

    return int(counter.get_total_flops()), {name: of(name) for name in _components(model, depth)}
