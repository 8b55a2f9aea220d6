"""Held-out manipulation families and image degradations, for evaluation only.

Detectors in this book train on self-blended pseudo-fakes (SBI): a face blended with a changed
copy of itself. Whether they generalise is measured here, on manipulations they never saw, made
from the landmarks of :class:`~dfattn.data.faces.Face` records with OpenCV and NumPy:

- :func:`face_swap`: a donor of another identity warped onto the target's landmarks
  (piecewise-affine over a Delaunay triangulation, or one similarity), colour-matched in LAB and
  alpha-blended through a soft face-hull mask (the classic DeepFakes / FaceSwap pipeline);
- :func:`region_swap`: the donor's eyes, nose or mouth cut with a jittery lasso and pasted as in a
  photo editor (hard or barely feathered edge, at most a rough brightness match);
- :func:`upsampler_resynthesis`: a face region re-synthesised at a quarter of the resolution and
  upsampled by transposed convolutions with uneven kernel overlap, which print the periodic
  checkerboard of GAN decoders (Odena et al., "Deconvolution and Checkerboard Artifacts", Distill
  2016) and its spectral peaks (Durall et al., "Watch your Up-Convolution", CVPR 2020);
- :func:`poisson_swap`: a whole-face swap by Poisson cloning, ``cv2.seamlessClone`` (Pérez et al.,
  "Poisson Image Editing", SIGGRAPH 2003).

Every family returns a :class:`Manipulation` whose ``mask`` is the exact ground truth: float32
``(H, W)`` in [0, 1], zero wherever the output equals the target by construction, so every
changed pixel lies inside ``mask > 0``.

Degradations (:data:`DEGRADATIONS`) act on whole uint8 RGB images after manipulation, identically
on real images; each carries the strength grid of the robustness table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from dfattn.data.faces import LEFT_EYE, MOUTH, NOSE, OUTER_LIPS, RIGHT_EYE, Face, FaceSource
from dfattn.data.geometry import (
    face_scale,
    lab_colour_transfer,
    similarity_transform,
    warp_to_landmarks,
)

__all__ = [
    "DEGRADATIONS",
    "FAMILIES",
    "SWAP_REGIONS",
    "DegradationType",
    "Family",
    "Manipulation",
    "apply_family",
    "blur_image",
    "degrade_image",
    "downscale",
    "face_swap",
    "gaussian_noise",
    "jpeg",
    "pick_donor",
    "poisson_swap",
    "region_swap",
    "resynthesise",
    "upsampler_resynthesis",
]

# Regions swapped by hand (or re-synthesised alone): landmark groups, one convex part each (the
# mouth by its outer lips only: the inner lips lie inside them). Not geometry.REGIONS, whose "mouth"
# holds every mouth point.
SWAP_REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "eyes": (RIGHT_EYE, LEFT_EYE),
    "nose": (NOSE,),
    "mouth": (OUTER_LIPS,),  # the inner lips lie inside the outer ones
}
# All landmarks of each region: a lasso around one region must not reach those of another.
_REGION_LANDMARKS: dict[str, tuple[int, ...]] = {
    "eyes": RIGHT_EYE + LEFT_EYE,
    "nose": NOSE,
    "mouth": MOUTH,
}
FACE = tuple(range(68))  # hull of the iBUG-68 points (jaw and brows): face-swap tools' inner face


@dataclass
class Manipulation:
    """A manipulated image with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, the target's size.
        mask: ``(H, W)`` float32 in [0, 1], the weight of the new content; exactly 0 where the
            image equals the target (every changed pixel has ``mask > 0``).
        family: its name in :data:`FAMILIES`.
        params: the parameters used (drawn from ``rng`` unless given), JSON-friendly.
        donor_identity: the donor's identity, ``None`` for donor-free families.
    """

    image: np.ndarray
    mask: np.ndarray
    family: str
    params: dict = field(default_factory=dict)
    donor_identity: int | None = None


# ------------------------------------------------------------------------------------------------
# Masks and blending
# ------------------------------------------------------------------------------------------------


def _hull_mask(face: Face, groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Union of the filled convex hulls of landmark groups: uint8 ``(H, W)`` in {0, 1}."""
    mask = np.zeros(face.image.shape[:2], np.uint8)
    for group in groups:
        points = np.round(face.landmarks[list(group)]).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(points), 1)
    if not mask.any():
        raise ValueError(f"{face.name or face.identity}: landmark hull lies outside the image")
    return mask


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate (``pixels > 0``) or erode (``< 0``) a binary mask with a disc."""
    if pixels == 0:
        return mask
    r = abs(int(pixels))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, disc) if pixels > 0 else cv2.erode(mask, disc)


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Binary mask -> float32 weight in [0, 1]: a Gaussian blur with support ``ceil(3 sigma)``.

    The explicit support keeps the weight exactly 0 farther than ``ceil(3 sigma)`` pixels from the
    mask, so the ground-truth region is known.
    """
    weight = mask.astype(np.float32)
    if sigma <= 0:
        return weight
    k = 2 * int(np.ceil(3 * sigma)) + 1
    blurred = cv2.GaussianBlur(weight, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(blurred, 0.0, 1.0)


def _blend(new: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``target + weight * (new - target)`` in uint8: exactly ``target`` where the weight is 0."""
    t = target.astype(np.float32)
    out = t + weight[..., None] * (new.astype(np.float32) - t)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check_donor(target: Face, donor: Face | None, family: str) -> Face:
    if donor is None:
        raise ValueError(f"{family}: needs a donor face (target {target.name or target.identity})")
    if donor.identity == target.identity:
        raise ValueError(
            f"{family}: donor {donor.name or '?'} has the target's identity {target.identity}; "
            "use pick_donor for a face of another identity"
        )
    return donor


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------------------------------
# Families
# ------------------------------------------------------------------------------------------------


def face_swap(
    target: Face, donor: Face | None, rng: np.random.Generator,
    warp: str | None = None,
    erode: float | None = None,
    sigma: float | None = None,
    colour_match: bool = True,
) -> Manipulation:
    """Whole-face swap: the donor's face on the target's landmarks, alpha-blended.

    1. Warp the donor onto the target's landmarks (``warp``: ``"piecewise"`` Delaunay
       piecewise-affine or one least-squares ``"similarity"``; random when ``None``).
    2. Match colours: LAB mean and std of the warped donor to the target's, inside the face hull.
    3. Blend through the hull of the 68 landmarks eroded by ``erode`` x face size and feathered
       by a Gaussian of ``sigma`` x face size (random in [0.02, 0.06] and [0.02, 0.05]).

    Mask: the blend weight.
    """
    donor = _check_donor(target, donor, "face_swap")
    warp = warp or _choice(rng, ("piecewise", "similarity"))
    erode = float(rng.uniform(0.02, 0.06)) if erode is None else float(erode)
    sigma = float(rng.uniform(0.02, 0.05)) if sigma is None else float(sigma)
    size = face_scale(target.landmarks)
    hull = _hull_mask(target, (FACE,))
    warped = warp_to_landmarks(donor, target.landmarks, hull.shape, warp)
    if colour_match:
        warped = lab_colour_transfer(warped, target.image, hull)
    weight = _feather(_grow(hull, -round(erode * size)), sigma * size)
    image = _blend(warped, target.image, weight)
    params = {"warp": warp, "erode": erode, "sigma": sigma, "colour_match": colour_match}
    return Manipulation(image, weight, "face_swap", params, donor.identity)


def _lasso(
    hull: np.ndarray, offset: float, jitter: float, rng: np.random.Generator, n: int = 48
) -> np.ndarray:
    """A hand-drawn loop around a convex polygon: ~``n`` boundary points pushed out radially.

    Each point moves away from the centroid by ``offset * (1 + jitter * noise)``, at least 1 px,
    with a smooth periodic ``noise`` in [-1, 1] (three random harmonics). Pushing the points of a
    convex polygon outwards along rays from an interior point keeps the polygon inside the loop,
    and the loop within the largest push of it.

    Returns:
        ``(K, 2)`` float64 polygon.
    """
    closed = np.vstack([hull, hull[:1]]).astype(np.float64)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    s = np.union1d(np.linspace(0.0, arc[-1], n, endpoint=False), arc[:-1])  # keeps the vertices
    points = np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)
    radial = points - hull.mean(0)
    radial /= np.linalg.norm(radial, axis=1, keepdims=True) + 1e-9
    theta = 2 * np.pi * s / arc[-1]
    harmonics = np.arange(1, 4)[:, None] * theta + rng.uniform(0, 2 * np.pi, (3, 1))
    noise = (rng.normal(size=(3, 1)) * np.cos(harmonics)).sum(0)
    noise /= np.abs(noise).max() + 1e-9
    push = np.maximum(offset * (1.0 + jitter * noise), 1.0)
    return points + radial * push[:, None]


def region_swap(
    target: Face, donor: Face | None, rng: np.random.Generator,
    region: str | None = None,
    margin: float | None = None,
    jitter: float | None = None,
    feather: float | None = None,
    brightness_match: bool | None = None,
) -> Manipulation:
    """A photo-editor swap of the eyes, the nose or the mouth from a donor of another identity.

    ``region`` is random when ``None``. For each part (both eyes are two parts), the donor is
    placed by the similarity of that part's landmarks and cut with a lasso: the part's hull
    pushed out by ``margin`` x part size (random in [0.1, 0.3]) with hand ``jitter`` (relative,
    random in [0.1, 0.5]). The paste has a hard edge or a slight ``feather`` (Gaussian sigma in
    pixels, random in [0, 1]) and at most a rough ``brightness_match`` (one gain on all channels,
    random when ``None``), no colour transfer. Lasso and feather stay 1.5 px short of the other
    regions' landmarks: where those are close, margin and feather shrink (the lasso keeps 1 px).

    Mask: the pasted area (its feathered weight).
    """
    donor = _check_donor(target, donor, "region_swap")
    region = region or _choice(rng, tuple(SWAP_REGIONS))
    if region not in SWAP_REGIONS:
        raise ValueError(f"region_swap: unknown region {region!r}; known: {sorted(SWAP_REGIONS)}")
    margin = float(rng.uniform(0.1, 0.3)) if margin is None else float(margin)
    jitter = float(rng.uniform(0.1, 0.5)) if jitter is None else float(jitter)
    feather = float(rng.uniform(0.0, 1.0)) if feather is None else float(feather)
    if brightness_match is None:
        brightness_match = bool(rng.random() < 0.5)
    h, w = target.image.shape[:2]
    others = target.landmarks[
        [i for r, idx in _REGION_LANDMARKS.items() if r != region for i in idx]
    ]
    parts = [list(part) for part in SWAP_REGIONS[region]]
    hulls = [cv2.convexHull(target.landmarks[part])[:, 0] for part in parts]  # (K, 2) each
    # Room from each part to the nearest landmark of another region, less 1.5 px of rasterising.
    room = [
        min(-cv2.pointPolygonTest(hull, (float(x), float(y)), True) for x, y in others) - 1.5
        for hull in hulls
    ]
    # The feather's reach ceil(3 sigma) and the lasso (at least 1 px out) share that room.
    feather = float(min(feather, max(np.floor(min(room) - 1.0), 0.0) / 3.0))
    reach = int(np.ceil(3 * feather))
    pasted = target.image.copy()
    cut = np.zeros((h, w), np.uint8)
    for part, hull, free in zip(parts, hulls, room):
        size = float(np.ptp(target.landmarks[part], axis=0).max())
        loop = _lasso(hull, min(margin * size, (free - reach) / (1.0 + jitter)), jitter, rng)
        part_cut = np.zeros((h, w), np.uint8)
        cv2.fillPoly(part_cut, [np.round(loop * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        to_target = similarity_transform(donor.landmarks[part], target.landmarks[part])
        placed = cv2.warpAffine(donor.image, to_target, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        inside = part_cut.astype(bool)
        pasted[inside] = placed[inside]
        cut |= part_cut
    if brightness_match:
        inside = cut.astype(bool)
        gain = target.image[inside].mean() / max(pasted[inside].mean(), 1.0)
        pasted[inside] = np.clip(np.rint(pasted[inside] * gain), 0, 255).astype(np.uint8)
    weight = _feather(cut, feather)
    image = _blend(pasted, target.image, weight)
    params = {
        "region": region,
        "margin": margin,
        "jitter": jitter,
        "feather": feather,
        "brightness_match": brightness_match,
    }
    return Manipulation(image, weight, "region_swap", params, donor.identity)


# A 3x3 transposed-convolution kernel with uneven overlap. After zero insertion (stride 2) the four
# output phases (even/odd row x even/odd column) collect different taps: the centre alone (gain
# 1.30), the horizontal pair (0.85), the vertical pair (0.90) and the four corners (0.95). The mean
# gain is 1, but the unequal gains print a period-2 checkerboard at every layer (Odena et al.). All
# phase gains of the bilinear kernel are 1: a clean upsampler.
_CHECKERBOARD_KERNEL = np.array(
    [[0.20, 0.45, 0.30], [0.40, 1.30, 0.45], [0.25, 0.45, 0.20]], np.float32
)
_BILINEAR_KERNEL = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]).astype(np.float32)
# A fixed zero-mean 4x4 tile: slight spectral peaks at multiples of N/4, as in GAN images.
_PERIODIC_TILE = np.array([[1, -1, 0, 1], [-1, 0, 1, -1], [0, 1, -1, 0], [1, -1, 0, 0]], np.float32)
_PERIODIC_TILE -= _PERIODIC_TILE.mean()


def _transposed_conv_2x(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed convolution: zero insertion, then the 3x3 kernel."""
    h, w = image.shape[:2]
    up = np.zeros((2 * h, 2 * w) + image.shape[2:], np.float32)  # (2h, 2w, c)
    up[::2, ::2] = image
    return cv2.filter2D(up, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def resynthesise(
    image: np.ndarray, factor: int = 4, strength: float = 0.2, peak: float = 1.0
) -> np.ndarray:
    """Down by ``factor`` (area), then back up by ``log2(factor)`` transposed convolutions.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        factor: a power of two, at least 2.
        strength: 0 uses the clean bilinear kernel, 1 the full checkerboard kernel (linear blend).
        peak: amplitude in grey levels of the periodic 4x4 tile added at the end (0: none).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"resynthesise: factor must be a power of two >= 2, got {factor}")
    h, w = image.shape[:2]
    padded = cv2.copyMakeBorder(image, 0, -h % factor, 0, -w % factor, cv2.BORDER_REFLECT_101)
    size = (padded.shape[1] // factor, padded.shape[0] // factor)
    x = cv2.resize(padded, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    kernel = _BILINEAR_KERNEL + np.float32(strength) * (_CHECKERBOARD_KERNEL - _BILINEAR_KERNEL)
    for _ in range(factor.bit_length() - 1):
        x = _transposed_conv_2x(x, kernel)
    tile = np.tile(_PERIODIC_TILE, (x.shape[0] // 4 + 1, x.shape[1] // 4 + 1))
    x = x + np.float32(peak) * tile[: x.shape[0], : x.shape[1], None]
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
    """A face region re-synthesised through a GAN-like upsampler and pasted back softly.

    ``region``: ``"face"`` (the hull of the 68 landmarks, eroded by 3% of the face size) or one of
    :data:`SWAP_REGIONS` (hulls grown by 15% of the face size); when ``None``, the whole face half the
    time. The image goes down by ``factor`` and back up through :func:`resynthesise` with
    checkerboard ``strength`` (random in [0.05, 0.2]) and periodic ``peak`` (random in [0.5, 1.5]
    grey levels), and is blended through the region feathered by ``sigma`` x face size (random in
    [0.02, 0.04]). ``donor`` is ignored: the family needs none.

    Mask: the blend weight.
    """
    if rng is None:
        raise ValueError("upsampler_resynthesis: needs rng")
    if region is None:
        region = "face" if rng.random() < 0.5 else _choice(rng, tuple(SWAP_REGIONS))
    strength = float(rng.uniform(0.05, 0.2)) if strength is None else float(strength)
    peak = float(rng.uniform(0.5, 1.5)) if peak is None else float(peak)
    sigma = float(rng.uniform(0.02, 0.04)) if sigma is None else float(sigma)
    size = face_scale(target.landmarks)
    if region == "face":
        area = _grow(_hull_mask(target, (FACE,)), -round(0.03 * size))
    elif region in SWAP_REGIONS:
        area = _grow(_hull_mask(target, SWAP_REGIONS[region]), round(0.15 * size))
    else:
        known = ["face", *sorted(SWAP_REGIONS)]
        raise ValueError(f"upsampler_resynthesis: unknown region {region!r}; known: {known}")
    weight = _feather(area, sigma * size)
    image = _blend(resynthesise(target.image, factor, strength, peak), target.image, weight)
    params = {
        "region": region,
        "factor": factor,
        "strength": strength,
        "peak": peak,
        "sigma": sigma,
    }
    return Manipulation(image, weight, "upsampler_resynthesis", params, None)


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

    Mask: OpenCV solves the Poisson equation over the whole bounding rectangle of the clone mask
    (the hull only chooses which gradients drive each pixel), so pixels between the hull and the
    rectangle move too, by tens of grey levels on textured images. The ground truth is therefore
    that rectangle, exactly where OpenCV writes; outside it the output is the target's.
    """
    donor = _check_donor(target, donor, "poisson_swap")
    warp = warp or _choice(rng, ("piecewise", "similarity"))
    hull = _hull_mask(target, (FACE,)) * np.uint8(255)
    hull[[0, -1], :] = 0  # OpenCV clears the image border of the mask; clear it here too
    hull[:, [0, -1]] = 0
    x, y, w, h = cv2.boundingRect(hull)
    if w < 3 or h < 3:
        raise ValueError(
            f"poisson_swap: face hull of {target.name or target.identity} is degenerate"
        )
    warped = warp_to_landmarks(donor, target.landmarks, hull.shape, warp)
    # With this centre OpenCV's destination rectangle is the mask's own: the donor stays aligned.
    clone = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    cloned = cv2.seamlessClone(warped, target.image, hull, (x + w // 2, y + h // 2), clone)
    image = target.image.copy()
    image[y : y + h, x : x + w] = cloned[y : y + h, x : x + w]
    mask = np.zeros(hull.shape, np.float32)
    mask[y : y + h, x : x + w] = 1.0
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
    """Run family ``name`` of :data:`FAMILIES`; keyword arguments fix its parameters."""
    if name not in FAMILIES:
        raise ValueError(f"unknown manipulation family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name](target, donor, rng, **params)


def _landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance of landmarks ``a`` aligned onto ``b`` by a similarity, per unit of face size."""
    m = similarity_transform(a, b)
    return float(np.sqrt(((a @ m[:, :2].T + m[:, 2] - b) ** 2).sum(1).mean()) / face_scale(b))


def pick_donor(
    faces: FaceSource, index: int, rng: np.random.Generator, candidates: int = 1, tries: int = 16
) -> Face:
    """A random face of ``faces`` whose identity differs from that of ``faces[index]``.

    With ``candidates > 1``, draws that many donors and keeps the one whose landmarks (aligned by
    a similarity) are closest to the target's, as Face X-ray pairs faces: similar pose and
    expression make swaps with fewer gross distortions. Random draws come first (at most
    ``tries * candidates``), then a scan in random order. Raises ``ValueError`` when every face
    shares the target's identity.
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
        pool = [f for f in scan if f.identity != target.identity][:1]
        if not pool:
            raise ValueError(
                f"pick_donor: no face of an identity other than {target.identity} among {n} faces"
            )
    if len(pool) == 1:
        return pool[0]
    return min(pool, key=lambda f: _landmark_distance(f.landmarks, target.landmarks))


# ------------------------------------------------------------------------------------------------
# Degradations
# ------------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what}: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
        )


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (0-100) through OpenCV, in true colours (RGB <-> BGR)."""
    _check_image(image, "jpeg")
    if not 0 <= quality <= 100:
        raise ValueError(f"jpeg: quality must be in [0, 100], got {quality}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("jpeg: OpenCV failed to encode the image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def blur_image(image: np.ndarray, sigma: float) -> np.ndarray:
    """One uint8 RGB image blurred by a Gaussian of std ``sigma`` pixels (0: unchanged).

    NumPy/OpenCV, for the held-out robustness grid; AGDA's blur of torch batches is
    :func:`dfattn.models.agda.blur_batch`.
    """
    _check_image(image, "blur_image")
    if sigma < 0:
        raise ValueError(f"blur_image: sigma must be >= 0, got {sigma}")
    return image.copy() if sigma == 0 else cv2.GaussianBlur(image, (0, 0), float(sigma))


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of ``std`` grey levels, rounded and clipped to uint8."""
    _check_image(image, "gaussian_noise")
    if std < 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")
    if rng is None:
        raise ValueError("gaussian_noise: needs rng")
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """Down by ``factor`` in (0, 1] (area averaging), then back up to the same size (bilinear)."""
    _check_image(image, "downscale")
    if not 0 < factor <= 1:
        raise ValueError(f"downscale: factor must be in (0, 1], got {factor}")
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    small_size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class DegradationType:
    """A degradation, the name of its strength parameter and its standard grid (mildest first).

    Called as ``(image, strength, rng=None)``; only noise needs ``rng``.
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
        "blur", "sigma", (0.5, 1.0, 2.0, 3.0), lambda im, s, rng: blur_image(im, s)
    ),
    "noise": DegradationType(
        "noise", "std", (2.0, 5.0, 10.0, 20.0), lambda im, s, rng: gaussian_noise(im, s, rng)
    ),
    "downscale": DegradationType(
        "downscale", "factor", (0.75, 0.5, 0.33, 0.25), lambda im, f, rng: downscale(im, f)
    ),
}


def degrade_image(
    image: np.ndarray, name: str, strength: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Apply degradation ``name`` of :data:`DEGRADATIONS` at ``strength`` to one uint8 RGB image.

    Not AGDA's down-blur-up degradation of a torch batch (:func:`dfattn.models.agda.agda_degrade`).
    """
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name](image, strength, rng)
