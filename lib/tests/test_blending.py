"""Hull masks, self-blended images (SBI) and Face X-ray blended images (BI)."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from dfattn.data.blending import (
    BIConfig,
    NearestLandmarkIndex,
    SBIConfig,
    blend_images,
    perturb_statistics,
    self_blend,
)
from dfattn.data.faces import Face, FaceList, flip_landmarks
from dfattn.data.geometry import lab_colour_transfer
from dfattn.data.masks import (
    MASK_TYPES,
    N_FOREHEAD,
    forehead_points,
    hull_mask,
    region_mask,
    with_forehead,
)
from dfattn.data.synthetic import SyntheticFaces

SIZE = 160


@pytest.fixture(scope="module")
def faces() -> list[Face]:
    source = SyntheticFaces(6, size=SIZE, seed=11)
    return [source[i] for i in range(len(source))]


def inside_image(points: np.ndarray, size: int) -> np.ndarray:
    return points[((points >= 0) & (points <= size - 1)).all(1)]


# ------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MASK_TYPES)
def test_every_hull_type_contains_its_landmarks(faces, kind):
    for face in faces:
        points = with_forehead(face.landmarks) if kind == "hull" else face.landmarks
        mask = hull_mask(points, (SIZE, SIZE), kind)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        grown = cv2.dilate(mask, np.ones((5, 5), np.uint8))  # 2 px tolerance
        pts = np.round(inside_image(points, SIZE)).astype(int)
        assert grown[pts[:, 1], pts[:, 0]].all(), f"{kind} misses landmarks of {face.name}"


def test_hull_types_differ_as_described(faces):
    face = faces[0]
    area = {k: hull_mask(face.landmarks, (SIZE, SIZE), k).sum() for k in MASK_TYPES}
    # extended = components with raised brows: strictly larger; the plain hull has no dents
    assert area["extended"] > area["components"]
    assert area["hull"] >= max(area["full"], area["components"])
    with_top = hull_mask(with_forehead(face.landmarks), (SIZE, SIZE), "hull").sum()
    assert with_top > area["hull"]  # forehead points raise the plain hull
    f32 = hull_mask(face.landmarks, (SIZE, SIZE), "full", dtype=np.float32)
    assert f32.dtype == np.float32 and f32.sum() == area["full"]
    with pytest.raises(ValueError, match="unknown mask type"):
        hull_mask(face.landmarks, (SIZE, SIZE), "oval")


def test_forehead_points_lie_above_the_brows_and_flip_consistently(faces):
    face = faces[1]
    lm = face.landmarks
    top = forehead_points(lm)
    assert top.shape == (N_FOREHEAD, 2)
    # an arc over the face: above the temple line, its middle part above every brow point
    temple_line = np.interp(top[:, 0], lm[[0, 16], 0], lm[[0, 16], 1])
    assert (top[:, 1] < temple_line).all()
    assert top[3:-3, 1].max() < lm[17:27, 1].min()
    assert (np.diff(top[:, 0]) > 0).all()  # left to right
    # a horizontal flip mirrors the forehead points and reverses their order (they run left to right)
    flipped = with_forehead(flip_landmarks(lm, SIZE))[68:]
    mirrored = top[::-1].copy()
    mirrored[:, 0] = (SIZE - 1) - mirrored[:, 0]
    np.testing.assert_allclose(flipped, mirrored, atol=1e-3)


def test_region_masks(faces):
    face = faces[2]
    eyes = region_mask(face.landmarks, (SIZE, SIZE), "eyes")
    mouth = region_mask(face.landmarks, (SIZE, SIZE), "mouth")
    nose = region_mask(face.landmarks, (SIZE, SIZE), "nose", margin=0.2)
    assert eyes.any() and mouth.any() and nose.any()
    assert not (eyes & mouth).any()
    bigger = region_mask(face.landmarks, (SIZE, SIZE), "mouth", margin=0.3)
    assert bigger.sum() > mouth.sum() and (bigger >= mouth).all()
    with pytest.raises(ValueError, match="unknown face region"):
        region_mask(face.landmarks, (SIZE, SIZE), "ears")


# ------------------------------------------------------------------------------------------------
# SBI
# ------------------------------------------------------------------------------------------------


def test_sbi_changes_pixels_only_inside_the_mask(faces):
    config = SBIConfig()
    for seed, face in enumerate(faces):
        r = self_blend(face, np.random.default_rng(seed), config)
        assert r.real.shape == r.fake.shape == face.image.shape and r.fake.dtype == np.uint8
        assert r.mask.shape == r.mask_unscaled.shape == (SIZE, SIZE)
        assert r.mask.dtype == np.float32
        assert 0.0 <= r.mask.min() and r.mask.max() <= 1.0
        assert r.mask_unscaled.max() == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_allclose(r.mask, r.ratio * r.mask_unscaled, atol=1e-6)
        assert r.ratio in config.blend_ratios and r.mask_type in MASK_TYPES
        outside = r.mask == 0
        assert outside.any() and (r.fake[outside] == r.real[outside]).all()
        assert (r.fake != r.real).any()


def test_sbi_same_seed_same_bytes(faces):
    a = self_blend(faces[0], np.random.default_rng(7))
    b = self_blend(faces[0], np.random.default_rng(7))
    c = self_blend(faces[0], np.random.default_rng(8))
    for x, y in ((a.real, b.real), (a.fake, b.fake), (a.mask, b.mask)):
        assert x.tobytes() == y.tobytes()
    assert a.params == b.params and a.fake.tobytes() != c.fake.tobytes()


def test_sbi_draws_types_ratios_and_copies_as_configured(faces):
    n = 240
    types, ratios, perturbed, kept_real = Counter(), Counter(), Counter(), 0
    for i in range(n):
        face = faces[i % len(faces)]
        r = self_blend(face, np.random.default_rng(1000 + i))
        types[r.mask_type] += 1
        ratios[r.ratio] += 1
        perturbed[r.params["perturbed"]] += 1
        kept_real += r.real.tobytes() == face.image.tobytes()
    # each type 1/4: 60 expected, binomial sd 6.7
    assert set(types) == set(MASK_TYPES) and all(35 <= v <= 85 for v in types.values())
    assert set(ratios) == {0.25, 0.5, 0.75, 1.0} and 90 <= ratios[1.0] <= 150  # r = 1 half
    assert 90 <= perturbed["source"] <= 150
    assert kept_real == perturbed["source"]  # the real image is the target: changed iff perturbed


def test_sbi_respects_config(faces):
    config = SBIConfig(mask_types=("components",), blend_ratios=(0.5,), perturb_source_p=1.0)
    r = self_blend(faces[3], np.random.default_rng(0), config)
    assert r.mask_type == "components" and r.ratio == 0.5
    assert r.real.tobytes() == faces[3].image.tobytes()
    assert r.mask.max() == pytest.approx(0.5, abs=1e-3)


def test_perturbation_changes_the_image_deterministically(faces):
    img = faces[0].image
    a = perturb_statistics(img, np.random.default_rng(3))
    b = perturb_statistics(img, np.random.default_rng(3))
    assert a.tobytes() == b.tobytes() and a.shape == img.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - img).mean() > 0.5


# ------------------------------------------------------------------------------------------------
# BI
# ------------------------------------------------------------------------------------------------


def similar(face: Face, identity: int, transform: np.ndarray, jitter: float = 0.0,
            seed: int = 0) -> Face:
    """``face`` moved by a similarity ``transform`` (2, 3), landmarks jittered by ``jitter`` px."""
    image = cv2.warpAffine(face.image, transform, face.image.shape[1::-1],
                           borderMode=cv2.BORDER_REFLECT_101)
    lm = face.landmarks @ transform[:, :2].T + transform[:, 2]
    lm = lm + np.random.default_rng(seed).normal(0, jitter, lm.shape)
    return Face(image, lm.astype(np.float32), identity, f"test/{identity}")


def rotation(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
    m[:, 2] += shift
    return m


def test_index_ignores_pose_and_finds_the_nearest_other_identity(faces):
    base = faces[0]
    pool = [
        similar(base, 0, rotation(0, 1, (0, 0))),  # the target's own identity: never a donor
        similar(base, 1, rotation(10, 0.9, (5, -3)), jitter=0.2, seed=1),  # same shape, new pose
        similar(base, 2, rotation(-5, 1.1, (0, 4)), jitter=1.0, seed=2),  # similar, noisier
        similar(faces[1], 3, rotation(0, 1, (0, 0))),
        similar(faces[2], 4, rotation(0, 1, (0, 0))),
    ]
    index = NearestLandmarkIndex.from_faces(pool)
    d = index.distances(base.landmarks)
    assert d[0] < 1e-6 and d[1] < d[2] < min(d[3], d[4])
    assert index.nearest(base.landmarks, 2, exclude_identity=0).tolist() == [1, 2]
    target = Face(base.image, base.landmarks, 0, "target")
    for seed in range(5):
        r = blend_images(target, index, np.random.default_rng(seed), k_nearest=1)
        assert r.donor_identity == 1 and r.params["donor_index"] == 1
    for seed in range(10):
        r = blend_images(target, pool, np.random.default_rng(seed), k_nearest=3)
        assert r.donor_identity != 0


def test_bi_changes_pixels_only_inside_the_mask_and_is_deterministic(faces):
    source = FaceList(faces)
    for seed, face in enumerate(faces[:4]):
        r = blend_images(face, source, np.random.default_rng(seed))
        assert r.donor_identity != face.identity and r.ratio == 1.0
        assert r.real.tobytes() == face.image.tobytes()
        assert 0.0 <= r.mask.min() and r.mask.max() == pytest.approx(1.0, abs=1e-6)
        outside = r.mask == 0
        assert outside.any() and (r.fake[outside] == r.real[outside]).all()
        assert (r.fake != r.real).any()
    a = blend_images(faces[0], source, np.random.default_rng(5))
    b = blend_images(faces[0], source, np.random.default_rng(5))
    assert a.fake.tobytes() == b.fake.tobytes() and a.mask.tobytes() == b.mask.tobytes()


def test_bi_needs_another_identity(faces):
    twins = [Face(f.image, f.landmarks, 0, f.name) for f in faces[:3]]
    with pytest.raises(ValueError, match="no face of an identity other than 0"):
        blend_images(twins[0], twins, np.random.default_rng(0))


def test_colour_transfer_moves_the_mean_colour_to_the_target(faces):
    region = hull_mask(faces[0].landmarks, (SIZE, SIZE))
    image = np.clip(faces[0].image.astype(int) + (40, -30, 10), 0, 255).astype(np.uint8)
    reference = faces[0].image
    inside = region.astype(bool)
    out = lab_colour_transfer(image, reference, region)
    before = np.abs(image[inside].mean(0) - reference[inside].mean(0)).sum()
    after = np.abs(out[inside].mean(0) - reference[inside].mean(0)).sum()
    assert before > 40 and after < 0.15 * before


def test_bi_colour_match_brings_the_donor_closer_to_the_target(faces):
    source = FaceList(faces)
    target = faces[0]
    gaps = {}
    for on in (True, False):
        config = BIConfig(colour_transfer=on)
        r = blend_images(target, source, np.random.default_rng(2), config=config)
        core = r.mask > 0.99
        gaps[on] = np.abs(r.fake[core].mean(0) - target.image[core].mean(0)).sum()
    assert gaps[True] < gaps[False]
