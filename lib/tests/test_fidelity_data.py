"""Training-data fidelity options: LAA-Net's "official" targets and the geometric augmentation
(SBI's margin crop, LAA-Net's joint flip + crop/scale/erasing); both off by default."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dfattn.data.blending import SBIConfig, self_blend
from dfattn.data.datasets import (
    GeometricAugmentation,
    PseudoFakePairs,
    collate_pairs,
    item_rng,
    loader_kwargs,
)
from dfattn.data.faces import Face, flip_landmarks
from dfattn.data.synthetic import SyntheticFaces
from dfattn.data.targets import (
    blending_boundary,
    gaussian_radius,
    laanet_targets,
    official_boundary,
    vulnerable_points,
)


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(6, 128, seed=3)


def soft_ellipse(size: int = 256, radius: float = 80.0, blur: float = 6.0) -> np.ndarray:
    """A blurred ellipse, off-centre (no symmetric ties between pixels in float)."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot((xx - 121.3) / 1.1, yy - 131.7)
    return (0.5 * (1 - np.tanh((r - radius) / blur))).astype(np.float32)


def positives(heatmap) -> int:
    return int((np.asarray(heatmap) == 1.0).sum())


# -- targets ---------------------------------------------------------------------------------------


def test_official_targets_have_many_more_vulnerable_points_on_the_same_mask(faces):
    mask = soft_ellipse()
    paper, official = laanet_targets(mask, 64), laanet_targets(mask, 64, variant="official")
    assert positives(paper.heatmap) == len(vulnerable_points(paper.boundary)) == 4  # one per quadrant
    assert positives(official.heatmap) >= 5 * positives(paper.heatmap)  # uint8 ties at the peak
    assert official.heatmap.max() == 1.0 and official.consistency.max() == 1.0
    counts = {"paper": [], "official": []}
    for i in range(len(faces)):  # SBI masks, all ratios
        res = self_blend(faces[i], np.random.default_rng(i))
        for variant in counts:
            t = laanet_targets(res.mask_unscaled, 64, ratio=res.ratio, variant=variant)
            counts[variant].append(positives(t.heatmap))
    assert min(counts["official"]) >= 4 and np.mean(counts["official"]) > 2 * np.mean(counts["paper"])


def test_official_targets_equal_a_hand_computation():
    m = np.zeros((8, 8), np.float32)
    m[1, 1:4] = 0.5  # B = 1 -> level 255: three tied points in the top-left quadrant
    m[2, 2] = 0.25  # B = 0.75 -> 191 (> 128): the run through (2, 1) is 2 high
    m[6, 6] = 0.1  # B = 0.36 -> 91.8, truncated to 91: the bottom-right quadrant's maximum
    levels = np.zeros((8, 8), np.uint8)
    levels[1, 1:4], levels[2, 2], levels[6, 6] = 255, 191, 91
    np.testing.assert_array_equal(official_boundary(m), levels)

    t = laanet_targets(m, 8, ratio=0.25, variant="official")  # no ratio scaling in the code
    points = np.array([[1, 1], [2, 1], [3, 1], [6, 6]])  # (x, y)
    heights, widths = np.array([1, 2, 1, 1]), np.array([3, 3, 3, 1])  # runs of B > 128 (91 is not)
    sigmas = gaussian_radius(heights, widths, 0.7, "centernet") / 3
    yy, xx = np.mgrid[:8, :8]
    d2 = (xx[None] - points[:, 0, None, None]) ** 2 + (yy[None] - points[:, 1, None, None]) ** 2
    s2 = sigmas[:, None, None] ** 2
    heat = (np.exp(-d2 / (2 * s2)) * (d2 <= 9 * s2)).max(0)
    np.testing.assert_allclose(t.heatmap, heat, atol=1e-6)
    assert positives(t.heatmap) == 4
    b = levels / 255.0
    consistency = 1 - np.abs(1.0 - b)  # max B = 1; quadrants with a point: top-left, bottom-right
    consistency[:4, 4:] = consistency[4:, :4] = 0
    np.testing.assert_allclose(t.consistency, consistency, atol=1e-6)
    np.testing.assert_allclose(t.boundary, b, atol=1e-7)


