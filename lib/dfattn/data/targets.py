"""LAA-Net's training targets from a blending mask (LAA-Net paper §3.2: blending boundary, heatmap, self-consistency).

All three live at the heatmap resolution (a quarter of the input in LAA-Net: 96 for 384):

- **Blending boundary** (Face X-ray, Li et al., CVPR 2020): ``B = 4 M (1 - M)``, 1 where the
  mask is 0.5 (mid-transition), 0 in pure source or pure target (:func:`blending_boundary`).
- **Heatmap** of "vulnerable points": in each quadrant of B, every pixel equal to the quadrant's
  maximum (ties kept) gets a 2-D Gaussian of peak exactly 1, merged by maximum. Its sigma adapts
  to the band: the run lengths of ``B > 0.5 B(point)`` through the point, vertically and
  horizontally, are a "box" whose CenterNet radius (min overlap 0.7) over 3 is sigma
  (:func:`vulnerable_points`, :func:`gaussian_radius`, :func:`heatmap_target`).
- **Self-consistency**: in each quadrant holding a vulnerable point
  ``C = 1 - |max(B) - B|`` (about B itself, exactly 1 at the points); other quadrants 0
  (:func:`consistency_target`).

Real images (no mask, or an all-zero one) get all-zero targets, as in LAA-Net's code.

**Which mask.** SBI blends with ``r M`` (``r`` in {0.25, 0.5, 0.75, 1, 1, 1}). B of ``r M`` is a
ring only for ``r = 1``: for ``r <= 0.5``, ``r M`` never reaches 0.5 and B becomes a filled blob.
LAA-Net's released code does not use ``r M``: its blending step returns the *unscaled* soft mask
``M`` for the targets, so its boundary is the full-strength ring ``4 M (1 - M)`` whatever the
ratio. :func:`laanet_targets` computes B of the mask it is given; with ``ratio=r`` (the default
variant) it treats the mask as the unscaled ``M`` and returns ``r * 4 M (1 - M)``: the same ring,
fainter for partial blends; the consistency target is then computed on the unscaled ring (its
value does not depend on ``r``, and it is 0 away from the boundary for every ratio). Pass
``BlendResult.mask_unscaled`` and ``BlendResult.ratio``; ``BlendResult.mask_unscaled`` without a
ratio gives the code's full-strength ring, ``BlendResult.mask`` the blob (neither paper nor code).

**Variants** (``variant=``, :data:`TARGET_VARIANTS`):

- ``"paper"`` (default): the formulas of LAA-Net's paper (§3.2) evaluated in float at heatmap
  resolution: M area-averaged to the heatmap size, B in float (ties rare, so about one vulnerable
  point per quadrant), the ring scaled by ``r`` (our choice), the relative run threshold below;
- ``"official"``: the targets of LAA-Net's released code: B of the unscaled M at *image*
  resolution, stored as uint8 (``255 B`` truncated), resized bilinearly (on the uint8 levels) to
  the heatmap size; vulnerable points are every pixel at its quadrant's maximum uint8 level (many
  ties); runs through a point are ``B > 128`` (of 255); no ratio scaling; C on the uint8 levels
  (:func:`official_boundary`). The focal heatmap loss divides by the number of points, so this
  variant weighs the heatmap term less against the classifier. Measured on SBI training pairs
  (``benchmarks/targets_positives.py``): about 4 points per fake with ``"paper"``; with
  ``"official"`` about 9 on 32-px heatmaps (160-px faces), 30 on 96-px heatmaps from 256-px
  faces (about the crop size at which LAA-Net's code blends) and 47 from 384-px faces: the finer
  the blending resolution, the more pixels share the peak level.

Further paper-vs-code choices of the ``"paper"`` variant (defaults first):

- vulnerable points on float B or, ``quantize=True``, on the heatmap-resolution B truncated to
  uint8 levels (more ties at the peak; the ``"official"`` variant quantises at image resolution
  before resizing instead, as the code does);
- ``radius="centernet"``: the radius formula of the CenterNet/CornerNet code that LAA-Net calls
  (sigma 0.4-1.1 px on 96-px maps); ``radius="exact"``: the smallest corner offset that keeps
  IoU >= min_overlap, which the code's formula means to compute (about 3x smaller);
- the run threshold is relative, ``B > 0.5 B(point)`` (the code's ``B > 128/255`` for peak-1
  boundaries), so that a boundary scaled by ``r`` gets the same sigmas;
- Gaussians are cut at ``3 sigma`` from their centre (a disc; CenterNet cuts a square), in both
  variants.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import cv2
import numpy as np

__all__ = [
    "LAANetTargets",
    "TARGET_VARIANTS",
    "blending_boundary",
    "check_targets_variant",
    "consistency_target",
    "draw_gaussians",
    "gaussian_radius",
    "heatmap_target",
    "laanet_targets",
    "official_boundary",
    "run_lengths",
    "vulnerable_points",
]

Grid = tuple[int, int]
RadiusVariant = Literal["centernet", "exact"]
TargetsVariant = Literal["paper", "official"]
TARGET_VARIANTS: tuple[str, ...] = ("paper", "official")
OFFICIAL_RUN_LEVEL = 128  # LAA-Net's released code: runs through a point are B > 128 (uint8)


class LAANetTargets(NamedTuple):
    """LAA-Net's targets at heatmap resolution, each ``(h, w)`` float32 in [0, 1]."""

    heatmap: np.ndarray
    consistency: np.ndarray
    boundary: np.ndarray


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    if h < 1 or w < 1:
        raise ValueError(f"heatmap size must be positive, got {size}")
    return int(h), int(w)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (keeps a thin band's mass), bilinear otherwise."""
    h, w = size
    if image.shape == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, np.float32)
    if m.ndim != 2:
        raise ValueError(f"blending mask must be (H, W), got shape {m.shape}")
    if m.size and (m.min() < -1e-6 or m.max() > 1 + 1e-6):
        raise ValueError(f"blending mask must lie in [0, 1], got [{m.min():.3g}, {m.max():.3g}]")
    return m


