"""Attention Guided Data Augmentation (AGDA) of Multi-attentional Deepfake Detection (paper §3.4).

MAT's attention maps tend to lock onto the few most discriminative regions. AGDA (paper §3.4)
degrades exactly those regions in the training images, so that the detector has to find
evidence elsewhere as well:

1. for each image pick one of its ``M`` attention maps ``A_k``;
2. normalise it to ``A*`` in ``[0, 1]`` at image resolution;
3. degrade the image: down-scale by 0.3, Gaussian blur with sigma 7, up-scale back (``I_d``);
4. blend by the map, ``I' = I (1 - A*) + I_d A*``.

Everything is vectorised over the batch and draws its randomness from an optional
``torch.Generator``, so the same generator state gives the same augmented bytes. Images are in
``[0, 1]`` (the dataset convention; MAT normalises inside the model). Where ``A*`` is 0 the image
is returned bit for bit unchanged (``torch.lerp`` with weight 0).

The official code differs in small ways; :meth:`AGDAConfig.official` collects them: head choice
with probability proportional to ``sqrt(1 + mass)``, division by the max only, a random soft
threshold per batch, scale 0.5, an 11 x 11 kernel, and Gaussian noise after the blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AGDAConfig:
    """AGDA hyper-parameters; the defaults follow the paper (§3.4).

    Args:
        scale: down-scaling factor before the blur (paper 0.3; official code 0.5).
        sigma: Gaussian sigma in pixels of the *down-scaled* image (7 in both).
        kernel_size: odd kernel side; ``None`` takes ``2 ceil(3 sigma) + 1`` (the paper gives none;
            the official code uses 11, a truncated, nearly box-shaped kernel).
        noise_std: std of Gaussian noise added after the blur, in ``[0, 1]`` pixel units (paper: none;
            official: 0.1 in ``[-1, 1]`` units, i.e. 0.05 here).
        choice: ``"uniform"``: a random head per image (paper); ``"mass"``: probability proportional to
            ``sqrt(1 + sum A_k)`` (official).
        normalise: ``"minmax"``: ``(A - min) / (max - min)`` per image (paper, the usual reading of
            "normalise"; unconfirmed); ``"max"``: ``A / max`` (official).
        soft_threshold: ``((t_lo, t_hi), (z_lo, z_hi))`` to pass ``A*`` through a sigmoid step at ``t``
            with slope ``z``, both drawn once per batch (official: ``((0.4, 0.6), (3, 5))``), or
            ``None`` (paper).
        reference_size: with a size (e.g. 380, the input both the paper and the code blur at),
            ``sigma`` and ``kernel_size`` are given at that input side and scaled by
            ``H / reference_size`` for an ``H``-pixel input, so the degradation removes the same
            share of the face's detail at any input size; ``None``: fixed in pixels (as before).
    """

    scale: float = 0.3
    sigma: float = 7.0
    kernel_size: int | None = None
    noise_std: float = 0.0
    choice: Literal["uniform", "mass"] = "uniform"
    normalise: Literal["minmax", "max"] = "minmax"
    soft_threshold: tuple[tuple[float, float], tuple[float, float]] | None = None
    reference_size: int | None = None

    def __post_init__(self) -> None:
        if self.reference_size is not None and self.reference_size < 1:
            raise ValueError(f"AGDAConfig.reference_size must be positive, got {self.reference_size}")
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"AGDAConfig.scale must be in (0, 1], got {self.scale}")
        if self.sigma <= 0:
            raise ValueError(f"AGDAConfig.sigma must be positive, got {self.sigma}")
        if self.kernel_size is not None and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            raise ValueError(f"AGDAConfig.kernel_size must be odd and positive, got {self.kernel_size}")
        if self.choice not in ("uniform", "mass"):
            raise ValueError(f"AGDAConfig.choice must be 'uniform' or 'mass', got {self.choice!r}")
        if self.normalise not in ("minmax", "max"):
            raise ValueError(f"AGDAConfig.normalise must be 'minmax' or 'max', got {self.normalise!r}")

    @classmethod
    def official(cls, **overrides) -> "AGDAConfig":
        """The settings of the released code."""
        values = dict(scale=0.5, kernel_size=11, noise_std=0.05, choice="mass", normalise="max",
                      soft_threshold=((0.4, 0.6), (3.0, 5.0)))
        return cls(**{**values, **overrides})

    @property
    def kernel(self) -> int:
        return self.kernel_size or 2 * math.ceil(3 * self.sigma) + 1

    def blur_at(self, side: int) -> tuple[float, int]:
        """``(sigma, odd kernel side)`` of the blur for an input of ``side`` pixels."""
        if self.reference_size is None:
            return self.sigma, self.kernel
        k = side / self.reference_size
        sigma = self.sigma * k
        kernel = self.kernel_size and max(1, 2 * round(0.5 * (self.kernel_size * k - 1)) + 1)
        return sigma, kernel or 2 * math.ceil(3 * sigma) + 1


@dataclass
class AGDAResult:
    """The augmented batch and what made it."""

    image: Tensor  # (B, 3, H, W) in [0, 1]
    weight: Tensor  # (B, 1, H, W): A*, the blend weight of the degraded image
    head: Tensor  # (B,) long: the attention map used for each image


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def blur_batch(images: Tensor, sigma: float, kernel_size: int) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with edge replication (any kernel size works,
    also one larger than the image, which happens at 64 px after down-scaling)."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size)
    cols = kernel.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1)
    out = F.conv2d(F.pad(images, (half, half, 0, 0), mode="replicate"), rows, groups=c)
    return F.conv2d(F.pad(out, (0, 0, half, half), mode="replicate"), cols, groups=c)


def agda_degrade(images: Tensor, config: AGDAConfig, generator: torch.Generator | None = None) -> Tensor:
    """``I_d``: down-scale, blur (and, officially, add noise) at the low resolution, up-scale back."""
    size = images.shape[-2:]
    small = F.interpolate(images, scale_factor=config.scale, mode="bilinear", align_corners=False,
                          antialias=True)  # (B, 3, 0.3 H, 0.3 W)
    small = blur_batch(small, *config.blur_at(size[0]))
    if config.noise_std > 0:
        noise = torch.randn(small.shape, generator=generator, device=small.device, dtype=small.dtype)
        small = small + config.noise_std * noise
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def choose_heads(attention: Tensor, config: AGDAConfig, generator: torch.Generator | None = None
                 ) -> Tensor:
    """One head index per image, ``(B,)``: uniform (paper) or ``~ sqrt(1 + mass)`` (official)."""
    b, m = attention.shape[:2]
    if config.choice == "uniform":
        return torch.randint(m, (b,), generator=generator, device=attention.device)
    weights = (1.0 + attention.flatten(2).sum(-1).clamp_min(0)).sqrt()  # (B, M)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def normalise_maps(maps: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Up-sample ``(B, 1, h, w)`` maps to ``size`` and scale each to ``[0, 1]``."""
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)  # (B, 1, H, W)
    flat = maps.flatten(1)
    high = flat.amax(1).view(-1, 1, 1, 1)
    low = flat.amin(1).view(-1, 1, 1, 1) if mode == "minmax" else torch.zeros_like(high)
    return ((maps - low) / (high - low + 1e-8)).clamp_(0.0, 1.0)


