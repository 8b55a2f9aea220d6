"""LAA-Net targets: blending boundary, Gaussian radius, vulnerable points, heatmap, consistency."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfattn.data.targets import (
    blending_boundary,
    consistency_target,
    draw_gaussians,
    gaussian_radius,
    heatmap_target,
    laanet_targets,
    run_lengths,
    vulnerable_points,
)


def soft_disc(size: int = 128, radius: float = 36.0, blur: float = 4.0) -> np.ndarray:
    """A blurred disc: 1 inside, 0 outside, a smooth transition of width ~ ``blur`` at the rim."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    return (0.5 * (1 - np.tanh((r - radius) / blur))).astype(np.float32)


def test_boundary_is_one_at_half_and_zero_away_from_the_edge():
    ramp = np.tile(np.linspace(0, 1, 5, dtype=np.float32), (3, 1))  # M = 0, .25, .5, .75, 1
    np.testing.assert_allclose(blending_boundary(ramp)[0], [0, 0.75, 1, 0.75, 0], atol=1e-6)
    mask = soft_disc()
    b = blending_boundary(mask)
    c = 63.5
    assert b[int(c), int(c)] < 1e-6  # deep inside, M = 1
    assert b[0, 0] < 1e-6  # far outside, M = 0
    on_rim = np.abs(mask - 0.5) < 0.02
    assert on_rim.any() and b[on_rim].min() > 0.99
    assert b.max() <= 1.0 and b.min() >= 0.0


def test_ratio_scales_the_ring_instead_of_filling_it():
    mask = soft_disc()
    ring = blending_boundary(mask, ratio=0.25)
    np.testing.assert_allclose(ring, 0.25 * blending_boundary(mask), atol=1e-6)
    # B of the scaled mask r M is a blob: largest at the centre, not on the rim (r <= 0.5 never reaches 0.5).
    blob = blending_boundary(0.25 * mask)
    assert blob[64, 64] == pytest.approx(4 * 0.25 * 0.75, abs=1e-4)
    assert ring[64, 64] < 1e-6


def test_mask_outside_unit_range_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blending_boundary(np.full((4, 4), 1.5, np.float32))
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        laanet_targets(np.zeros((4, 4, 3), np.float32) + 0.5, 4)


def test_gaussian_radius_hand_computed():
    # h = w = 10, overlap 0.7. Exact roots: shifted (20 - sqrt(400 - 70.588)) / 2 = 0.9251,
    # shrunk (40 - sqrt(1600 - 480)) / 8 = 0.8167, grown (-28 + sqrt(784 + 336)) / 5.6 = 0.9761.
    assert gaussian_radius(10, 10, 0.7, "exact") == pytest.approx(0.81672, abs=1e-4)
    # CenterNet code: grown root (-28 + sqrt(1120)) / 2 = 2.7332 is its minimum.
    assert gaussian_radius(10, 10, 0.7, "centernet") == pytest.approx(2.73320, abs=1e-4)
    # h = 4, w = 8: shrunk root (24 - sqrt(576 - 153.6)) / 8 = 0.43095 is the minimum.
    assert gaussian_radius(4, 8, 0.7, "exact") == pytest.approx(0.43095, abs=1e-4)
    # vectorised over boxes
    np.testing.assert_allclose(
        gaussian_radius(np.array([10, 4]), np.array([10, 8]), 0.7, "exact"), [0.81672, 0.43095],
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="variant"):
        gaussian_radius(3, 3, variant="cornernet")


def test_exact_radius_keeps_the_overlap():
    h, w, o = 7.0, 13.0, 0.7
    r = float(gaussian_radius(h, w, o, "exact"))
    shifted = (h - r) * (w - r) / (2 * h * w - (h - r) * (w - r))
    shrunk = (h - 2 * r) * (w - 2 * r) / (h * w)
    grown = h * w / ((h + 2 * r) * (w + 2 * r))
    assert min(shifted, shrunk, grown) == pytest.approx(o, abs=1e-9)  # binding case at r
    assert min(shifted, shrunk, grown) >= o - 1e-9


def test_vulnerable_points_keep_every_tie_per_quadrant():
    b = np.zeros((8, 8), np.float32)
    b[1, 1] = b[2, 3] = 0.9  # top-left: two tied maxima
    b[0, 0] = 0.5
    b[6, 6] = 0.7  # bottom-right: one maximum; the other two quadrants are empty
    pts = vulnerable_points(b)
    assert sorted(map(tuple, pts.tolist())) == [(1, 1), (3, 2), (6, 6)]  # (x, y)
    assert vulnerable_points(np.zeros((8, 8), np.float32)).shape == (0, 2)
    # uint8 quantisation (the code's) merges nearly equal peaks into ties
    b[5, 5] = 0.7 + 1e-4
    assert len(vulnerable_points(b)) == 3
    assert len(vulnerable_points(b, quantize=True)) == 4


