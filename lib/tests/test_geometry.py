"""The shared face geometry: known transforms, scales and colour statistics, and the training
blender and the held-out families each depending on it rather than on each other."""

from __future__ import annotations

import ast
import inspect

import cv2
import numpy as np
import pytest

from dfattn.data import blending, manipulations
from dfattn.data.faces import Face
from dfattn.data.geometry import (
    REGIONS,
    SUBPIXEL,
    draw_hulls,
    face_scale,
    lab_colour_transfer,
    similarity_transform,
    warp_to_landmarks,
)


def _imports(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_training_data_and_test_families_do_not_import_each_other():
    assert "dfattn.data.manipulations" not in _imports(blending)
    assert "dfattn.data.blending" not in _imports(manipulations)
    assert "dfattn.data.geometry" in _imports(blending) & _imports(manipulations)


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (10, 2))
    angle, scale, shift = np.deg2rad(30), 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(m, np.hstack([rot, shift[:, None]]), atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((4, 2)), src[:4])


def test_face_scale_of_a_square_is_its_side():
    square = np.array([[10, 10], [50, 10], [50, 50], [10, 50], [30, 30]], np.float32)
    assert face_scale(square) == pytest.approx(40.0)


def test_lab_colour_transfer_matches_the_reference_statistics_inside_the_region():
    rng = np.random.default_rng(1)
    image = rng.integers(60, 120, (64, 64, 3), dtype=np.uint8)
    reference = rng.integers(120, 220, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), np.uint8)
    region[16:48, 16:48] = 1
    out = cv2.cvtColor(lab_colour_transfer(image, reference, region), cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
    inside = region.astype(bool)
    np.testing.assert_allclose(out[inside].mean(0), ref[inside].mean(0), atol=2.0)
    np.testing.assert_allclose(out[inside].std(0), ref[inside].std(0), rtol=0.15, atol=1.0)
    with pytest.raises(ValueError, match="empty"):
        lab_colour_transfer(image, reference, np.zeros_like(region))


def test_identity_warp_returns_the_donor():
    rng = np.random.default_rng(2)
    points = rng.uniform(8, 56, (68, 2))
    donor = Face(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), points.astype(np.float32), 0)
    for method in ("similarity", "piecewise"):
        warped = warp_to_landmarks(donor, points, (64, 64), method)
        assert np.abs(warped.astype(int) - donor.image).max() <= 1


def test_draw_hulls_fills_at_sub_pixel_precision():
    canvas = draw_hulls(np.zeros((20, 20), np.uint8), [np.array([[2.5, 2.5], [10.5, 2.5], [10.5, 10.5],
                                                                 [2.5, 10.5]])])
    assert SUBPIXEL == 16.0
    assert canvas.sum() == 64 or canvas.sum() == 81  # an 8 x 8 square, give or take the rim rule
    assert canvas[6, 6] == 1 and canvas[15, 15] == 0
    assert {"eyes", "nose", "mouth", "face"} <= set(REGIONS)