def soft_threshold(weight: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """Official soft threshold: a sigmoid step at ``t`` with slope ``z``, rescaled so that 0 -> 0 and
    1 -> 1 (``t``, ``z`` broadcast against ``weight``)."""
    low, high = torch.sigmoid(z * (0.0 - t)), torch.sigmoid(z * (1.0 - t))  # the curve at 0 and 1
    return ((torch.sigmoid(z * (weight - t)) - low) / (high - low)).clamp_(0.0, 1.0)


@torch.no_grad()
def attention_guided_augmentation(
    images: Tensor,
    attention: Tensor,
    config: AGDAConfig = AGDAConfig(),
    generator: torch.Generator | None = None,
) -> AGDAResult:
    """AGDA of a batch (paper §3.4): ``I' = I (1 - A*) + I_d A*``.

    Args:
        images: ``(B, 3, H, W)`` in ``[0, 1]``.
        attention: ``(B, M, h, w)`` non-negative attention maps of the same images (any grid).
        config: hyper-parameters (:class:`AGDAConfig`).
        generator: the only source of randomness (head choice, noise, threshold).
    """
    if images.ndim != 4 or attention.ndim != 4 or images.shape[0] != attention.shape[0]:
        raise ValueError(f"AGDA needs images (B, C, H, W) and attention (B, M, h, w) with the same B; "
                         f"got {tuple(images.shape)} and {tuple(attention.shape)}")
    b = images.shape[0]
    head = choose_heads(attention, config, generator)  # (B,)
    chosen = attention[torch.arange(b, device=attention.device), head].unsqueeze(1)  # (B, 1, h, w)
    weight = normalise_maps(chosen.to(images.dtype), images.shape[-2:], config.normalise)
    if config.soft_threshold is not None:
        (t_lo, t_hi), (z_lo, z_hi) = config.soft_threshold
        t = _uniform(1, t_lo, t_hi, generator, images.device)
        z = _uniform(1, z_lo, z_hi, generator, images.device)
        weight = soft_threshold(weight, t, z)
    with torch.autocast(images.device.type, enabled=False):  # float32 under bf16 autocast too: on CPU a
        degraded = agda_degrade(images, config, generator)  # bf16 depthwise blur in channels_last crawls
    weight = weight.to(images.dtype)
    return AGDAResult(torch.lerp(images, degraded, weight), weight, head)
