"""Pseudo-fakes by blending: Self-Blended Images (SBI) and Face X-ray's Blended Images (BI).

Both paste a foreground face ``I_F`` onto a host ``I_B`` through a soft mask ``M`` (Face X-ray,
Li et al., CVPR 2020): ``I = M * I_F + (1 - M) * I_B``, and return the pair ``(host, blend)``.

**SBI** (Shiohara & Yamasaki, CVPR 2022, §3; steps in the order of the official code):
:func:`self_blend` blends a face with a changed copy of *itself*:

1. landmark subset (the forehead points dropped with p = 0.25) and one of four hull types
   (:mod:`dfattn.data.masks`);
2. source-target generator: a coin picks which copy, source or target, gets the statistical
   perturbation (colour: RGB shift, hue/saturation/value, brightness/contrast; frequency:
   nearest down-scale + bilinear up-scale, or sharpen). The target is the "real" output, so
   global colour or sharpness never tells real from fake;
3. one random affine (isotropic scale, translation) moves the source and the mask together;
4. an elastic deformation bends the mask only;
5. two-stage blur: at a random grid size, blur, keep only the core (values below 1 set to 0),
   blur again with a wide sigma;
6. blend ratio ``r`` from {0.25, 0.5, 0.75, 1, 1, 1}: ``fake = r M * source + (1 - r M) * target``.

**BI** (Face X-ray §3.2, with the BI settings of LAA-Net's released code): :func:`blend_images`
pastes a *donor of another identity* with similar landmarks (:class:`NearestLandmarkIndex`),
warped onto the target by a least-squares similarity and colour-matched in CIELAB, through a
randomly deformed, eroded or dilated, blurred hull mask.

Speed: everything runs at the face's resolution inside the face's bounding box (grown by what
the affine, the elastic field and the blurs can reach); the elastic field is drawn on a coarse
grid; the colour perturbation is one lookup table; the blend is one ``cv2.blendLinear``. All
randomness comes from the ``rng`` passed in: same seed, same bytes.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from dfattn.data.faces import Face, FaceSource
from dfattn.data.geometry import draw_hulls, face_scale, lab_colour_transfer, similarity_transform
from dfattn.data.masks import MASK_TYPES, hull_pieces, with_forehead

__all__ = [
    "BIConfig",
    "BlendResult",
    "NearestLandmarkIndex",
    "SBIConfig",
    "blend_images",
    "perturb_statistics",
    "self_blend",
]


# ------------------------------------------------------------------------------------------------
# Configuration and result
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SBIConfig:
    """Hyper-parameters of :func:`self_blend` (defaults: the released SBI code).

    Sizes in pixels refer to a 256-px crop; other sizes scale them (``soften_size`` is absolute,
    as in SBI, which makes the blur relative to the crop).

    Mask (MG):
        mask_types: hull types to draw from uniformly (:data:`~dfattn.data.masks.MASK_TYPES`).
        forehead_dropout: probability of using the 68 points only (else 68 + 13 forehead points).

    Source-target generator (STG):
        perturb_source_p: probability that the source (not the target) is perturbed.
        rgb_shift, rgb_shift_p: per-channel shift in [-rgb_shift, rgb_shift] grey levels.
        hsv_shift, hsv_p: hue / saturation / value shifts in OpenCV uint8 units (hue 0-180). SBI's
            0.3 rounds to no change on uint8 images (a quirk of the released code); kept for fidelity.
        brightness, contrast, brightness_contrast_p: ``x * (1 + c) + 255 * b`` with ``b``, ``c``
            uniform in +-brightness, +-contrast.
        downscale_p: probability of the down/up-scale (else sharpen), one of the two always.
        downscale_factors: nearest-neighbour shrink factors, then bilinear back.
        sharpen_alpha, sharpen_lightness: the sharpen kernel
            ``(1 - a) I + a [[-1,-1,-1],[-1,8+l,-1],[-1,-1,-1]]``.

    Geometry:
        scale_range: isotropic affine scale about the image centre (source and mask).
        translate: maximal translation as a fraction of (width, height).
        elastic_alpha, elastic_sigma: elastic deformation of the mask only (albumentations'
            ``ElasticTransform`` semantics: displacement = alpha x Gaussian(sigma)-smoothed
            uniform noise in [-1, 1]); alpha scales with size^2 and sigma with size, so the
            deformation is geometrically the same at any crop size.

    Soft mask:
        soften_size: the mask is blurred on a grid whose height and width are drawn
            independently from this range (px, inclusive; SBI: 192-256; LAA-Net's code resizes by
            factors in 0.8-1.25 instead).
        blur1_kernel: odd kernel range of the first blur (sigma from the kernel size).
        blur2_kernel, blur2_sigma: odd kernel range and integer sigma range of the second blur.
        core_tolerance: values below ``1 - core_tolerance`` count as "below 1" after the first
            blur (float rounding only).

    Blend:
        blend_ratios: ``r`` drawn uniformly from this list (r = 1 half of the time).
    """

    mask_types: tuple[str, ...] = MASK_TYPES
    forehead_dropout: float = 0.25
    perturb_source_p: float = 0.5
    rgb_shift: float = 20.0
    rgb_shift_p: float = 0.3
    hsv_shift: tuple[float, float, float] = (0.3, 0.3, 0.3)
    hsv_p: float = 1.0
    brightness: float = 0.1
    contrast: float = 0.1
    brightness_contrast_p: float = 1.0
    downscale_p: float = 0.5
    downscale_factors: tuple[int, ...] = (2, 4)
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)
    scale_range: tuple[float, float] = (0.95, 1 / 0.95)
    translate: tuple[float, float] = (0.03, 0.015)
    elastic_alpha: float = 50.0
    elastic_sigma: float = 7.0
    soften_size: tuple[int, int] = (192, 256)
    blur1_kernel: tuple[int, int] = (5, 25)
    blur2_kernel: tuple[int, int] = (5, 25)
    blur2_sigma: tuple[int, int] = (5, 45)
    core_tolerance: float = 1e-4
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class BIConfig:
    """Hyper-parameters of :func:`blend_images` (Face X-ray's BI as LAA-Net runs it).

    Fractions of "face size" are of the square root of the target's landmark hull area.

    Attributes:
        mask_types: hull types drawn uniformly (68 points, no forehead, as LAA-Net's BI).
        k_nearest: the donor is drawn uniformly from the k nearest faces of other identities
            (LAA-Net: 30; Face X-ray: 100).
        elastic_alpha, elastic_sigma: random mask deformation, at 256 px (the elastic field of
            SBI, standing in for Face X-ray's piecewise-affine warp of the hull).
        erode_p: probability of eroding (else dilating) the hull.
        erode_radius, dilate_radius: disc radius ranges, fractions of face size.
        blur_sigma: Gaussian feathering sigma range, fraction of face size.
        colour_transfer: match the donor's LAB mean and std to the target inside the hull.
    """

    mask_types: tuple[str, ...] = MASK_TYPES
    k_nearest: int = 30
    elastic_alpha: float = 400.0
    elastic_sigma: float = 12.0
    erode_p: float = 0.5
    erode_radius: tuple[float, float] = (0.0, 0.07)
    dilate_radius: tuple[float, float] = (0.0, 0.02)
    blur_sigma: tuple[float, float] = (0.01, 0.05)
    colour_transfer: bool = True


@dataclass
class BlendResult:
    """A real image and its pseudo-fake.

    Attributes:
        real: ``(H, W, 3)`` uint8 RGB, the host (SBI: the target copy, perturbed half of the time).
        fake: ``(H, W, 3)`` uint8 RGB; equal to ``real`` wherever ``mask == 0``.
        mask: ``(H, W)`` float32 in [0, 1], the blend weight used: ``ratio * mask_unscaled``.
        mask_unscaled: ``(H, W)`` float32 in [0, 1], maximum 1: the soft mask before the ratio.
        ratio: the blending ratio ``r`` (1 for BI).
        mask_type: the hull type (one of :data:`~dfattn.data.masks.MASK_TYPES`).
        params: the other random choices (JSON-friendly), for figures and debugging.
        donor_identity: BI only: the donor's identity.

    For LAA-Net's targets pass ``mask_unscaled`` and ``ratio`` to
    :func:`~dfattn.data.targets.laanet_targets` (the boundary ring of the soft mask, scaled by r);
    LAA-Net's released code makes its targets from the unscaled mask too, without the ratio
    (``variant="official"``). Passing ``mask`` instead gives the boundary of ``r M`` (for
    r <= 0.5 a filled blob, not a ring), which neither the paper nor the code uses.
    """

    real: np.ndarray
    fake: np.ndarray
    mask: np.ndarray
    mask_unscaled: np.ndarray
    ratio: float
    mask_type: str
    params: dict = field(default_factory=dict)
    donor_identity: int | None = None


@contextmanager
def _timed(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    """Add the seconds spent in the block to ``timings[step]`` (no-op when ``timings`` is None)."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# Source-target generator: statistical perturbation
# ------------------------------------------------------------------------------------------------


def _odd(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """An odd integer drawn uniformly from the odd numbers in ``[lo, hi]``."""
    lo, hi = bounds
    return 2 * int(rng.integers(lo // 2, (hi - 1) // 2 + 1)) + 1


def _colour(image: np.ndarray, rng: np.random.Generator, c: SBIConfig, params: dict) -> np.ndarray:
    """RGB shift -> HSV shift -> brightness/contrast, each on uint8 like albumentations.

    The per-channel steps are lookup tables composed into one ``cv2.LUT``; the HSV step (which
    needs a colour-space round trip) runs only when one of its shifts rounds to a change.
    """
    levels = np.arange(256, dtype=np.float32)[:, None]  # (256, 1)
    rgb = np.zeros(3, np.float32)
    if rng.random() < c.rgb_shift_p:
        rgb = rng.uniform(-c.rgb_shift, c.rgb_shift, 3).astype(np.float32)
    lut1 = np.clip(np.rint(levels + rgb), 0, 255)  # (256, 3)
    hsv = np.zeros(3)
    if rng.random() < c.hsv_p:
        hsv = np.rint(rng.uniform(-1.0, 1.0, 3) * np.asarray(c.hsv_shift))
    gain, bias = 1.0, 0.0
    if rng.random() < c.brightness_contrast_p:
        gain = 1.0 + float(rng.uniform(-c.contrast, c.contrast))
        bias = 255.0 * float(rng.uniform(-c.brightness, c.brightness))
    params.update(rgb_shift=np.round(rgb.astype(float), 2).tolist(), hsv_shift=hsv.tolist(),
                  gain=gain, bias=bias)

    def bc(lut: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(lut * gain + bias), 0, 255)

    if not hsv.any():
        return cv2.LUT(image, bc(lut1).astype(np.uint8).reshape(1, 256, 3))
    out = cv2.cvtColor(cv2.LUT(image, lut1.astype(np.uint8).reshape(1, 256, 3)), cv2.COLOR_RGB2HSV)
    hue = np.mod(levels[:, 0] + hsv[0], 180)  # OpenCV uint8 hue lives in [0, 180)
    sat, val = (np.clip(levels[:, 0] + s, 0, 255) for s in hsv[1:])
    out = cv2.LUT(out, np.stack([hue, sat, val], 1).astype(np.uint8).reshape(1, 256, 3))
    out = cv2.cvtColor(out, cv2.COLOR_HSV2RGB)
    return cv2.LUT(out, bc(np.repeat(levels, 3, 1)).astype(np.uint8).reshape(1, 256, 3))


def _frequency(image: np.ndarray, rng: np.random.Generator, c: SBIConfig, params: dict
               ) -> np.ndarray:
    """One of: nearest down-scale then bilinear up-scale, or a 3x3 sharpen."""
    h, w = image.shape[:2]
    if rng.random() < c.downscale_p:
        f = int(c.downscale_factors[int(rng.integers(len(c.downscale_factors)))])
        params["frequency"] = f"downscale_{f}"
        small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = float(rng.uniform(*c.sharpen_alpha))
    lightness = float(rng.uniform(*c.sharpen_lightness))
    params["frequency"] = f"sharpen_{alpha:.2f}_{lightness:.2f}"
    kernel = np.full((3, 3), -alpha, np.float32)
    kernel[1, 1] = (1 - alpha) + alpha * (8 + lightness)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def perturb_statistics(
    image: np.ndarray, rng: np.random.Generator, config: SBIConfig = SBIConfig(),
    params: dict | None = None,
) -> np.ndarray:
    """SBI's source-target perturbation (SBI §3.1, source-target generator): colour, then one frequency change.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        params: if given, the drawn parameters are recorded in it.

    Returns:
        a new ``(H, W, 3)`` uint8 image.
    """
    params = {} if params is None else params
    return _frequency(_colour(image, rng, config, params), rng, config, params)


# ------------------------------------------------------------------------------------------------
# Mask generator: geometry, elastic field, two-stage blur
# ------------------------------------------------------------------------------------------------


@dataclass
class _Field:
    """A displacement field on a coarse grid: ``data[j, i] = (dx, dy)`` at pixel ``step * (i, j)``.
    """

    data: np.ndarray  # (h, w, 2) float32
    step: int
    reach: float  # max |displacement| in pixels


def _elastic_field(shape: tuple[int, int], rng: np.random.Generator, alpha: float, sigma: float
                   ) -> _Field:
    """Elastic displacement ``alpha * G_sigma * U(-1, 1)`` (Simard et al. 2003), drawn coarse.

    Averaging ``s x s`` blocks of white noise divides its std by ``s`` and blurs it by a box of
    std ``s / sqrt(12)``; so uniform noise of amplitude ``1 / s`` on a grid of step ``s``, smoothed
    by ``sqrt(sigma^2 - s^2 / 12) / s`` coarse pixels, has the statistics of the full-resolution
    field at ``1 / s^2`` of the cost. Bilinear interpolation then reads it at any pixel.
    """
    h, w = shape
    step = max(1, round(sigma / 2))
    gh, gw = h // step + 2, w // step + 2
    noise = rng.uniform(-1.0 / step, 1.0 / step, (gh, gw, 2)).astype(np.float32)
    coarse_sigma = math.sqrt(max(sigma**2 - step**2 / 12.0, 1e-6)) / step
    data = cv2.GaussianBlur(noise, (0, 0), coarse_sigma, borderType=cv2.BORDER_REFLECT_101)
    data *= alpha
    return _Field(data, step, float(np.abs(data).max()))


def _random_affine(shape: tuple[int, int], rng: np.random.Generator, c: SBIConfig
                   ) -> tuple[np.ndarray, dict]:
    """Isotropic scale about the image centre plus a translation: ``(2, 3)`` float64 forward map."""
    h, w = shape
    s = float(rng.uniform(*c.scale_range))
    tx = float(rng.uniform(-c.translate[0], c.translate[0])) * w
    ty = float(rng.uniform(-c.translate[1], c.translate[1])) * h
    cx, cy = (w - 1) / 2, (h - 1) / 2
    affine = np.array([[s, 0.0, cx - s * cx + tx], [0.0, s, cy - s * cy + ty]])
    return affine, {"scale": s, "translate": (tx, ty)}


def _roi(points: np.ndarray, affine: np.ndarray, pad: float, shape: tuple[int, int], what: str
         ) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the box of ``affine(points)`` grown by ``pad``, clipped to the image.
    """
    moved = points @ affine[:, :2].T + affine[:, 2]
    (bx0, by0), (bx1, by1) = moved.min(0) - pad, moved.max(0) + pad
    h, w = shape
    x0, y0 = max(0, math.floor(bx0)), max(0, math.floor(by0))
    x1, y1 = min(w, math.ceil(bx1) + 1), min(h, math.ceil(by1) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"{what}: the face mask lies outside the {w}x{h} image")
    return x0, y0, x1, y1


def _warp_mask(hull: np.ndarray, roi: tuple[int, int, int, int], scale: tuple[float, float],
               affine: np.ndarray, elastic: _Field) -> np.ndarray:
    """The hull moved by ``affine`` then bent by ``elastic``, sampled on a grid over ``roi``
    with ``scale`` (grid pixels per image pixel), in one ``cv2.remap``.

    Grid pixel ``(u, v)`` sits at image point ``p = (x0 + (u + 0.5) / sx - 0.5, ...)``; its value is
    the hull at ``affine^-1(p + d(p))`` (affine first, then the elastic warp, as in SBI).
    """
    x0, y0, x1, y1 = roi
    sx, sy = scale
    gw, gh = max(1, math.ceil((x1 - x0) * sx)), max(1, math.ceil((y1 - y0) * sy))
    ox, oy = x0 + 0.5 / sx - 0.5, y0 + 0.5 / sy - 0.5  # image point of grid pixel (0, 0)
    st = elastic.step
    to_field = np.float32([[1 / (sx * st), 0, ox / st], [0, 1 / (sy * st), oy / st]])
    d = cv2.warpAffine(elastic.data, to_field, (gw, gh),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)  # (gh, gw, 2)
    px = d[..., 0] + (ox + np.arange(gw, dtype=np.float32) / sx)[None, :]
    py = d[..., 1] + (oy + np.arange(gh, dtype=np.float32) / sy)[:, None]
    inv = cv2.invertAffineTransform(affine).astype(np.float32)
    map_x = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]
    map_y = inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
    return cv2.remap(hull, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def _to_image_grid(grid_mask: np.ndarray, roi: tuple[int, int, int, int],
                   scale: tuple[float, float]) -> np.ndarray:
    """Resample a mask on the ``_warp_mask`` grid back to the image pixels of ``roi``."""
    x0, y0, x1, y1 = roi
    sx, sy = scale
    to_grid = np.float32([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
    out = cv2.warpAffine(grid_mask, to_grid, (x1 - x0, y1 - y0),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.clip(out, 0.0, 1.0, out=out)


def _normalise(mask: np.ndarray, what: str) -> np.ndarray:
    peak = float(mask.max())
    if peak <= 0:
        raise ValueError(f"{what}: the mask vanished (face hull outside the image?)")
    mask *= 1.0 / peak
    return mask


def _blend_roi(source_roi: np.ndarray, host: np.ndarray, weight: np.ndarray,
               roi: tuple[int, int, int, int]) -> np.ndarray:
    """``host`` with ``weight * source + (1 - weight) * host`` inside ``roi`` (exact host where
    ``weight == 0``)."""
    x0, y0, x1, y1 = roi
    fake = host.copy()
    fake[y0:y1, x0:x1] = cv2.blendLinear(source_roi, host[y0:y1, x0:x1], weight, 1.0 - weight)
    return fake


def _paste(values: np.ndarray, roi: tuple[int, int, int, int], shape: tuple[int, int]
           ) -> np.ndarray:
    x0, y0, x1, y1 = roi
    full = np.zeros(shape, np.float32)
    full[y0:y1, x0:x1] = values
    return full


# ------------------------------------------------------------------------------------------------
# SBI
# ------------------------------------------------------------------------------------------------


def self_blend(
    face: Face,
    rng: np.random.Generator,
    config: SBIConfig = SBIConfig(),
    timings: dict[str, float] | None = None,
) -> BlendResult:
    """A self-blended image (SBI §3.1-3.2: perturb, mask, warp, blend) of ``face``.

    Args:
        face: the real face (any size; landmarks in its pixels).
        rng: the only source of randomness.
        config: hyper-parameters.
        timings: if given, seconds per step (``mask``, ``perturb``, ``affine``, ``elastic``,
            ``blur``, ``blend``) are added to it (for ``benchmarks/bench_sbi.py``).

    Returns:
        :class:`BlendResult` ``(real = target, fake, mask = r M, mask_unscaled = M, r, type)``.
    """
    c = config
    image = face.image
    shape = image.shape[:2]
    what = f"self_blend({face.name or face.identity})"
    size_factor = max(shape) / 256.0
    params: dict = {}

    with _timed(timings, "mask"):  # step 3-4: landmark subset and hull type
        params["forehead"] = bool(rng.random() >= c.forehead_dropout)
        points = with_forehead(face.landmarks) if params["forehead"] else face.landmarks[:68]
        mask_type = c.mask_types[int(rng.integers(len(c.mask_types)))]
        pieces = hull_pieces(points, mask_type)
        hull = draw_hulls(np.zeros(shape, np.uint8), pieces, 255)

    with _timed(timings, "perturb"):  # step 5: which copy changes, and how
        params["perturbed"] = "source" if rng.random() < c.perturb_source_p else "target"
        changed = perturb_statistics(image, rng, c, params)
        source, target = (changed, image) if params["perturbed"] == "source" else (image, changed)

    with _timed(timings, "elastic"):  # step 7: elastic field for the mask only (drawn first)
        elastic = _elastic_field(shape, rng, c.elastic_alpha * size_factor**2,
                                 c.elastic_sigma * size_factor)

    with _timed(timings, "affine"):  # step 6: one affine for source and mask; the working box
        affine, geometry = _random_affine(shape, rng, c)
        params.update(geometry)
        lo, hi = c.soften_size
        grid_hw = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
        scale = (grid_hw[1] / shape[1], grid_hw[0] / shape[0])
        k1, k2 = _odd(rng, c.blur1_kernel), _odd(rng, c.blur2_kernel)
        sigma2 = int(rng.integers(c.blur2_sigma[0], c.blur2_sigma[1] + 1))
        params.update(soften_size=grid_hw, blur=(k1, k2, sigma2))
        pad = elastic.reach + 2.0 + (k2 // 2 + 2) / min(scale)
        roi = _roi(np.concatenate(pieces), affine, pad, shape, what)
        x0, y0, x1, y1 = roi
        to_roi = affine.copy()
        to_roi[:, 2] -= (x0, y0)
        source_roi = cv2.warpAffine(source, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)

    with _timed(timings, "elastic"):
        grid = _warp_mask(hull, roi, scale, affine, elastic).astype(np.float32)
        grid *= 1.0 / 255.0

    with _timed(timings, "blur"):  # step 8: blur, keep the core, blur wide, back to the image
        grid = _normalise(cv2.GaussianBlur(grid, (k1, k1), 0), what)
        grid[grid < 1.0 - c.core_tolerance] = 0.0
        grid = _normalise(cv2.GaussianBlur(grid, (k2, k2), sigma2), what)
        soft = _to_image_grid(grid, roi, scale)

    with _timed(timings, "blend"):  # steps 9-10: ratio and blend
        ratio = float(c.blend_ratios[int(rng.integers(len(c.blend_ratios)))])
        fake = _blend_roi(source_roi, target, soft * ratio, roi)
        mask_unscaled = _paste(soft, roi, shape)
        real = target if target is not image else image.copy()
    return BlendResult(real, fake, mask_unscaled * ratio, mask_unscaled, ratio, mask_type, params)


# ------------------------------------------------------------------------------------------------
# BI: colour transfer, donors by landmark similarity
# ------------------------------------------------------------------------------------------------


def _centred_complex(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` -> ``(..., 68)`` complex ``x + iy`` with zero mean."""
    z = landmarks[..., 0].astype(np.float64) + 1j * landmarks[..., 1].astype(np.float64)
    return z - z.mean(-1, keepdims=True)


def _align(z: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Each centred shape times the complex factor (rotation and scale) that best fits ``template``:
    the least-squares similarity of 2-D points, in closed form."""
    a = (np.conj(z) * template).sum(-1) / np.maximum((np.abs(z) ** 2).sum(-1), 1e-12)
    return a[..., None] * z


class NearestLandmarkIndex:
    """Faces indexed by their normalised landmarks, to find similar faces of other identities.

    Shapes are centred and aligned by a similarity (rotation, scale) onto a template made by
    generalised Procrustes analysis of the indexed shapes (three rounds). The distance of two
    faces is the sum over the 68 points of the Euclidean distance between their aligned points
    (the nearest-landmark donor search of Face X-ray's BI, as LAA-Net's code does it; in units of the unit-norm template). Queries are
    vectorised over all faces.

    Args:
        landmarks: ``(N, 68, 2)``.
        identities: ``(N,)`` identity of each face.
        faces: where :func:`blend_images` reads the chosen donor (index ``i`` -> ``faces[i]``).
    """

    def __init__(self, landmarks: np.ndarray, identities: Sequence[int] | np.ndarray,
                 faces: FaceSource | Sequence[Face] | None = None):
        lm = np.asarray(landmarks, np.float64)
        if lm.ndim != 3 or lm.shape[1:] != (68, 2) or len(lm) == 0:
            raise ValueError(f"NearestLandmarkIndex: landmarks must be (N, 68, 2), got {lm.shape}")
        self.identities = np.asarray(identities, np.int64)
        if self.identities.shape != (len(lm),):
            raise ValueError(
                f"NearestLandmarkIndex: {len(lm)} landmark sets but {self.identities.shape} "
                "identities"
            )
        self.faces = faces
        z = _centred_complex(lm)
        template = z[0] / max(np.linalg.norm(z[0]), 1e-12)
        for _ in range(3):
            mean = _align(z, template).mean(0)
            template = mean / max(np.linalg.norm(mean), 1e-12)
        self.template = template
        self.shapes = _align(z, template)  # (N, 68) complex

    @classmethod
    def from_faces(cls, faces: FaceSource | Sequence[Face]) -> NearestLandmarkIndex:
        """Index every face of ``faces`` (reads each once)."""
        records = [faces[i] for i in range(len(faces))]
        if not records:
            raise ValueError("NearestLandmarkIndex: no faces to index")
        return cls(np.stack([f.landmarks for f in records]), [f.identity for f in records], faces)

    def __len__(self) -> int:
        return len(self.identities)

    def distances(self, landmarks: np.ndarray) -> np.ndarray:
        """``(N,)`` distance of every indexed face to ``landmarks`` ``(68, 2)``."""
        q = _align(_centred_complex(np.asarray(landmarks)), self.template)
        return np.abs(self.shapes - q).sum(-1)

    def nearest(self, landmarks: np.ndarray, k: int, exclude_identity: int | None = None
                ) -> np.ndarray:
        """Indices of the ``k`` nearest faces (closest first), skipping ``exclude_identity``.

        Returns fewer than ``k`` when fewer faces qualify; raises ``ValueError`` when none does.
        """
        d = self.distances(landmarks)
        allowed = np.flatnonzero(self.identities != exclude_identity)
        if len(allowed) == 0:
            raise ValueError(
                f"NearestLandmarkIndex: no face of an identity other than {exclude_identity} "
                f"among {len(self)}"
            )
        k = min(int(k), len(allowed))
        part = allowed[np.argpartition(d[allowed], k - 1)[:k]] if k < len(allowed) else allowed
        return part[np.lexsort((part, d[part]))]  # by distance, ties by index


_INDEX_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _index_for(donors: FaceSource | Sequence[Face] | NearestLandmarkIndex) -> NearestLandmarkIndex:
    """An index over ``donors``; built once per source object (lists are indexed every call)."""
    if isinstance(donors, NearestLandmarkIndex):
        return donors
    if isinstance(donors, (list, tuple)):
        return NearestLandmarkIndex.from_faces(donors)
    try:
        index = _INDEX_CACHE.get(donors)
    except TypeError:  # not weak-referenceable
        return NearestLandmarkIndex.from_faces(donors)
    if index is None or len(index) != len(donors):
        index = NearestLandmarkIndex.from_faces(donors)
        _INDEX_CACHE[donors] = index
    return index


def blend_images(
    target: Face,
    donors: FaceSource | Sequence[Face] | NearestLandmarkIndex,
    rng: np.random.Generator,
    k_nearest: int | None = None,
    config: BIConfig = BIConfig(),
) -> BlendResult:
    """Face X-ray's blended image: a similar-looking donor of another identity pasted on ``target``.

    1. Donor: uniform among the ``k_nearest`` faces of other identities whose normalised
       landmarks are closest to the target's (:class:`NearestLandmarkIndex`; a source is
       indexed once and cached, so pass the same object, or an index, on every call).
    2. Mask: a random hull type of the target's 68 points, bent by an elastic field, eroded or
       dilated by a disc, feathered by a Gaussian.
    3. Donor warped onto the target by the least-squares similarity of their landmarks
       (:func:`~dfattn.data.geometry.similarity_transform`, Umeyama; deterministic, unlike
       OpenCV's RANSAC estimators), then LAB mean/std colour transfer (Reinhard et al. 2001)
       inside the hull.
    4. ``fake = M * donor + (1 - M) * target``; the real image is the target.

    Returns:
        :class:`BlendResult` with ``ratio = 1``, ``mask = mask_unscaled`` and ``donor_identity``.
    """
    c = config
    index = _index_for(donors)
    if index.faces is None:
        raise ValueError("blend_images: the NearestLandmarkIndex has no faces to read donors from")
    k = c.k_nearest if k_nearest is None else k_nearest
    candidates = index.nearest(target.landmarks, k, exclude_identity=target.identity)
    donor_index = int(candidates[int(rng.integers(len(candidates)))])
    donor = index.faces[donor_index]

    image = target.image
    shape = image.shape[:2]
    what = f"blend_images({target.name or target.identity})"
    face_size = face_scale(target.landmarks)
    size_factor = max(shape) / 256.0
    mask_type = c.mask_types[int(rng.integers(len(c.mask_types)))]
    pieces = hull_pieces(target.landmarks[:68], mask_type)
    hull = draw_hulls(np.zeros(shape, np.uint8), pieces, 255)
    elastic = _elastic_field(shape, rng, c.elastic_alpha * size_factor**2,
                             c.elastic_sigma * size_factor)
    erode = rng.random() < c.erode_p
    radius = round(face_size * rng.uniform(*(c.erode_radius if erode else c.dilate_radius)))
    sigma = max(0.5, face_size * float(rng.uniform(*c.blur_sigma)))
    k = 2 * math.ceil(3 * sigma) + 1

    identity = np.eye(2, 3)
    roi = _roi(np.concatenate(pieces), identity, elastic.reach + radius + k // 2 + 3, shape, what)
    x0, y0, x1, y1 = roi
    hard = _warp_mask(hull, roi, (1.0, 1.0), identity, elastic)  # (h, w) uint8, 0..255
    if radius > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        hard = cv2.erode(hard, disc) if erode else cv2.dilate(hard, disc)
    hard = np.where(hard >= 128, np.uint8(255), np.uint8(0))
    soft = _normalise(cv2.GaussianBlur(hard.astype(np.float32), (k, k), sigma), what)

    to_roi = similarity_transform(donor.landmarks, target.landmarks)
    to_roi[:, 2] -= (x0, y0)
    donor_roi = cv2.warpAffine(donor.image, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
    if c.colour_transfer:
        region = hard if hard.any() else hull[y0:y1, x0:x1]
        donor_roi = lab_colour_transfer(donor_roi, image[y0:y1, x0:x1], region)
    fake = _blend_roi(donor_roi, image, soft, roi)
    mask = _paste(soft, roi, shape)
    params = {"donor_index": donor_index, "erode" if erode else "dilate": radius, "sigma": sigma}
    return BlendResult(image.copy(), fake, mask, mask.copy(), 1.0, mask_type, params, donor.identity)
