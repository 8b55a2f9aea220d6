"""Face masks from 68 landmarks: the four hull types of Face X-ray / SBI, forehead points, regions.

The blending masks of Face X-ray (Li et al., CVPR 2020) and SBI (Shiohara & Yamasaki, CVPR 2022,
the mask step of its source-target generator) are unions of filled convex hulls of landmark
groups. SBI picks one of four types with probability 1/4 each:

- ``"full"`` (a): three convex pieces: jaw + mouth, nose ridge, brows + eyes with the top of the
  jaw line;
- ``"extended"`` (b): the ``"components"`` pieces drawn with the brows pushed up by half their
  distance to the eyes (a taller mask that reaches into the forehead);
- ``"components"`` (c): eight convex pieces (two jaw halves, two cheeks, a brow-to-chin strip, two
  eye regions, the nose), whose union is a face hull with dents;
- ``"hull"`` (d): the plain convex hull of all points given (68, or 68 + 13 forehead points).

Types (a)-(c) use points 0-67 only, so the forehead matters for type (d) alone (as in SBI).

**Forehead substitution.** SBI uses dlib's 81-point predictor, whose points 68-80 follow the
hairline. No offline model ships those, so :func:`forehead_points` synthesises 13 points from the
68: an elliptic arc from temple (point 0) to temple (point 16) over the brows, ``height`` times the
eye-line-to-chin distance above the eye line. Like SBI's reordered 81-point layout they run from
image left to image right, so a horizontal flip mirrors and reverses them.

All masks are drawn with ``cv2.fillConvexPoly`` at sub-pixel precision (4 fraction bits), at the
image size, as uint8 ``{0, 1}`` or float32 ``{0., 1.}``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dfattn.data.faces import (
    JAW,
    LANDMARK_GROUPS,
    LEFT_BROW,
    LEFT_EYE,
    MOUTH,
    NOSE,
    NOSE_BOTTOM,
    RIGHT_BROW,
    RIGHT_EYE,
)
from dfattn.data.geometry import REGIONS, draw_hulls

__all__ = [
    "MASK_TYPES",
    "N_FOREHEAD",
    "MaskType",
    "extend_brows",
    "forehead_points",
    "hull_mask",
    "hull_pieces",
    "region_mask",
    "with_forehead",
]

MaskType = Literal["full", "extended", "components", "hull"]
MASK_TYPES: tuple[str, ...] = ("full", "extended", "components", "hull")
N_FOREHEAD = 13  # SBI's 81-point model: 68 + 13 hairline points

# Landmark groups of the hull pieces (indices into the iBUG-68 layout).
_CHIN = (8,)
_FULL_PIECES: tuple[tuple[int, ...], ...] = (
    JAW + MOUTH,  # jaw line closed over the mouth
    NOSE,  # nose ridge and wings
    RIGHT_BROW + LEFT_BROW + RIGHT_EYE + LEFT_EYE + (0, 1, 15, 16),  # brows/eyes + top of the jaw
)
_COMPONENT_PIECES: tuple[tuple[int, ...], ...] = (
    JAW[:9] + RIGHT_BROW[:1],  # right jaw half up to the outer brow end
    JAW[8:] + LEFT_BROW[-1:],  # left jaw half
    RIGHT_BROW[:3] + _CHIN,  # right cheek
    LEFT_BROW[-3:] + _CHIN,  # left cheek
    RIGHT_BROW[2:] + LEFT_BROW[:3] + _CHIN,  # brow-to-chin strip
    RIGHT_BROW + RIGHT_EYE + (27,) + NOSE_BOTTOM + _CHIN,  # right eye region
    LEFT_BROW + LEFT_EYE + (27,) + NOSE_BOTTOM + _CHIN,  # left eye region
    NOSE,  # nose
)

def _check_landmarks(landmarks: np.ndarray, at_least: int = 68) -> np.ndarray:
    lm = np.asarray(landmarks, np.float32)
    if lm.ndim != 2 or lm.shape[1] != 2 or len(lm) < at_least:
        raise ValueError(f"landmarks must be (N >= {at_least}, 2) (x, y) points, got {lm.shape}")
    return lm


def _up_direction(lm: np.ndarray) -> np.ndarray:
    """Unit vector from the chin side to the forehead side, perpendicular to the temple line."""
    across = lm[16] - lm[0]
    up = np.array([across[1], -across[0]], np.float32)  # rotate by -90 degrees
    if np.dot(up, lm[8] - (lm[0] + lm[16]) / 2) > 0:  # must point away from the chin
        up = -up
    return up / max(float(np.linalg.norm(up)), 1e-6)


def forehead_points(landmarks: np.ndarray, n: int = N_FOREHEAD, height: float = 0.5) -> np.ndarray:
    """``n`` synthetic forehead points standing in for points 68-80 of the 81-point model.

    An elliptic arc whose ends are the temples (points 0 and 16, excluded) and whose apex lies
    ``height`` x (distance from the temple midpoint to the chin) above the temple midpoint; with
    face thirds, the hairline sits about half the eye-to-chin distance above the eyes. Points run
    from image left (point 0's side) to image right.

    Args:
        landmarks: ``(68+, 2)`` iBUG-68 points (only 0-67 are read).
        n: number of points.
        height: apex height as a fraction of the eye-line-to-chin distance.

    Returns:
        ``(n, 2)`` float32 ``(x, y)``; may lie outside the image for tight crops.
    """
    lm = _check_landmarks(landmarks)
    centre = (lm[0] + lm[16]) / 2
    half = (lm[16] - lm[0]) / 2
    up = _up_direction(lm) * (height * float(np.linalg.norm(lm[8] - centre)))
    theta = np.linspace(0.0, np.pi, n + 2, dtype=np.float32)[1:-1, None]  # (n, 1)
    return (centre - np.cos(theta) * half + np.sin(theta) * up).astype(np.float32)


def with_forehead(landmarks: np.ndarray) -> np.ndarray:
    """``(81, 2)``: the 68 points followed by the 13 synthetic forehead points."""
    lm = _check_landmarks(landmarks)[:68]
    return np.concatenate([lm, forehead_points(lm)])


def extend_brows(landmarks: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """The 68 points with each brow point pushed up by ``factor`` x its distance to its eye centre
    (the "extended" mask of Face X-ray / SBI, type (b))."""
    lm = _check_landmarks(landmarks)[:68].copy()
    up = _up_direction(lm)
    for brow, eye in ((RIGHT_BROW, RIGHT_EYE), (LEFT_BROW, LEFT_EYE)):
        b = lm[list(brow)]
        dist = np.linalg.norm(b - lm[list(eye)].mean(0), axis=1, keepdims=True)  # (5, 1)
        lm[list(brow)] = b + factor * dist * up
    return lm


def hull_pieces(landmarks: np.ndarray, kind: MaskType = "hull") -> list[np.ndarray]:
    """The point sets whose filled convex hulls make a mask of type ``kind``.

    Args:
        landmarks: ``(68, 2)`` or ``(81, 2)`` points; types other than ``"hull"`` read 0-67 only.
        kind: one of :data:`MASK_TYPES`.

    Returns:
        list of ``(k, 2)`` float32 point sets.
    """
    lm = _check_landmarks(landmarks)
    if kind == "hull":
        return [lm]
    if kind == "full":
        groups = _FULL_PIECES
    elif kind == "components":
        groups = _COMPONENT_PIECES
    elif kind == "extended":
        lm, groups = extend_brows(lm), _COMPONENT_PIECES
    else:
        raise ValueError(f"unknown mask type {kind!r}; use one of {MASK_TYPES}")
    return [lm[list(g)] for g in groups]


def hull_mask(
    landmarks: np.ndarray,
    shape: tuple[int, int],
    kind: MaskType = "hull",
    dtype: type = np.uint8,
) -> np.ndarray:
    """Mask of type ``kind`` (see module docstring) at image size ``shape = (H, W)``.

    Returns:
        ``(H, W)`` ``dtype`` (uint8 or float32) with values in {0, 1}.
    """
    mask = np.zeros(shape[:2], np.uint8)
    draw_hulls(mask, hull_pieces(landmarks, kind))
    return mask if dtype == np.uint8 else mask.astype(dtype)


def region_mask(
    landmarks: np.ndarray,
    shape: tuple[int, int],
    region: str,
    margin: float = 0.0,
    dtype: type = np.uint8,
) -> np.ndarray:
    """Convex hull of a facial region (``"right_eye"``, ``"left_eye"``, ``"eyes"``, ``"nose"``,
    ``"mouth"``, ``"face"``, or any group of :data:`~dfattn.data.faces.LANDMARK_GROUPS`).

    Args:
        margin: grow each part about its centroid by this fraction of its size (0.2 -> 20 %).

    Returns:
        ``(H, W)`` ``dtype`` mask with values in {0, 1}.
    """
    groups = REGIONS.get(region) or (
        (LANDMARK_GROUPS[region],) if region in LANDMARK_GROUPS else None
    )
    if groups is None:
        known = sorted(set(REGIONS) | set(LANDMARK_GROUPS))
        raise ValueError(f"unknown face region {region!r}; known: {known}")
    lm = _check_landmarks(landmarks)
    pieces = []
    for g in groups:
        pts = lm[list(g)]
        centre = pts.mean(0)
        pieces.append(centre + (pts - centre) * (1.0 + margin))
    mask = draw_hulls(np.zeros(shape[:2], np.uint8), pieces)
    return mask if dtype == np.uint8 else mask.astype(dtype)
