"""The regional-diversity measures of chapter 2b on known values, and its short MAT run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dfattn.diversity import feature_similarity, map_overlap, train_tiny


def test_identical_maps_overlap_fully_and_disjoint_maps_not_at_all():
    one = torch.rand(2, 1, 5, 5) + 0.1
    assert map_overlap(one.repeat(1, 3, 1, 1)) == pytest.approx(1.0)
    left, right = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    left[..., :2], right[..., 2:] = 1.0, 1.0
    assert map_overlap(torch.cat([left, right], 1)) == pytest.approx(0.0)
    half = torch.zeros(1, 1, 4, 4)
    half[..., 1:3] = 1.0  # shares half of each map with ``left``
    assert map_overlap(torch.cat([left[:1], half], 1)) == pytest.approx(0.5)
    # the scale of a map does not matter (each is normalised to sum 1)
    assert map_overlap(torch.cat([one, 7 * one], 1)) == pytest.approx(1.0)


def test_orthogonal_features_are_dissimilar_and_identical_ones_similar():
    eye = torch.eye(3)[None].repeat(2, 1, 1)  # (B, M, C): three orthogonal unit features
    assert feature_similarity(eye) == pytest.approx(0.0)
    v = torch.nn.functional.normalize(torch.randn(2, 1, 8), dim=-1)
    assert feature_similarity(v.repeat(1, 4, 1)) == pytest.approx(1.0)
    assert feature_similarity(torch.cat([v, -v], 1)) == pytest.approx(-1.0)


def _run(seed: int = 0):
    g = torch.Generator().manual_seed(1)
    pool = torch.rand(6, 3, 64, 64, generator=g)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    held_out = torch.rand(2, 3, 64, 64, generator=g)
    return train_tiny("paper", True, pool, labels, held_out, steps=2, batch=4, seed=seed,
                      backbone="efficientnet_lite0", pretrained=False, device="cpu", eval_every=1)


def test_a_tiny_run_reports_finite_measures_and_reproduces():
    model, history = _run()
    assert list(history.columns) == ["step", "ce", "ril", "map overlap", "feature similarity"]
    assert list(history["step"]) == [1, 2]
    assert np.isfinite(history.drop(columns="step").to_numpy(dtype=float)).all()
    assert history["map overlap"].between(0, 1).all()
    assert not model.training  # left in eval mode after the last measurement
    _, again = _run()
    pd.testing.assert_frame_equal(history, again)