def blending_boundary(
    mask: np.ndarray, ratio: float | None = None, size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Face X-ray's boundary ``B = 4 M (1 - M)`` (times ``ratio`` if given; see module docstring).

    Args:
        mask: ``(H, W)`` soft mask in [0, 1].
        ratio: treat ``mask`` as the unscaled SBI mask and scale the ring by the blend ratio.
        size: compute at this resolution (the mask is resized first, area-averaged).

    Returns:
        ``(h, w)`` float32 in [0, 1].
    """
    m = _check_mask(mask)
    if size is not None:
        m = _resize(m, _size(size))
    boundary = 4.0 * m * (1.0 - m)
    if ratio is not None:
        boundary *= float(ratio)
    return np.clip(boundary, 0.0, 1.0, out=boundary)


def official_boundary(mask: np.ndarray, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """B as LAA-Net's released code makes its targets from it: uint8 levels at heatmap resolution.

    ``B = 4 M (1 - M)`` of the unscaled soft mask at the mask's own (image) resolution, stored as
    uint8 (``255 B``, truncated), then resized bilinearly on those uint8 levels to ``size``
    (the code warps it with the image's affine; for an axis-aligned crop this is a resize).

    Args:
        mask: ``(H, W)`` soft mask in [0, 1] (``BlendResult.mask_unscaled``; no ratio).
        size: ``h`` or ``(h, w)``; ``None`` keeps the mask's resolution.

    Returns:
        ``(h, w)`` uint8, 0-255.
    """
    m = _check_mask(mask)
    b = np.clip(4.0 * m * (1.0 - m) * 255.0, 0.0, 255.0).astype(np.uint8)  # truncation
    if size is not None:
        h, w = _size(size)
        if b.shape != (h, w):
            b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    return b


def gaussian_radius(
    height: float | np.ndarray,
    width: float | np.ndarray,
    min_overlap: float = 0.7,
    variant: RadiusVariant = "centernet",
) -> np.ndarray:
    """CornerNet/CenterNet Gaussian radius for a ``height x width`` box (vectorised).

    The radius is meant as the largest corner offset for which a box keeps IoU >= ``min_overlap``
    with the original, the minimum over three cases: the box shifted, shrunk, or grown by ``r``.
    Each case is a quadratic ``a r^2 + b r + c = 0``:

    1. shifted: ``r^2 - (h + w) r + h w (1 - o) / (1 + o) = 0``;
    2. shrunk:  ``4 r^2 - 2 (h + w) r + (1 - o) h w = 0``;
    3. grown:   ``4 o r^2 + 2 o (h + w) r + (o - 1) h w = 0``.

    ``variant="exact"`` returns the smallest positive roots. ``variant="centernet"`` reproduces
    the formula of the CornerNet/CenterNet code (used by LAA-Net): roots ``(b + sqrt(disc)) / 2``
    without the ``/ a`` and with case 3's linear term negated, which overestimates the radius.

    Returns:
        float64 array of the broadcast shape of ``height`` and ``width``.
    """
    h, w, o = np.asarray(height, np.float64), np.asarray(width, np.float64), float(min_overlap)
    s, p = h + w, h * w
    c1 = p * (1 - o) / (1 + o)
    disc1 = np.sqrt(np.maximum(s**2 - 4 * c1, 0))
    disc2 = np.sqrt(np.maximum(4 * s**2 - 16 * (1 - o) * p, 0))
    disc3 = np.sqrt(4 * o**2 * s**2 + 16 * o * (1 - o) * p)
    if variant == "centernet":
        r1, r2, r3 = (s + disc1) / 2, (2 * s + disc2) / 2, (disc3 - 2 * o * s) / 2
    elif variant == "exact":
        r1, r2, r3 = (s - disc1) / 2, (2 * s - disc2) / 8, (disc3 - 2 * o * s) / (8 * o)
    else:
        raise ValueError(f"unknown gaussian_radius variant {variant!r}; use 'centernet' or 'exact'")
    return np.minimum(np.minimum(r1, r2), r3)


def _quantise(boundary: np.ndarray) -> np.ndarray:
    """B truncated to uint8 levels, as LAA-Net's code stores it: ``uint8(255 B) / 255``."""
    return (boundary * 255.0).astype(np.uint8).astype(np.float32) / 255.0


def _edges(n: int, parts: int) -> np.ndarray:
    return (np.arange(parts + 1) * n) // parts


def vulnerable_points(boundary: np.ndarray, grid: Grid = (2, 2), quantize: bool = False
                      ) -> np.ndarray:
    """Every pixel equal to its cell's maximum of B, per cell of a ``grid`` (rows, cols) split.

    Cells whose maximum is 0 contribute nothing. With ``quantize``, B is first truncated to
    uint8 levels (as LAA-Net's code stores B), which makes ties at the peak common. B may also
    be given as uint8 levels (``dtype`` uint8, the ``"official"`` variant).

    Returns:
        ``(P, 2)`` int64 ``(x, y)`` pixel positions, cell by cell in raster order.
    """
    b = _quantise(boundary) if quantize else np.asarray(boundary, np.float32)
    ye, xe = _edges(b.shape[0], grid[0]), _edges(b.shape[1], grid[1])
    found = []
    for r in range(grid[0]):
        for c in range(grid[1]):
            cell = b[ye[r] : ye[r + 1], xe[c] : xe[c + 1]]
            peak = cell.max(initial=0.0)
            if peak > 0:
                ys, xs = np.nonzero(cell == peak)
                found.append(np.stack([xs + xe[c], ys + ye[r]], 1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), np.int64)


def _run_through(line: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Length of the run of True in each row of ``line`` ``(P, n)`` that contains column ``at[p]``
    (that column counted as True)."""
    n = line.shape[1]
    line[np.arange(len(at)), at] = True
    idx = np.arange(n)
    left = np.where(~line & (idx < at[:, None]), idx, -1).max(1)
    right = np.where(~line & (idx > at[:, None]), idx, n).min(1)
    return right - left - 1


def run_lengths(boundary: np.ndarray, points: np.ndarray, threshold: float = 0.5,
                level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vertical and horizontal run lengths of ``B > threshold * B(point)`` through each point.

    Args:
        level: an absolute level instead, the same for every point: runs of ``B > level``
            (LAA-Net's code: ``B > 128`` on uint8 levels).

    Returns:
        ``(heights, widths)``, each ``(P,)`` int64 >= 1 (the point itself always counts).
    """
    xs, ys = points[:, 0], points[:, 1]
    if level is None:
        level = threshold * boundary[ys, xs]  # (P,)
    else:
        level = np.full(len(points), float(level))
    rows = boundary[ys] > level[:, None]  # (P, W)
    cols = boundary[:, xs].T > level[:, None]  # (P, H)
    return _run_through(cols, ys), _run_through(rows, xs)


def _gaussians_windowed(shape: tuple[int, int], points: np.ndarray, sigmas: np.ndarray
                        ) -> np.ndarray:
    """All Gaussians at once on ``(2R + 1)^2`` windows, scattered into the map with a max."""
    h, w = shape
    r = int(np.ceil(3 * sigmas.max()))
    off = np.arange(-r, r + 1)
    d2 = (off[:, None] ** 2 + off[None, :] ** 2).astype(np.float32)  # (K, K)
    s2 = (sigmas.astype(np.float32) ** 2)[:, None, None]  # (P, 1, 1)
    gauss = np.exp(d2 * (-0.5 / s2))  # (P, K, K)
    ys = points[:, 1, None, None] + off[None, :, None]  # (P, K, 1)
    xs = points[:, 0, None, None] + off[None, None, :]  # (P, 1, K)
    keep = (d2 <= 9 * s2) & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)  # (P, K, K)
    heat = np.zeros(h * w, np.float32)
    np.maximum.at(heat, (ys * w + xs)[keep], gauss[keep])
    return heat.reshape(h, w)


def _gaussians_by_distance(shape: tuple[int, int], points: np.ndarray, sigmas: np.ndarray
                           ) -> np.ndarray:
    """One distance transform per distinct sigma: the max over same-sigma Gaussians is
    ``exp(-D^2 / 2 sigma^2)`` with ``D`` the distance to the nearest of their centres."""
    heat = np.zeros(shape, np.float32)
    for sigma in np.unique(sigmas):
        seeds = np.full(shape, 255, np.uint8)
        chosen = points[sigmas == sigma]
        seeds[chosen[:, 1], chosen[:, 0]] = 0
        dist = cv2.distanceTransform(seeds, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        gauss = np.exp(dist * dist * np.float32(-0.5 / sigma**2))
        gauss[dist > 3 * sigma] = 0.0
        np.maximum(heat, gauss, out=heat)
    return heat


def draw_gaussians(shape: tuple[int, int], points: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Max-merged Gaussians ``exp(-d^2 / 2 sigma^2)``, peak exactly 1, zero beyond ``3 sigma``.

    Few points: every Gaussian on its own window, in one vectorised pass. Many points (ties on a
    plateau of B, e.g. the blob of a ratio-scaled mask): one exact Euclidean distance transform
    per distinct sigma, whatever the number of points. Both give the same map.

    Args:
        shape: ``(h, w)`` of the map.
        points: ``(P, 2)`` int ``(x, y)`` centres inside the map.
        sigmas: ``(P,)`` positive.
    """
    if len(points) == 0:
        return np.zeros(shape, np.float32)
    window = 2 * int(np.ceil(3 * sigmas.max())) + 1
    if len(points) * window**2 <= shape[0] * shape[1]:
        return _gaussians_windowed(shape, points, sigmas)
    return _gaussians_by_distance(shape, points, sigmas)


def heatmap_target(
    boundary: np.ndarray,
    heatmap_size: int | tuple[int, int] | None = None,
    grid: Grid = (2, 2),
    quantize: bool = False,
    min_overlap: float = 0.7,
    radius: RadiusVariant = "centernet",
    points: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussians on the vulnerable points with adaptive sigma = radius / 3 (LAA-Net paper §3.2, after CenterNet).

    Args:
        boundary: ``(H, W)`` B, resized (area-averaged) to ``heatmap_size`` if that is given.
        points: the vulnerable points if already found (else :func:`vulnerable_points`).

    Returns:
        ``(h, w)`` float32 in [0, 1], exactly 1 at every vulnerable point; zeros if B is all 0.
    """
    b = np.asarray(boundary, np.float32)
    if heatmap_size is not None:
        b = _resize(b, _size(heatmap_size))
    if points is None:
        points = vulnerable_points(b, grid, quantize)
    if len(points) == 0:
        return np.zeros(b.shape, np.float32)
    heights, widths = run_lengths(_quantise(b) if quantize else b, points)
    sigmas = gaussian_radius(heights, widths, min_overlap, radius) / 3.0
    return draw_gaussians(b.shape, points, np.maximum(sigmas, 1e-3))


def consistency_target(
    boundary: np.ndarray,
    points: np.ndarray | None = None,
    grid: Grid = (2, 2),
    quantize: bool = False,
) -> np.ndarray:
    """``C = 1 - |max(B) - B|`` in the cells holding a vulnerable point, 0 elsewhere (§2.4).

    Returns:
        ``(H, W)`` float32 in [0, 1]; all zeros when B is all zero (real images).
    """
    b = _quantise(boundary) if quantize else np.asarray(boundary, np.float32)
    if points is None:
        points = vulnerable_points(b, grid)
    if len(points) == 0:
        return np.zeros(b.shape, np.float32)
    ye, xe = _edges(b.shape[0], grid[0]), _edges(b.shape[1], grid[1])
    cell_row = np.searchsorted(ye, np.arange(b.shape[0]), side="right") - 1  # (H,)
    cell_col = np.searchsorted(xe, np.arange(b.shape[1]), side="right") - 1  # (W,)
    has_point = np.zeros(grid, bool)
    has_point[cell_row[points[:, 1]], cell_col[points[:, 0]]] = True
    out = 1.0 - np.abs(b.max() - b)
    out *= has_point[cell_row[:, None], cell_col[None, :]]
    return out


def check_targets_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`TARGET_VARIANTS`, else ``ValueError``."""
    if variant not in TARGET_VARIANTS:
        raise ValueError(f"unknown LAA-Net targets variant {variant!r}; "
                         f"use one of {TARGET_VARIANTS}")
    return variant


def _official_targets(mask: np.ndarray, size: tuple[int, int], grid: Grid, min_overlap: float,
                      radius: RadiusVariant) -> LAANetTargets:
    """The ``"official"`` variant of :func:`laanet_targets` (see the module docstring)."""
    levels = official_boundary(mask, size)  # (h, w) uint8
    if not levels.any():
        zeros = np.zeros(size, np.float32)
        return LAANetTargets(zeros, zeros.copy(), zeros.copy())
    points = vulnerable_points(levels, grid)  # every pixel at its quadrant's maximum level
    heights, widths = run_lengths(levels, points, level=OFFICIAL_RUN_LEVEL)
    sigmas = gaussian_radius(heights, widths, min_overlap, radius) / 3.0
    heatmap = draw_gaussians(size, points, np.maximum(sigmas, 1e-3))
    boundary = levels.astype(np.float32) * np.float32(1 / 255)
    consistency = consistency_target(boundary, points, grid)
    return LAANetTargets(heatmap, consistency, boundary)


def laanet_targets(
    mask: np.ndarray | None,
    heatmap_size: int | tuple[int, int],
    ratio: float | None = None,
    grid: Grid = (2, 2),
    quantize: bool = False,
    min_overlap: float = 0.7,
    radius: RadiusVariant = "centernet",
    variant: TargetsVariant = "paper",
) -> LAANetTargets:
    """Heatmap, consistency and boundary targets of one image at heatmap resolution.

    Args:
        mask: the blending mask at image resolution, or ``None`` for a real image. With
            ``ratio`` or ``variant="official"``: the unscaled soft mask
            (``BlendResult.mask_unscaled``).
        heatmap_size: ``h`` or ``(h, w)``.
        ratio: the blend ratio ``r``; B becomes ``r * 4 M (1 - M)`` (see module docstring).
            Not used by the ``"official"`` variant (LAA-Net's code does not scale B by ``r``).
        grid, quantize, min_overlap, radius: see :func:`heatmap_target` (``quantize``: the
            ``"paper"`` variant only; the ``"official"`` one always works on uint8 levels).
        variant: ``"paper"`` (float B at heatmap resolution) or ``"official"`` (LAA-Net's
            released code: uint8 B at image resolution, resized; see the module docstring).

    Returns:
        :class:`LAANetTargets` ``(heatmap, consistency, boundary)``, each ``(h, w)`` float32;
        all zeros for a real image.
    """
    check_targets_variant(variant)
    size = _size(heatmap_size)
    if mask is None or not np.any(mask):
        zeros = np.zeros(size, np.float32)
        return LAANetTargets(zeros, zeros.copy(), zeros.copy())
    if variant == "official":
        return _official_targets(mask, size, grid, min_overlap, radius)
    boundary = blending_boundary(mask, ratio, size)
    points = vulnerable_points(boundary, grid, quantize)
    heatmap = heatmap_target(boundary, None, grid, quantize, min_overlap, radius, points)
    # The consistency target asks "does this pixel carry the same blending trace as the anchor?",
    # which the blend ratio does not change: it is computed on the unscaled ring, so that away
    # from the boundary it is 0 (not 1 - r) for partial blends too.
    unscaled = boundary / np.float32(ratio) if ratio else boundary
    consistency = consistency_target(unscaled, points, grid, quantize)
    return LAANetTargets(heatmap, consistency, boundary)
