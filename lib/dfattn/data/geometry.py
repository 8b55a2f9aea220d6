"""Face geometry shared by the training blender and the held-out manipulation families.

Both the self-blended pseudo-fakes the detectors train on (:mod:`dfattn.data.blending`) and the
held-out families they are tested on (:mod:`dfattn.data.manipulations`) move faces by their
landmarks, match colours and fill landmark hulls. Those pieces live here, so that training data
does not depend on test code, nor the other way round:

- :func:`similarity_transform` (Umeyama's least-squares similarity), :func:`backward_map` and
  :func:`warp_to_landmarks` (similarity or Delaunay piecewise-affine warps);
- :func:`lab_colour_transfer` (Reinhard et al.'s colour transfer in CIELAB, over a region);
- :func:`face_scale` (the square root of the landmark hull's area);
- :func:`draw_hulls` (sub-pixel filled convex hulls, :data:`SUBPIXEL_BITS` fraction bits) and
  :data:`REGIONS` (the named landmark groups of the iBUG-68 layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.spatial import Delaunay

from dfattn.data.faces import LEFT_EYE, MOUTH, NOSE, RIGHT_EYE, Face

__all__ = [
    "REGIONS",
    "SUBPIXEL",
    "SUBPIXEL_BITS",
    "backward_map",
    "draw_hulls",
    "face_scale",
    "lab_colour_transfer",
    "similarity_transform",
    "warp_to_landmarks",
]

SUBPIXEL_BITS = 4  # fixed-point fraction bits of every sub-pixel polygon fill (cv2's ``shift``)
SUBPIXEL = float(1 << SUBPIXEL_BITS)  # points are multiplied by this before filling

# Named regions as landmark groups (indices into the iBUG-68 layout), one convex hull each.
REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "right_eye": (RIGHT_EYE,),
    "left_eye": (LEFT_EYE,),
    "eyes": (RIGHT_EYE, LEFT_EYE),
    "nose": (NOSE,),
    "mouth": (MOUTH,),
    "face": (tuple(range(68)),),
}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns"
    (TPAMI 1991), in closed form by an SVD; deterministic, unlike OpenCV's robust estimators.

    Args:
        src, dst: ``(N, 2)`` corresponding points, ``N >= 2``.

    Returns:
        ``(2, 3)`` float64 ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("similarity_transform: the source points all coincide")
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))  # SVD of the (2, 2) cross-covariance
    d = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])  # no reflection
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def backward_map(
    target_points: np.ndarray, donor_points: np.ndarray, shape: tuple[int, int], method: str
) -> tuple[np.ndarray, np.ndarray]:
    """For each target pixel, where to sample the donor: ``(map_x, map_y)``, float32 ``(H, W)``.

    ``"similarity"``: one least-squares similarity. ``"piecewise"``: one affine map per triangle
    of a Delaunay triangulation of the target landmarks; outside their hull, a ring of triangles
    joins each hull edge to a copy pushed far beyond the image whose points follow the similarity.
    The map is continuous everywhere and exactly piecewise-affine inside the hull.
    """
    h, w = shape
    to_donor = similarity_transform(target_points, donor_points)  # (2, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if method == "similarity":
        a = to_donor.astype(np.float32)
        return a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    if method != "piecewise":
        raise ValueError(f"unknown warp method {method!r}; use 'piecewise' or 'similarity'")
    n = len(target_points)
    inner = Delaunay(target_points).simplices  # (T, 3) vertex indices; duplicates left out
    ring = cv2.convexHull(target_points.astype(np.float32), returnPoints=False)[:, 0]  # (m,)
    centre = target_points[ring].mean(0)
    spread = np.linalg.norm(target_points[ring] - centre, axis=1).min()
    outer = centre + (target_points[ring] - centre) * (1.0 + 2.0 * np.hypot(h, w) / spread)
    tgt = np.vstack([target_points, outer])  # (n + m, 2)
    don = np.vstack([donor_points, outer @ to_donor[:, :2].T + to_donor[:, 2]])
    far = n + np.arange(len(ring))
    nxt, far_nxt = np.roll(ring, -1), np.roll(far, -1)
    outside = np.concatenate([np.stack([ring, nxt, far_nxt], 1), np.stack([ring, far_nxt, far], 1)])
    tri = np.concatenate([outside, inner])  # the landmark triangles are drawn last
    # Per triangle the affine A (3, 2) with [x, y, 1] @ A = donor point, from its three vertices.
    lhs = np.concatenate([tgt[tri], np.ones((len(tri), 3, 1))], axis=2)  # (T, 3, 3)
    keep = np.abs(np.linalg.det(lhs)) > 1e-6
    tri, lhs = tri[keep], lhs[keep]
    affines = np.linalg.solve(lhs, don[tri])  # (T, 3, 2)
    affines = np.concatenate([affines, to_donor.T[None]])  # last: the similarity, for safety
    label = np.full((h, w), len(tri), np.int32)  # which affine each pixel follows
    for t, corners in enumerate(tgt[tri]):
        cv2.fillConvexPoly(label, np.round(corners * SUBPIXEL).astype(np.int32), t, cv2.LINE_8,
                          SUBPIXEL_BITS)
    a = affines.astype(np.float32)[label]  # (H, W, 3, 2)
    map_x = a[..., 0, 0] * xs + a[..., 1, 0] * ys + a[..., 2, 0]
    map_y = a[..., 0, 1] * xs + a[..., 1, 1] * ys + a[..., 2, 1]
    return map_x, map_y


def warp_to_landmarks(
    donor: Face, landmarks: np.ndarray, shape: tuple[int, int], method: str = "piecewise"
) -> np.ndarray:
    """The donor image warped so that its landmarks land on ``landmarks``, in an image of ``shape``.

    Args:
        donor: the face to move (any size).
        landmarks: ``(68, 2)`` target positions of the donor's landmarks.
        shape: ``(H, W)`` of the output.
        method: ``"piecewise"`` (Delaunay piecewise-affine) or ``"similarity"``.

    Returns:
        ``(H, W, 3)`` uint8 RGB (bilinear sampling, reflected borders).
    """
    target_points = np.asarray(landmarks, np.float64)
    donor_points = donor.landmarks.astype(np.float64)
    map_x, map_y = backward_map(target_points, donor_points, shape, method)
    return cv2.remap(donor.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def lab_colour_transfer(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Match the per-channel mean and std of ``image`` to ``reference`` in CIELAB over ``region``.

    Reinhard et al., "Color Transfer between Images" (IEEE CG&A 2001), restricted to the face:
    ``(x - mu_image) * sd_reference / sd_image + mu_reference`` per LAB channel. On 8-bit LAB that
    map is a lookup table, so the whole transfer is three colour conversions, two masked
    ``cv2.meanStdDev`` and one ``cv2.LUT``.

    Args:
        image, reference: ``(H, W, 3)`` uint8 RGB of one size.
        region: ``(H, W)`` mask, non-zero where the statistics are taken.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    inside = (np.asarray(region) > 0).astype(np.uint8)
    if not inside.any():
        raise ValueError("lab_colour_transfer: the region is empty")
    src = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
    mu_s, sd_s = (v[:, 0] for v in cv2.meanStdDev(src, mask=inside))
    mu_r, sd_r = (v[:, 0] for v in cv2.meanStdDev(ref, mask=inside))
    levels = np.arange(256, dtype=np.float64)[:, None]  # (256, 1)
    lut = (levels - mu_s) * ((sd_r + 1e-3) / (sd_s + 1e-3)) + mu_r  # (256, 3)
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    return cv2.cvtColor(cv2.LUT(src, lut), cv2.COLOR_LAB2RGB)


def face_scale(landmarks: np.ndarray) -> float:
    """Square root of the landmark hull area: the face's size in pixels."""
    return float(np.sqrt(cv2.contourArea(cv2.convexHull(landmarks.astype(np.float32)))))


def draw_hulls(
    canvas: np.ndarray,
    pieces: Sequence[np.ndarray],
    value: float = 1,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Fill the convex hull of every point set into ``canvas`` (in place) and return it.

    ``offset`` ``(x0, y0)`` is subtracted from the points (to draw into a crop of the image).
    """
    shift = np.asarray(offset, np.float32)
    for points in pieces:
        fixed = np.round((np.asarray(points, np.float32) - shift) * SUBPIXEL).astype(np.int32)
        cv2.fillConvexPoly(canvas, cv2.convexHull(fixed), value, cv2.LINE_8, SUBPIXEL_BITS)
    return canvas