def test_official_boundary_is_made_at_image_resolution_then_resized_bilinearly():
    m = np.zeros((16, 16), np.float32)
    m[:, 1::2] = 1.0  # hard 0/1 stripes: B = 0 at image resolution, whatever the size
    assert not official_boundary(m, 8).any()
    assert blending_boundary(m, size=8).min() == 1.0  # "paper": M averaged first, then B
    blocks = np.kron(np.array([[0.5, 0.25], [0.0, 0.1]], np.float32), np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(official_boundary(blocks, 4),  # 2x2 blocks, exactly resampled
                                  np.kron(np.array([[255, 191], [0, 91]], np.uint8), np.ones((2, 2), np.uint8)))
    with pytest.raises(ValueError, match="targets variant"):
        laanet_targets(m, 8, variant="code")


def test_the_default_targets_are_unchanged(faces):
    res = self_blend(faces[0], np.random.default_rng(1), SBIConfig(blend_ratios=(0.5,)))
    old = laanet_targets(res.mask_unscaled, 32, ratio=res.ratio)
    new = laanet_targets(res.mask_unscaled, 32, ratio=res.ratio, variant="paper")
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)
    # what the dataset computed before the options existed: B of the unscaled mask times r
    item = PseudoFakePairs(faces, 128, seed=4)[2]
    rng = item_rng(4, 0, 2)
    face = faces[2]
    if rng.random() < 0.5:  # the flip of the face before blending (off with geometric augmentation)
        face = Face(np.ascontiguousarray(face.image[:, ::-1]), flip_landmarks(face.landmarks, 128),
                    face.identity, face.name)
    blend = self_blend(face, rng)
    heatmap, consistency, _ = laanet_targets(blend.mask_unscaled, 32, ratio=blend.ratio)
    np.testing.assert_array_equal(item["heatmap"][1, 0].numpy(), heatmap)
    np.testing.assert_array_equal(item["consistency"][1, 0].numpy(), consistency)
    explicit = PseudoFakePairs(faces, 128, seed=4, targets="paper", geometric=False)[2]
    for key, value in item.items():
        assert torch.equal(value, explicit[key]), key


# -- geometric augmentation -------------------------------------------------------------------------


def _pair(face_image: np.ndarray):
    """A pair whose fake differs from the real exactly where the (hard) mask is 1."""
    real = np.clip(face_image, 1, 255).astype(np.uint8)  # no zero pixels before erasing
    mask = np.zeros(real.shape[:2], np.float32)
    mask[30:90, 40:100] = 1.0
    fake = real.copy()
    fake[mask > 0] = 255 - fake[mask > 0] // 2 - 1  # != real everywhere inside, never 0
    assert ((fake != real).any(-1) == (mask > 0)).all()
    return real, fake, mask


@pytest.mark.parametrize("ops", [("crop",), ("erase",), ("crop", "scale", "erase")])
def test_geometric_augmentation_moves_images_and_masks_together(faces, ops):
    real, fake, mask = _pair(faces[0].image)
    aug = GeometricAugmentation(ops=ops)
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(12):
        r, f, (m, half) = aug(real, fake, [mask, 0.5 * mask], rng)
        assert r.shape == f.shape and r.shape[:2] == m.shape == half.shape
        np.testing.assert_array_equal(half, 0.5 * m)  # both masks, same transform
        changed = (r != f).any(-1)
        if "scale" in ops:  # bilinear images, nearest masks: they agree up to one pixel at the edge
            inside, near = m > 0, cv2.dilate((m > 0).astype(np.uint8), np.ones((3, 3))) > 0
            interior = cv2.erode(inside.astype(np.uint8), np.ones((3, 3))) > 0
            assert not changed[~near].any() and changed[interior].all()
        else:
            np.testing.assert_array_equal(changed, m > 0)
        sizes.add(r.shape[:2])
    assert len(sizes) > 1  # the margin (and crop/scale) change the size
    assert all(h <= 128 - 2 * 2 for h, _ in sizes) or "scale" in ops  # margin >= 5 px at 256 -> >= 2 at 128


