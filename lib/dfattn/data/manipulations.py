"""Held-out manipulation families and image degradations, for evaluation only.

Detectors in this book train on self-blended pseudo-fakes (SBI): one face blended with a changed copy
of itself. Whether they generalise is measured here, on manipulations they never saw, each made from
the landmarks of :class:`~dfattn.data.faces.Face` records with OpenCV and NumPy:

- :func:`face_swap`: a donor of another identity warped onto the target's landmarks (piecewise-affine
  over a Delaunay triangulation, or one similarity), colour-matched in LAB, alpha-blended through a
  soft face-hull mask (the classic DeepFakes / FaceSwap pipeline);
- :func:`region_swap`: the donor's eyes, nose or mouth cut with a jittery lasso and pasted by hand,
  as in a photo editor (hard or barely feathered edge, at most a rough brightness match);
- :func:`upsampler_resynthesis`: a face region re-synthesised at a quarter of the resolution and
  upsampled by transposed-convolution-like layers with uneven kernel overlap, which leave the
  periodic checkerboard traces of GAN decoders (Odena et al., "Deconvolution and Checkerboard
  Artifacts", Distill 2016) and their spectral peaks (Durall et al., CVPR 2020);
- :func:`poisson_swap`: a whole-face swap by Poisson (seamless) cloning, ``cv2.seamlessClone``
  (Pérez et al., "Poisson Image Editing", SIGGRAPH 2003).

Every family returns a :class:`Manipulation` whose ``mask`` is the exact ground truth: float32
``(H, W)`` in [0, 1], zero wherever the output equals the target by construction, so every changed
pixel lies inside ``mask > 0``.

Degradations (:data:`DEGRADATIONS`) act on whole uint8 RGB images, after manipulation, and are applied
identically to real images; each carries the strength grid of the robustness table.

Never imports the training-side data modules (blending, masks, targets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np
from scipy.spatial import Delaunay

from dfattn.data.faces import LEFT_EYE, MOUTH, NOSE, OUTER_LIPS, RIGHT_EYE, Face, FaceSource

__all__ = [
    "DEGRADATIONS",
    "FAMILIES",
    "REGIONS",
    "DegradationType",
    "Manipulation",
    "apply_family",
    "degrade",
    "downscale",
    "face_swap",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "pick_donor",
    "poisson_swap",
    "region_swap",
    "resynthesise",
    "similarity_transform",
    "upsampler_resynthesis",
    "warp_to_landmarks",
]

# Regions a hand-made swap (or a partial re-synthesis) replaces: landmark groups, one convex part each.
REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "eyes": (RIGHT_EYE, LEFT_EYE),
    "nose": (NOSE,),
    "mouth": (OUTER_LIPS,),  # the inner lips lie inside the outer ones
}
_REGION_LANDMARKS: dict[str, tuple[int, ...]] = {
    "eyes": RIGHT_EYE + LEFT_EYE,
    "nose": NOSE,
    "mouth": MOUTH,
}
FACE = tuple(range(68))  # the iBUG-68 hull (jaw and brows): the "inner face" of face-swap tools


@dataclass
class Manipulation:
    """A manipulated image with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, same size as the target.
        mask: ``(H, W)`` float32 in [0, 1]: the blend weight of the new content; exactly 0 where the
            image equals the target (every changed pixel has ``mask > 0``).
        family: name in :data:`FAMILIES`.
        params: the parameters used (drawn from ``rng`` where not given), JSON-friendly.
        donor_identity: identity of the donor face, ``None`` for donor-free families.
    """

    image: np.ndarray
    mask: np.ndarray
    family: str
    params: dict = field(default_factory=dict)
    donor_identity: int | None = None


# ---------------------------------------------------------------------------------------------------
# Geometry: similarity and piecewise-affine warps as one backward map (target pixel -> donor pixel)
# ---------------------------------------------------------------------------------------------------


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns"
    (TPAMI 1991), closed form via an SVD; deterministic, unlike OpenCV's robust estimators.

    Args:
        src, dst: ``(N, 2)`` corresponding points, ``N >= 2``.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("similarity_transform: source points are all identical")
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))  # cross-covariance (2, 2)
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def _invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def _backward_map(
    target_points: np.ndarray, donor_points: np.ndarray, shape: tuple[int, int], method: str
) -> tuple[np.ndarray, np.ndarray]:
    """For each target pixel, where to sample the donor: ``(map_x, map_y)`` float32 ``(H, W)``.

    ``"similarity"``: one least-squares similarity. ``"piecewise"``: one affine map per triangle of a
    Delaunay triangulation of the target landmarks, extended to the whole image by anchors on a frame
    around it that follow the similarity, so the map is continuous everywhere.
    """
    h, w = shape
    to_donor = similarity_transform(target_points, donor_points)  # (2, 3): target -> donor
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if method == "similarity":
        a = to_donor.astype(np.float32)
        return a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    if method != "piecewise":
        raise ValueError(f"unknown warp method {method!r}; use 'piecewise' or 'similarity'")
    # Frame anchors (corners and edge midpoints, 2 px outside the image) follow the similarity.
    fx, fy = np.array([-2.0, (w - 1) / 2, w + 1.0]), np.array([-2.0, (h - 1) / 2, h + 1.0])
    frame = np.array([(x, y) for x in fx for y in fy if (x, y) != (fx[1], fy[1])])
    tgt = np.vstack([target_points, frame])  # (68 + 8, 2)
    don = np.vstack([donor_points, frame @ to_donor[:, :2].T + to_donor[:, 2]])
    tri = Delaunay(tgt).simplices  # (T, 3) vertex indices; duplicate points are left out
    # Per triangle the affine A (3, 2) with [x, y, 1] @ A = donor point, from its three vertices.
    ones = np.ones((len(tri), 3, 1))
    lhs = np.concatenate([tgt[tri], ones], axis=2)  # (T, 3, 3)
    ok = np.abs(np.linalg.det(lhs)) > 1e-6
    tri, lhs = tri[ok], lhs[ok]
    affines = np.linalg.solve(lhs, don[tri])  # (T, 3, 2)
    affines = np.concatenate([affines, to_donor.T[None]], axis=0)  # last: similarity fallback
    label = np.full((h, w), len(tri), np.int32)  # which affine each pixel uses
    shift = 4  # sub-pixel vertex precision for the rasteriser
    for t, corners in enumerate(tgt[tri]):
        cv2.fillConvexPoly(
            label, np.round(corners * (1 << shift)).astype(np.int32), int(t), cv2.LINE_8, shift
        )
    a = affines.astype(np.float32)[label]  # (H, W, 3, 2)
    map_x = a[..., 0, 0] * xs + a[..., 1, 0] * ys + a[..., 2, 0]
    map_y = a[..., 0, 1] * xs + a[..., 1, 1] * ys + a[..., 2, 1]
    return map_x, map_y


def warp_to_landmarks(
    donor: Face, landmarks: np.ndarray, shape: tuple[int, int], method: str = "piecewise"
) -> np.ndarray:
    """The donor image warped so that its landmarks land on ``landmarks`` in an image of ``shape``.

    Args:
        donor: the face to move.
        landmarks: ``(68, 2)`` (or any ``(N, 2)`` matching ``donor.landmarks[:N]``) target positions.
        shape: ``(H, W)`` of the output.
        method: ``"piecewise"`` (Delaunay piecewise-affine) or ``"similarity"``.

    Returns:
        ``(H, W, 3)`` uint8 RGB (bilinear sampling, reflected borders).
    """
    n = len(landmarks)
    map_x, map_y = _backward_map(
        np.asarray(landmarks, np.float64), donor.landmarks[:n].astype(np.float64), shape, method
    )
    return cv2.remap(donor.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------------------------------
# Masks and blending
# ---------------------------------------------------------------------------------------------------


def _hull_mask(
    landmarks: np.ndarray, groups: tuple[tuple[int, ...], ...], shape: tuple[int, int]
) -> np.ndarray:
    """Union of the filled convex hulls of landmark groups: uint8 ``(H, W)`` in {0, 1}."""
    mask = np.zeros(shape, np.uint8)
    for group in groups:
        hull = cv2.convexHull(np.round(landmarks[list(group)]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    return mask


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate (``pixels > 0``) or erode (``< 0``) a binary mask with a disc."""
    if pixels == 0:
        return mask
    r = abs(int(pixels))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, disc) if pixels > 0 else cv2.erode(mask, disc)


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Binary mask -> float32 weight in [0, 1] by a Gaussian with a finite ``ceil(3 sigma)`` support.

    The support is explicit so that the weight is exactly 0 farther than ``ceil(3 sigma)`` pixels from
    the mask: the ground-truth region is known.
    """
    weight = mask.astype(np.float32)
    if sigma <= 0:
        return weight
    k = 2 * int(np.ceil(3 * sigma)) + 1
    return np.clip(
        cv2.GaussianBlur(weight, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101), 0.0, 1.0
    )


def _blend(new: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``target + weight * (new - target)``, rounded to uint8; exactly ``target`` where weight is 0."""
    t = target.astype(np.float32)
    out = t + weight[..., None] * (new.astype(np.float32) - t)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _lab_transfer(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Match per-channel mean and std of ``image`` to ``reference`` in CIELAB, over ``region``.

    Reinhard et al., "Color Transfer between Images" (2001), restricted to the face.
    """
    sel = region.astype(bool)
    src = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    mu_s, sd_s = src[sel].mean(0), src[sel].std(0) + 1e-3
    mu_r, sd_r = ref[sel].mean(0), ref[sel].std(0) + 1e-3
    out = (src - mu_s) * (sd_r / sd_s) + mu_r
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _face_scale(landmarks: np.ndarray) -> float:
    """Square root of the landmark hull area: the face's size in pixels."""
    return float(np.sqrt(cv2.contourArea(cv2.convexHull(landmarks.astype(np.float32)))))


def _check_donor(target: Face, donor: Face | None, family: str) -> Face:
    if donor is None:
        raise ValueError(f"{family}: needs a donor face (target {target.name or target.identity})")
    if donor.identity == target.identity:
        raise ValueError(
            f"{family}: donor {donor.name or '?'} has the target's identity {target.identity}; "
            "use pick_donor for a face of another identity"
        )
    return donor


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


# ---------------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------------


def face_swap(
    target: Face,
    donor: Face | None,
    rng: np.random.Generator,
    warp: str | None = None,
    erode: float | None = None,
    sigma: float | None = None,
    colour_match: bool = True,
) -> Manipulation:
    """Whole-face swap: the donor's face on the target's landmarks, alpha-blended.

    1. Warp the donor onto the target's landmarks (``warp``: ``"piecewise"`` Delaunay
       piecewise-affine, or one least-squares ``"similarity"``; random when ``None``).
    2. Match colour: LAB mean/std of the warped donor to the target's, inside the face hull.
    3. Blend through the hull of the 68 landmarks, eroded by ``erode`` x face size and feathered by a
       Gaussian of ``sigma`` x face size (random in [0.02, 0.06] and [0.02, 0.05] when ``None``).

    Mask: the blend weight (> 0 exactly where pixels may change).
    """
    donor = _check_donor(target, donor, "face_swap")
    shape = target.image.shape[:2]
    warp = warp or _choice(rng, ("piecewise", "similarity"))
    erode = float(rng.uniform(0.02, 0.06)) if erode is None else float(erode)
    sigma = float(rng.uniform(0.02, 0.05)) if sigma is None else float(sigma)
    size = _face_scale(target.landmarks)
    warped = warp_to_landmarks(donor, target.landmarks, shape, warp)
    hull = _hull_mask(target.landmarks, (FACE,), shape)
    if colour_match:
        warped = _lab_transfer(warped, target.image, hull)
    weight = _feather(_grow(hull, -round(erode * size)), sigma * size)
    params = {"warp": warp, "erode": erode, "sigma": sigma, "colour_match": colour_match}
    return Manipulation(
        _blend(warped, target.image, weight), weight, "face_swap", params, donor.identity
    )


def _lasso(
    hull: np.ndarray, offset: float, jitter: float, rng: np.random.Generator, n: int = 48
) -> np.ndarray:
    """A hand-drawn loop around a convex polygon: ``n`` points pushed out radially from the centroid.

    Each boundary point moves out by ``offset * (1 + jitter * noise)`` with a smooth periodic noise in
    [-1, 1] (a few random harmonics), never less than 1 pixel. Moving points of a convex polygon outwards
    along rays from an interior point keeps the polygon inside the loop, and the loop stays within
    ``max offset`` of it.

    Returns:
        ``(n, 2)`` float64 polygon.
    """
    closed = np.vstack([hull, hull[:1]]).astype(np.float64)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    # Samples at even arc length plus the hull's own vertices, in boundary order.
    s = np.union1d(np.linspace(0.0, arc[-1], n, endpoint=False), arc[:-1])
    pts = np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)
    centre = hull.mean(0)
    radial = pts - centre
    radial /= np.linalg.norm(radial, axis=1, keepdims=True) + 1e-9
    theta = 2 * np.pi * s / arc[-1]
    k = np.arange(1, 4)[:, None]
    noise = (rng.normal(size=(3, 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
    noise /= np.abs(noise).max() + 1e-9
    push = np.maximum(offset * (1.0 + jitter * noise), 1.0)
    return pts + radial * push[:, None]


def region_swap(
    target: Face,
    donor: Face | None,
    rng: np.random.Generator,
    region: str | None = None,
    margin: float | None = None,
    jitter: float | None = None,
    feather: float | None = None,
    brightness_match: bool | None = None,
) -> Manipulation:
    """A photo-editor swap of the eyes, the nose or the mouth from a donor of another identity.

    For each part of ``region`` (both eyes are two parts), the donor is aligned by a similarity on
    that part's landmarks, then cut with a lasso: the part's hull pushed out by ``margin`` x part size
    (random in [0.1, 0.3]) with hand ``jitter`` (relative, random in [0.1, 0.5]). The lasso never
    reaches the landmarks of the other regions (its reach is capped by their distance). The paste has
    a hard edge or a slight ``feather`` (Gaussian sigma in pixels, random in [0, 1]), and at most a
    rough ``brightness_match`` (one gain on all channels; random when ``None``), no colour transfer.

    Mask: the pasted area (its feathered weight).
    """
    donor = _check_donor(target, donor, "region_swap")
    region = region or _choice(rng, tuple(REGIONS))
    if region not in REGIONS:
        raise ValueError(f"region_swap: unknown region {region!r}; known: {sorted(REGIONS)}")
    margin = float(rng.uniform(0.1, 0.3)) if margin is None else float(margin)
    jitter = float(rng.uniform(0.1, 0.5)) if jitter is None else float(jitter)
    feather = float(rng.uniform(0.0, 1.0)) if feather is None else float(feather)
    if brightness_match is None:
        brightness_match = bool(rng.random() < 0.5)
    shape = target.image.shape[:2]
    others = [i for name, idx in _REGION_LANDMARKS.items() if name != region for i in idx]
    parts = [list(part) for part in REGIONS[region]]
    hulls = [cv2.convexHull(target.landmarks[part])[:, 0] for part in parts]  # (K, 2) each
    # Room from each part to the nearest landmark of another region, less 1.5 px for rasterising.
    room = [
        min(-cv2.pointPolygonTest(hull, (float(x), float(y)), True) for x, y in target.landmarks[others])
        - 1.5
        for hull in hulls
    ]
    # The feather's reach ceil(3 sigma) and the lasso (at least 1 px out) share that room.
    feather = min(feather, max(np.floor(min(room) - 1.0), 0.0) / 3.0)
    reach = int(np.ceil(3 * feather))
    pasted = target.image.copy()
    cut = np.zeros(shape, np.uint8)
    for part, hull, free in zip(parts, hulls, room):
        t_pts, d_pts = target.landmarks[part], donor.landmarks[part]
        size = float(np.ptp(t_pts, axis=0).max())
        loop = _lasso(hull, min(margin * size, (free - reach) / (1.0 + jitter)), jitter, rng)
        part_mask = np.zeros(shape, np.uint8)
        cv2.fillPoly(part_mask, [np.round(loop * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        to_donor = similarity_transform(t_pts, d_pts).astype(np.float32)
        aligned = cv2.warpAffine(
            donor.image,
            to_donor,
            (shape[1], shape[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        sel = part_mask.astype(bool)
        pasted[sel] = aligned[sel]
        cut |= part_mask
    if brightness_match:
        sel = cut.astype(bool)
        gain = target.image[sel].astype(np.float32).mean() / max(
            pasted[sel].astype(np.float32).mean(), 1.0
        )
        pasted[sel] = np.clip(np.rint(pasted[sel] * gain), 0, 255).astype(np.uint8)
    weight = _feather(cut, feather)
    params = {
        "region": region,
        "margin": margin,
        "jitter": jitter,
        "feather": feather,
        "brightness_match": brightness_match,
    }
    return Manipulation(
        _blend(pasted, target.image, weight), weight, "region_swap", params, donor.identity
    )


# A 3x3 transposed-convolution kernel with uneven overlap. After zero insertion (stride 2) the four
# output phases (even/odd row x even/odd column) collect different kernel taps: the centre alone
# (sum 1.30), the vertical pair (0.90), the horizontal pair (0.85) and the four corners (0.95). Their
# mean gain is 1, but the unequal gains print a period-2 checkerboard on every layer (Odena et al.,
# 2016). The bilinear kernel below has all four phase gains equal to 1: a clean upsampler.
_CHECKERBOARD_KERNEL = np.array(
    [[0.20, 0.45, 0.30], [0.40, 1.30, 0.45], [0.25, 0.45, 0.20]], np.float32
)
_BILINEAR_KERNEL = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]).astype(np.float32)
# A fixed zero-mean 4x4 tile, the "slight spectral peaks" at multiples of N/4 that GAN decoders show.
_PERIODIC_TILE = np.array([[1, -1, 0, 1], [-1, 0, 1, -1], [0, 1, -1, 0], [1, -1, 0, 0]], np.float32)
_PERIODIC_TILE -= _PERIODIC_TILE.mean()


def _transposed_conv_2x(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed convolution: zero insertion then the 3x3 kernel. ``(h, w, c) -> (2h, 2w, c)``."""
    h, w = image.shape[:2]
    up = np.zeros((2 * h, 2 * w) + image.shape[2:], np.float32)
    up[::2, ::2] = image
    return cv2.filter2D(up, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def resynthesise(
    image: np.ndarray, factor: int = 4, strength: float = 0.2, peak: float = 1.0
) -> np.ndarray:
    """Down by ``factor`` (area), then back up by ``log2(factor)`` transposed-convolution layers.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        factor: a power of two >= 2.
        strength: 0 gives the clean bilinear kernel, 1 the full checkerboard kernel (linear in between).
        peak: amplitude in grey levels of the periodic 4x4 tile added at the end (0 for none).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"resynthesise: factor must be a power of two >= 2, got {factor}")
    h, w = image.shape[:2]
    ph, pw = -h % factor, -w % factor
    padded = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
    small = cv2.resize(
        padded, (padded.shape[1] // factor, padded.shape[0] // factor), interpolation=cv2.INTER_AREA
    )
    kernel = _BILINEAR_KERNEL + np.float32(strength) * (_CHECKERBOARD_KERNEL - _BILINEAR_KERNEL)
    x = small.astype(np.float32)
    for _ in range(int(np.log2(factor))):
        x = _transposed_conv_2x(x, kernel)
    reps = (x.shape[0] // 4 + 1, x.shape[1] // 4 + 1)
    x = x + np.float32(peak) * np.tile(_PERIODIC_TILE, reps)[: x.shape[0], : x.shape[1], None]
    return np.clip(np.rint(x[:h, :w]), 0, 255).astype(np.uint8)


def upsampler_resynthesis(
    target: Face,
    donor: Face | None = None,
    rng: np.random.Generator | None = None,
    region: str | None = None,
    factor: int = 4,
    strength: float | None = None,
    peak: float | None = None,
    sigma: float | None = None,
) -> Manipulation:
    """A face region re-synthesised through a GAN-like upsampler, pasted back softly.

    ``region``: ``"face"`` (hull of the 68 landmarks, eroded slightly) or one of :data:`REGIONS`
    (their hulls grown by 15% of the face size); random when ``None`` (the whole face half the time).
    The image is taken down by ``factor`` and back up by :func:`resynthesise` with checkerboard
    ``strength`` (random in [0.05, 0.2]) and periodic ``peak`` (random in [0.5, 1.5] grey levels), then
    blended through the region feathered by ``sigma`` x face size (random in [0.02, 0.04]).
    ``donor`` is ignored (the family needs none).

    Mask: the blend weight.
    """
    if rng is None:
        raise ValueError("upsampler_resynthesis: needs rng")
    if region is None:
        region = "face" if rng.random() < 0.5 else _choice(rng, tuple(REGIONS))
    strength = float(rng.uniform(0.05, 0.2)) if strength is None else float(strength)
    peak = float(rng.uniform(0.5, 1.5)) if peak is None else float(peak)
    sigma = float(rng.uniform(0.02, 0.04)) if sigma is None else float(sigma)
    shape = target.image.shape[:2]
    size = _face_scale(target.landmarks)
    if region == "face":
        area = _grow(_hull_mask(target.landmarks, (FACE,), shape), -round(0.03 * size))
    elif region in REGIONS:
        area = _grow(_hull_mask(target.landmarks, REGIONS[region], shape), round(0.15 * size))
    else:
        raise ValueError(
            f"upsampler_resynthesis: unknown region {region!r}; use 'face' or one of {sorted(REGIONS)}"
        )
    weight = _feather(area, sigma * size)
    fake = resynthesise(target.image, factor, strength, peak)
    params = {
        "region": region,
        "factor": factor,
        "strength": strength,
        "peak": peak,
        "sigma": sigma,
    }
    return Manipulation(
        _blend(fake, target.image, weight), weight, "upsampler_resynthesis", params, None
    )


def poisson_swap(
    target: Face,
    donor: Face | None,
    rng: np.random.Generator,
    warp: str | None = None,
    mixed: bool = False,
) -> Manipulation:
    """Whole-face swap by Poisson cloning (``cv2.seamlessClone``) of the aligned donor face.

    The donor is warped onto the target's landmarks (``warp`` as in :func:`face_swap`) and cloned
    through the hull of the 68 landmarks (``mixed``: ``MIXED_CLONE`` instead of ``NORMAL_CLONE``).

    Mask: OpenCV solves the Poisson equation over the whole bounding rectangle of the clone mask (the
    hull only chooses which gradients drive each pixel), so pixels between the hull and the rectangle
    move too, by tens of grey levels on textured images. The ground truth is therefore that
    rectangle, exactly where OpenCV writes; the output equals the target outside it by construction.
    """
    donor = _check_donor(target, donor, "poisson_swap")
    shape = target.image.shape[:2]
    warp = warp or _choice(rng, ("piecewise", "similarity"))
    warped = warp_to_landmarks(donor, target.landmarks, shape, warp)
    hull = _hull_mask(target.landmarks, (FACE,), shape) * np.uint8(255)
    hull[[0, -1], :] = (
        0  # OpenCV clears the border itself; clearing it here keeps the rectangle known
    )
    hull[:, [0, -1]] = 0
    x, y, w, h = cv2.boundingRect(hull)
    if w < 3 or h < 3:
        raise ValueError(
            f"poisson_swap: face hull of {target.name or target.identity} is empty or at the border"
        )
    # With this centre OpenCV's destination rectangle is the mask's own: the donor stays aligned.
    cloned = cv2.seamlessClone(
        warped,
        target.image,
        hull,
        (x + w // 2, y + h // 2),
        cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE,
    )
    mask = np.zeros(shape, np.float32)
    mask[y : y + h, x : x + w] = 1.0
    image = target.image.copy()
    image[y : y + h, x : x + w] = cloned[y : y + h, x : x + w]
    params = {"warp": warp, "mixed": mixed, "rect": [int(x), int(y), int(w), int(h)]}
    return Manipulation(image, mask, "poisson_swap", params, donor.identity)


class Family(Protocol):
    """A manipulation family: ``(target, donor, rng, **params) -> Manipulation``."""

    def __call__(
        self, target: Face, donor: Face | None, rng: np.random.Generator, **params
    ) -> Manipulation: ...


FAMILIES: dict[str, Family] = {
    "face_swap": face_swap,
    "region_swap": region_swap,
    "upsampler_resynthesis": upsampler_resynthesis,
    "poisson_swap": poisson_swap,
}


def apply_family(
    name: str, target: Face, donor: Face | None, rng: np.random.Generator, **params
) -> Manipulation:
    """Run family ``name`` of :data:`FAMILIES` (extra keyword arguments fix its parameters)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown manipulation family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name](target, donor, rng, **params)


def _landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance of landmarks ``a`` aligned onto ``b`` by a similarity, per unit of ``b``'s size."""
    m = similarity_transform(a, b)
    return float(np.sqrt(((a @ m[:, :2].T + m[:, 2] - b) ** 2).sum(1).mean()) / _face_scale(b))


def pick_donor(
    faces: FaceSource, index: int, rng: np.random.Generator, candidates: int = 1, tries: int = 16
) -> Face:
    """A random face of ``faces`` whose identity differs from that of ``faces[index]``.

    With ``candidates > 1``, draws that many donors and keeps the one whose landmarks (aligned by a
    similarity) are closest to the target's, as Face X-ray pairs faces for blending: similar pose and
    expression make swaps with fewer gross distortions. Random draws come first (up to
    ``tries * candidates``), then a scan of the source in random order. Raises ``ValueError`` when
    every face shares the target's identity.
    """
    n = len(faces)
    target = faces[index]
    pool: list[Face] = []
    for _ in range(tries * candidates if n > 1 else 0):
        face = faces[int((index + 1 + rng.integers(n - 1)) % n)]
        if face.identity != target.identity:
            pool.append(face)
            if len(pool) == candidates:
                break
    if not pool:
        scan = (faces[int(j)] for j in rng.permutation(n))
        donor = next((f for f in scan if f.identity != target.identity), None)
        if donor is None:
            raise ValueError(
                f"pick_donor: no face of an identity other than {target.identity} among {n} faces"
            )
        return donor
    if len(pool) == 1:
        return pool[0]
    return min(pool, key=lambda f: _landmark_distance(f.landmarks, target.landmarks))


# ---------------------------------------------------------------------------------------------------
# Degradations
# ---------------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what}: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
        )


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (0-100) through OpenCV (4:2:0 chroma on the true colours)."""
    _check_image(image, "jpeg")
    if not 0 <= quality <= 100:
        raise ValueError(f"jpeg: quality must be in [0, 100], got {quality}")
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("jpeg: OpenCV failed to encode")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` pixels (0: unchanged)."""
    _check_image(image, "gaussian_blur")
    if sigma < 0:
        raise ValueError(f"gaussian_blur: sigma must be >= 0, got {sigma}")
    return image.copy() if sigma == 0 else cv2.GaussianBlur(image, (0, 0), float(sigma))


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of ``std`` grey levels, rounded and clipped to uint8."""
    _check_image(image, "gaussian_noise")
    if std < 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")
    if rng is None:
        raise ValueError("gaussian_noise: needs rng")
    noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """Down by ``factor`` in (0, 1] (area averaging), then back up to the original size (bilinear)."""
    _check_image(image, "downscale")
    if not 0 < factor <= 1:
        raise ValueError(f"downscale: factor must be in (0, 1], got {factor}")
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class DegradationType:
    """A degradation with its strength parameter and the standard grid (mildest first).

    Called as ``(image, strength, rng=None)``; only noise uses ``rng``.
    """

    name: str
    parameter: str
    grid: tuple[float, ...]
    fn: Callable[[np.ndarray, float, np.random.Generator | None], np.ndarray]

    def __call__(
        self, image: np.ndarray, strength: float, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        return self.fn(image, strength, rng)


DEGRADATIONS: dict[str, DegradationType] = {
    "jpeg": DegradationType(
        "jpeg", "quality", (90, 70, 50, 30), lambda im, q, rng: jpeg(im, int(q))
    ),
    "blur": DegradationType(
        "blur", "sigma", (0.5, 1.0, 2.0, 3.0), lambda im, s, rng: gaussian_blur(im, s)
    ),
    "noise": DegradationType(
        "noise", "std", (2.0, 5.0, 10.0, 20.0), lambda im, s, rng: gaussian_noise(im, s, rng)
    ),
    "downscale": DegradationType(
        "downscale", "factor", (0.75, 0.5, 0.33, 0.25), lambda im, f, rng: downscale(im, f)
    ),
}


def degrade(
    image: np.ndarray, name: str, strength: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Apply degradation ``name`` of :data:`DEGRADATIONS` at ``strength``."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name](image, strength, rng)
