"""dfattn.explain: localisation metrics on hand-made maps and masks with known answers; attribution
maps of the three detectors (shape, sign, the explicit maps, model state untouched); and a toy model
whose logit depends on one known region only, where IG and occlusion must find that region."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfattn.explain import (
    METHODS,
    attribution_maps,
    default_gradcam_layer,
    energy_in_mask,
    localisation_auc,
    localisation_scores,
    localisation_table,
    pointing_game,
)
from dfattn.models.base import Detector
from dfattn.models.baseline import BaselineConfig, BinaryClassifier
from dfattn.models.laanet import LAANet, LAANetConfig
from dfattn.models.mat import MAT, MATConfig

torch.set_num_threads(1)

SIZE = 64


def square_mask(size: int = 16, top: int = 4, left: int = 4, side: int = 6) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[top : top + side, left : left + side] = 1.0
    return mask


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def test_pointing_game_hits_a_peak_inside_and_misses_one_outside():
    mask = square_mask()  # rows/cols 4..9
    inside, outside = np.zeros((16, 16)), np.zeros((16, 16))
    inside[6, 7] = 1.0
    outside[13, 2] = 1.0
    assert pointing_game(inside, mask) is True
    assert pointing_game(outside, mask) is False
    assert pointing_game(torch.from_numpy(inside), torch.from_numpy(mask)) is True  # torch inputs


def test_pointing_game_tolerance_is_a_euclidean_disc():
    mask = square_mask()  # last row/col of the mask: 9
    right = np.zeros((16, 16))
    right[6, 11] = 1.0  # 2 px right of the mask
    assert not pointing_game(right, mask, tolerance=1)
    assert pointing_game(right, mask, tolerance=2)
    diagonal = np.zeros((16, 16))
    diagonal[11, 11] = 1.0  # (2, 2) from the corner (9, 9): distance sqrt(8) = 2.83
    assert not pointing_game(diagonal, mask, tolerance=2.5)  # a square dilation would hit at 2
    assert pointing_game(diagonal, mask, tolerance=3)


def test_pointing_game_ties():
    mask = square_mask()
    two_peaks = np.zeros((16, 16))
    two_peaks[5, 5] = two_peaks[14, 14] = 1.0  # one in (first in raster order), one out
    assert not pointing_game(two_peaks, mask, ties="all")
    assert pointing_game(two_peaks, mask, ties="any")
    assert pointing_game(two_peaks, mask, ties="first")
    reversed_order = np.zeros((16, 16))
    reversed_order[0, 0] = reversed_order[5, 5] = 1.0  # the outside one comes first
    assert not pointing_game(reversed_order, mask, ties="first")
    flat = np.full((16, 16), 0.3)
    assert not pointing_game(flat, mask) and pointing_game(flat, mask, ties="any")
    assert pointing_game(flat, np.ones((16, 16)))  # a flat map only hits a full mask
    near_tie = np.zeros((16, 16))
    near_tie[5, 5], near_tie[14, 14] = 1.0, 1.0 - 1e-9  # float rounding on an upsampled plateau
    assert not pointing_game(near_tie, mask, ties="all")


def test_pointing_game_rejects_an_empty_mask_and_bad_shapes():
    with pytest.raises(ValueError, match="empty mask"):
        pointing_game(np.random.rand(16, 16), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="same size"):
        pointing_game(np.random.rand(16, 16), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(np.random.rand(16, 16), square_mask(), tolerance=-1)


def test_localisation_auc_known_values():
    mask = square_mask()
    assert localisation_auc(mask, mask) == 1.0
    assert localisation_auc(-mask, mask) == 0.0
    assert localisation_auc(np.full((16, 16), 7.0), mask) == 0.5
    # 2 x 2 by hand: positives score 0.9 and 0.2, negatives 0.5 and 0.1; 3 of 4 pairs ordered.
    assert localisation_auc(np.array([[0.9, 0.2], [0.5, 0.1]]), np.array([[1, 1], [0, 0]])) == 0.75
    assert math.isnan(localisation_auc(mask, np.zeros((16, 16))))
    assert math.isnan(localisation_auc(mask, np.ones((16, 16))))


def test_energy_in_mask_known_values():
    saliency = np.array([[3.0, 1.0], [-2.0, 0.0]])
    assert energy_in_mask(saliency, np.array([[1, 0], [1, 0]])) == 0.75  # 3 / (3 + 1); -2 ignored
    assert energy_in_mask(saliency, np.array([[0, 1], [0, 0]])) == 0.25
    assert math.isnan(energy_in_mask(saliency, np.zeros((2, 2))))  # empty mask
    no_positive_mass = -np.abs(saliency)
    assert math.isnan(energy_in_mask(no_positive_mass, np.array([[1, 0], [0, 0]])))


def test_masks_are_binarised_at_one_half():
    saliency = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert energy_in_mask(saliency, np.array([[0.5, 0.0], [0.0, 0.0]])) == 1.0
    assert energy_in_mask(saliency, np.array([[0.49, 1.0], [0.0, 0.0]])) == 0.0
    assert not pointing_game(saliency, np.array([[0.49, 1.0], [0.0, 0.0]]))


def test_localisation_table_means_and_counts_by_hand():
    masks = np.stack([square_mask(), square_mask(left=8), square_mask(top=8), np.zeros((16, 16))])
    groups = ["sbi", "sbi", "swap", "swap"]  # the last image is real: empty mask
    peaks = np.zeros((4, 16, 16))
    peaks[0, 5, 5] = peaks[1, 0, 0] = peaks[2, 9, 5] = peaks[3, 3, 3] = 1.0  # hit, miss, hit, (n/a)
    maps = {"mask": masks.copy(), "peak": peaks, "inverse": 1.0 - masks}
    table = localisation_table(maps, masks, groups)

    methods, metrics = ("mask", "peak", "inverse"), ("pointing_game", "auc", "energy")
    assert list(table.index) == [(m, g) for m in methods for g in ("sbi", "swap", "all")]
    assert set(table.columns) == {(k, s) for k in metrics for s in ("mean", "count")}
    assert table.loc[("peak", "sbi"), ("pointing_game", "mean")] == 0.5
    assert table.loc[("peak", "swap"), ("pointing_game", "mean")] == 1.0
    assert table.loc[("peak", "all"), ("pointing_game", "mean")] == pytest.approx(2 / 3)
    assert table.loc[("peak", "all"), ("pointing_game", "count")] == 3  # the real image is left out
    assert table.loc[("peak", "swap"), ("auc", "count")] == 1
    assert table.loc[("mask", "all"), ("auc", "mean")] == 1.0
    assert table.loc[("inverse", "all"), ("auc", "mean")] == 0.0
    assert table.loc[("mask", "all"), ("energy", "mean")] == 1.0
    assert table.loc[("inverse", "all"), ("energy", "mean")] == 0.0
    assert table.loc[("inverse", "all"), ("pointing_game", "mean")] == 0.0

    scores = localisation_scores(maps, torch.from_numpy(masks), groups)
    assert len(scores) == 12 and scores["pointing_game"].isna().sum() == 3  # torch masks accepted
    overall = localisation_table(maps, masks)  # no groups: one "all" row per method
    assert list(overall.index) == [("mask", "all"), ("peak", "all"), ("inverse", "all")]
    with pytest.raises(ValueError, match="'all'"):
        localisation_table(maps, masks, ["all", "sbi", "sbi", "sbi"])
    with pytest.raises(ValueError, match="shape"):
        localisation_table({"bad": peaks[:, :8]}, masks, groups)


# ------------------------------------------------------------------------------------------------
# Attributions of the detectors
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    tiny = {"backbone": "efficientnet_lite0", "pretrained": False}
    return {
        "laanet": LAANet(LAANetConfig(**tiny)),
        "mat": MAT(MATConfig(**tiny)),
        "baseline": BinaryClassifier(BaselineConfig(**tiny)),
    }


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# cheap settings (the defaults run on the toy model below)
FAST = {"integrated_gradients": {"n_steps": 8}, "occlusion": {"window": 16}, "gradcam": {},
        "own": {}}


@pytest.mark.parametrize("name", ["laanet", "mat", "baseline"])
@pytest.mark.parametrize("method", METHODS)
def test_attribution_maps_are_non_negative_at_input_resolution(models, images, name, method):
    model = models[name]
    if name == "baseline" and method == "own":
        with pytest.raises(TypeError, match="no explicit attention"):
            attribution_maps(model, images, method)
        return
    maps = attribution_maps(model, images, method, **FAST[method])
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert not maps.requires_grad
    if method in ("integrated_gradients", "own"):  # these cannot vanish on an untrained network
        assert (maps.flatten(1).sum(1) > 0).all()


def test_own_map_of_laanet_is_the_upsampled_sigmoid_heatmap(models, images):
    model = models["laanet"].eval()
    with torch.no_grad():
        heatmap = model(images).heatmap  # (2, 1, 16, 16)
    expected = F.interpolate(torch.sigmoid(heatmap), size=(SIZE, SIZE), mode="bilinear").squeeze(1)
    torch.testing.assert_close(attribution_maps(model, images, "own"), expected)


def test_own_map_of_mat_reduces_the_attention_heads(models, images):
    model = models["mat"].eval()
    with torch.no_grad():
        attention = model(images).attention  # (2, M, h, w)
    up = F.interpolate(attention, size=(SIZE, SIZE), mode="bilinear")
    torch.testing.assert_close(attribution_maps(model, images, "own"), up.mean(1))
    torch.testing.assert_close(attribution_maps(model, images, "own", reduce="max"),
                               F.interpolate(attention.amax(1, keepdim=True), size=(SIZE, SIZE),
                                             mode="bilinear").squeeze(1))


def test_models_run_in_eval_mode_and_are_left_untouched(models, images):
    model = models["laanet"]
    model.train()
    model.backbone.eval()  # a deliberately mixed state (e.g. a frozen backbone) must survive
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = attribution_maps(model, images, "integrated_gradients", n_steps=4)
    assert {name: m.training for name, m in model.named_modules()} == modes
    # no BN statistics moved, no gradient left behind
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    model.train()  # dropout 0.4 would change the map if the model ran in training mode
    again = attribution_maps(model, images, "integrated_gradients", n_steps=4)
    torch.testing.assert_close(again, first)
    model.eval()


def test_gradcam_layer_choice(models, images):
    assert default_gradcam_layer(models["laanet"]) is models["laanet"].backbone.head
    resnet = BinaryClassifier(BaselineConfig(backbone="resnet18"))  # no head conv: the last stage
    assert default_gradcam_layer(resnet) is resnet.backbone.body.layer4
    by_name = attribution_maps(models["mat"], images, "gradcam", layer="backbone.head")
    torch.testing.assert_close(by_name, attribution_maps(models["mat"], images, "gradcam"))
    with pytest.raises(ValueError, match="layer"):
        default_gradcam_layer(nn.Linear(2, 1))


def test_bad_requests_raise_clear_errors(models, images):
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribution_maps(models["baseline"], images, "saliency")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        attribution_maps(models["baseline"], images[0], "gradcam")
    with pytest.raises(TypeError):
        attribution_maps(models["baseline"], images, "gradcam", n_steps=3)


# ------------------------------------------------------------------------------------------------
# Behaviour on a toy model with a known answer
# ------------------------------------------------------------------------------------------------


class RegionEnergy(Detector):
    """``logit = sum over one region of x^2`` (all channels): only that region matters."""

    def __init__(self, size: int = SIZE, rows=(16, 40), cols=(24, 48)):
        super().__init__()
        region = torch.zeros(1, 1, size, size)
        region[..., rows[0] : rows[1], cols[0] : cols[1]] = 1.0
        self.register_buffer("region", region)

    def fake_logit(self, x: torch.Tensor) -> torch.Tensor:
        return (x.pow(2) * self.region).sum((1, 2, 3))  # (B,)

    forward = fake_logit


def toy_images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_integrated_gradients_on_the_toy_model_is_exact():
    """``f = sum_R x^2``: the IG attribution of pixel ``p`` from a black baseline is
    ``x_p * int_0^1 2 a x_p da = x_p^2`` inside ``R`` and 0 outside (completeness: it sums to
    f(x)). Gauss-Legendre with 4 points integrates the linear integrand exactly."""
    model, x = RegionEnergy(), toy_images(2)
    maps = attribution_maps(model, x, "integrated_gradients", n_steps=4)
    torch.testing.assert_close(maps, (x.pow(2) * model.region).sum(1))
    torch.testing.assert_close(maps.sum((1, 2)), model(x))
    region = model.region[0, 0].numpy()
    for m in maps:
        assert energy_in_mask(m, region) == 1.0 and pointing_game(m, region)


def test_occlusion_on_the_toy_model_localises_the_region():
    model, x = RegionEnergy(), toy_images(3)
    maps = attribution_maps(model, x, "occlusion")  # default window 8, stride 4
    region = model.region[0, 0].bool()
    for m in maps:
        inside, outside = m[region].mean(), m[~region].mean()
        assert inside > 10 * outside
        assert energy_in_mask(m, region) > 0.8
        assert localisation_auc(m, region) > 0.95
        assert pointing_game(m, region)
    # far from the region (more than one window away) nothing changes when occluded
    assert maps[:, :4, :].abs().max() == 0