def test_run_lengths_through_points():
    b = np.zeros((10, 12), np.float32)
    b[4, 2:9] = 1.0  # a horizontal band of 7 pixels...
    b[2:7, 5] = 1.0  # ...crossed by a vertical one of 5
    b[4, 10] = 0.4  # below half the peak: ends the run
    heights, widths = run_lengths(b, np.array([[5, 4], [2, 4]]))
    assert heights.tolist() == [5, 1] and widths.tolist() == [7, 7]


def test_draw_gaussians_matches_brute_force_for_few_and_many_points():
    rng = np.random.default_rng(0)
    shape = (24, 32)
    for n in (3, 300):  # windowed path, then the distance-transform path
        pts = np.stack([rng.integers(0, 32, n), rng.integers(0, 24, n)], 1)
        sig = rng.choice([0.4, 0.9, 1.7], n)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        d2 = (xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2
        ref = np.exp(-d2 / (2 * sig[:, None, None] ** 2)) * (d2 <= 9 * sig[:, None, None] ** 2)
        heat = draw_gaussians(shape, pts, sig)
        np.testing.assert_allclose(heat, ref.max(0), atol=1e-5)
        assert (heat[pts[:, 1], pts[:, 0]] == 1.0).all()


def test_heatmap_peaks_are_exactly_one_on_the_boundary_band():
    mask = soft_disc(256, radius=80, blur=6)
    t = laanet_targets(mask, 64)
    b = t.boundary
    peaks = np.argwhere(t.heatmap == 1.0)  # (row, col)
    assert len(peaks) >= 4  # at least one per quadrant for a centred disc
    assert t.heatmap.max() == 1.0 and t.heatmap.min() >= 0.0
    rows, cols = peaks[:, 0], peaks[:, 1]
    assert (b[rows, cols] > 0.95).all()
    for r, c in peaks:  # each peak is its quadrant's maximum of B
        q = b[(r // 32) * 32 : (r // 32 + 1) * 32, (c // 32) * 32 : (c // 32 + 1) * 32]
        assert b[r, c] == q.max()
    assert t.heatmap[32, 32] == 0.0  # face centre, far from the ring


def test_sigma_grows_with_the_band_width():
    thin = laanet_targets(soft_disc(256, 80, 3), 64).heatmap
    wide = laanet_targets(soft_disc(256, 80, 14), 64).heatmap
    assert wide.sum() > 1.5 * thin.sum()


def test_consistency_target():
    mask = np.zeros((128, 128), np.float32)
    mask[10:50, 10:50] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 3)  # a soft square inside the top-left quadrant
    t = laanet_targets(mask, 64)
    c = t.consistency
    assert c.min() >= 0.0 and c.max() <= 1.0
    assert (c[32:, :] == 0).all() and (c[:, 32:] == 0).all()  # quadrants without points
    pts = vulnerable_points(t.boundary)
    np.testing.assert_allclose(c[pts[:, 1], pts[:, 0]], 1.0, atol=1e-6)
    # inside the point's quadrant, C = 1 - |max B - B|
    np.testing.assert_allclose(c[:32, :32], 1 - np.abs(t.boundary.max() - t.boundary[:32, :32]))
    assert consistency_target(np.zeros((8, 8), np.float32)).max() == 0.0


@pytest.mark.parametrize("mask", [None, np.zeros((256, 256), np.float32)])
def test_real_images_get_all_zero_targets(mask):
    t = laanet_targets(mask, 64)
    for target in t:
        assert target.shape == (64, 64) and target.dtype == np.float32
        assert not target.any()
    assert not heatmap_target(np.zeros((16, 16), np.float32)).any()


def test_targets_at_heatmap_resolution_and_non_square():
    t = laanet_targets(soft_disc(256, 70, 5), (48, 64))
    assert all(x.shape == (48, 64) for x in t)
    assert t.heatmap.max() == 1.0


def test_consistency_target_does_not_depend_on_the_blend_ratio():
    """Partial blends keep the ring and a zero background in the consistency target."""
    yy, xx = np.mgrid[:64, :64]
    soft = np.clip((20.0 - np.hypot(yy - 32, xx - 32)) / 6.0 + 0.5, 0, 1).astype(np.float32)
    full = laanet_targets(soft, 32, ratio=1.0)
    quarter = laanet_targets(soft, 32, ratio=0.25)
    np.testing.assert_allclose(quarter.consistency, full.consistency, atol=1e-5)
    np.testing.assert_allclose(quarter.boundary, 0.25 * full.boundary, atol=1e-6)
    assert quarter.consistency[0, 0] == pytest.approx(0, abs=1e-3)
    assert quarter.consistency.max() == pytest.approx(1.0)