def test_flip_and_crop_are_exactly_the_transforms_they_say(faces):
    real, fake, mask = _pair(faces[0].image)
    rng = np.random.default_rng(1)
    r, f, (m,) = GeometricAugmentation(margin=None, flip_p=1.0, one_of_p=0.0)(real, fake, [mask], rng)
    np.testing.assert_array_equal(r, real[:, ::-1])
    np.testing.assert_array_equal(f, fake[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    for _ in range(10):  # crops keep at least 86 % of each side, a sub-array of the input
        r, f, (m,) = GeometricAugmentation(margin=None, flip_p=0.0, one_of_p=1.0, ops=("crop",))(
            real, fake, [mask], rng)
        h, w = m.shape
        assert h == w and 0.86 * 128 - 1 <= h <= 128
        hits = [(y, x) for y in range(129 - h) for x in range(129 - w)
                if np.array_equal(real[y:y + h, x:x + w], r)]
        assert len(hits) == 1
        (y, x), = hits
        np.testing.assert_array_equal(f, fake[y:y + h, x:x + w])
        np.testing.assert_array_equal(m, mask[y:y + h, x:x + w])
    r, f, (m,) = GeometricAugmentation(margin=(24, 24), flip_p=0.0, one_of_p=0.0)(real, fake, [mask], rng)
    np.testing.assert_array_equal(r, real[12:116, 12:116])  # SBI's margin: 24 px at 256 = 12 at 128


def test_erasing_zeroes_the_same_box_in_the_images_and_the_masks(faces):
    real, fake, _ = _pair(faces[1].image)
    soft = np.full(real.shape[:2], 0.7, np.float32)  # non-zero everywhere
    aug = GeometricAugmentation(margin=None, flip_p=0.0, one_of_p=1.0, ops=("erase",))
    rng = np.random.default_rng(2)
    for _ in range(10):
        r, f, (m, m2) = aug(real, fake, [soft, 0.5 * soft], rng)
        box = (r == 0).all(-1)
        ys, xs = np.nonzero(box)
        assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # one rectangle
        assert 0.02 * box.size - 128 <= box.sum() <= 0.33 * box.size + 128  # 2-33 % (rounding)
        np.testing.assert_array_equal((f == 0).all(-1), box)
        np.testing.assert_array_equal(m == 0, box)
        np.testing.assert_array_equal(m2 == 0, box)


def test_pair_targets_follow_the_augmented_boundary(faces):
    cfg = SBIConfig(blend_ratios=(1.0,))  # the returned mask is then M itself
    flip = GeometricAugmentation(margin=None, flip_p=1.0, one_of_p=0.0)
    still = GeometricAugmentation(margin=None, flip_p=0.0, one_of_p=0.0)
    for targets in ("paper", "official"):
        a = PseudoFakePairs(faces, 128, seed=3, sbi_config=cfg, targets=targets, geometric=flip)
        b = PseudoFakePairs(faces, 128, seed=3, sbi_config=cfg, targets=targets, geometric=still)
        a.augment = b.augment = None  # photometric augmentation off: the images compare exactly
        for i in range(3):  # the same blend, mirrored: images, mask and targets alike
            x, y = a[i], b[i]
            assert torch.equal(x["image"], y["image"].flip(-1))
            assert torch.equal(x["mask"], y["mask"].flip(-1))
            for key in ("heatmap", "consistency"):
                torch.testing.assert_close(x[key], y[key].flip(-1), atol=1e-5, rtol=0)
    crop_scale = GeometricAugmentation(one_of_p=1.0, ops=("crop", "scale"))
    ds = PseudoFakePairs(faces, 128, seed=5, sbi_config=cfg, targets="official", geometric=crop_scale)
    for i in range(len(faces)):  # heatmap peaks lie on the boundary of the augmented mask
        item = ds[i]
        ring = official_boundary(item["mask"][1, 0].numpy(), 32)
        peaks = item["heatmap"][1, 0].numpy() == 1.0
        assert peaks.any() and (ring[peaks] >= 200).all()
        assert (item["consistency"][1, 0].numpy()[ring == 0] <= 0.1).all()  # 1 - max B off the ring


def test_geometric_pairs_are_deterministic_across_workers_and_epochs(faces):
    ds = PseudoFakePairs(faces, 64, seed=2, targets="official", geometric=True)
    batches = [next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_pairs, **loader_kwargs(n))))
               for n in (0, 2)]
    for key in batches[0]:
        assert torch.equal(batches[0][key], batches[1][key]), key
    again = PseudoFakePairs(faces, 64, seed=2, targets="official", geometric=True)[1]
    assert all(torch.equal(v, again[k]) for k, v in ds[1].items())
    before = ds[1]["image"]
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], before)
    assert PseudoFakePairs(faces, 64, train=False, geometric=True).geometric is None  # train split only
    with pytest.raises(TypeError, match="geometric"):
        PseudoFakePairs(faces, 64, geometric="yes")
    with pytest.raises(ValueError, match="ops"):
        GeometricAugmentation(ops=("rotate",))


# -- training and ablations ---------------------------------------------------------------------------


def test_train_config_and_cli_select_the_options(tmp_path):
    from dfattn.ablations import ABLATIONS, DATA_ABLATIONS, ablation_config
    from dfattn.cli import train as train_cli
    from dfattn.train import TrainConfig, Trainer

    tiny = dict(model="baseline", profile="smoke", image_size=64, n_train=8, n_val=4, n_test=4, batch_size=8,
                num_workers=0, progress=False, val_families=False, face_size=64, epochs=1)
    assert TrainConfig().targets == "paper" and TrainConfig().geometric_aug is False
    trainer = Trainer(TrainConfig(**tiny, targets="official", geometric_aug=True), tmp_path / "run")
    assert trainer.train_set.targets == "official" and trainer.train_set.geometric == GeometricAugmentation()
    val = trainer.val_sets()["val"][0]
    c = trainer.config
    expected = PseudoFakePairs(trainer.val_faces, 64, train=False, seed=c.seed + 1, targets="official")[0]
    assert torch.equal(val["heatmap"], expected["heatmap"])
    with pytest.raises(ValueError, match="targets variant"):
        TrainConfig(**tiny, targets="code").resolved()
    args = train_cli.parser().parse_args(["--out", "x", "--targets", "official", "--geometric-aug"])
    config = train_cli.config_from_args(args)
    assert config.targets == "official" and config.geometric_aug is True
    by_name = {a.name: a for a in DATA_ABLATIONS}
    assert ablation_config(by_name["LAA-Net: official heatmap targets"], "smoke", 0).targets == "official"
    grid = ablation_config(ABLATIONS[0], "smoke", 0, data_options={"targets": "official"})
    assert grid.targets == "official" and not grid.geometric_aug
    with pytest.raises(ValueError, match="unknown data options"):
        ablation_config(ABLATIONS[0], "smoke", 0, data_options={"flip": True})
