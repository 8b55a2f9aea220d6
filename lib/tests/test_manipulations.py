"""Held-out manipulations change exactly what their masks say; degradations do what they say."""

from itertools import pairwise

import cv2
import numpy as np
import pytest

from dfattn.data.faces import LEFT_EYE, MOUTH, NOSE, RIGHT_EYE, Face, FaceList
from dfattn.data.geometry import similarity_transform, warp_to_landmarks
from dfattn.data.manipulations import (
    DEGRADATIONS,
    FAMILIES,
    SWAP_REGIONS,
    Manipulation,
    apply_family,
    blur_image,
    degrade_image,
    downscale,
    gaussian_noise,
    jpeg,
    pick_donor,
    region_swap,
    resynthesise,
    upsampler_resynthesis,
)
from dfattn.data.synthetic import SyntheticFaces

SIZE = 128
INNER_FACE = list(range(17, 68))  # brows, nose, eyes, mouth
REGION_POINTS = {"eyes": RIGHT_EYE + LEFT_EYE, "nose": NOSE, "mouth": MOUTH}


@pytest.fixture(scope="module")
def faces() -> list[Face]:
    """Six faces of six identities, with exact landmarks."""
    source = SyntheticFaces(6, size=SIZE, seed=0)
    return [source[i] for i in range(len(source))]


def _at(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mask values at the (rounded) landmark positions."""
    xy = np.round(points).astype(int)
    return mask[xy[:, 1], xy[:, 0]]


# ------------------------------------------------------------------------------------------------
# Families
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_family_changes_exactly_inside_its_mask(faces, family, seed):
    target, donor = faces[seed], faces[seed + 1]
    out = apply_family(family, target, donor, np.random.default_rng(seed))
    assert isinstance(out, Manipulation) and out.family == family
    assert out.image.shape == target.image.shape and out.image.dtype == np.uint8
    assert out.mask.shape == target.image.shape[:2] and out.mask.dtype == np.float32
    assert 0.0 <= out.mask.min() and out.mask.max() <= 1.0
    changed = np.any(out.image != target.image, axis=2)
    assert not changed[out.mask == 0].any(), "pixels changed outside the mask"
    core = out.mask >= 0.5
    assert core.sum() > 30 and changed[core].mean() > 0.3, "the mask area barely changed"


@pytest.mark.parametrize("family", ["face_swap", "poisson_swap"])
@pytest.mark.parametrize("warp", ["piecewise", "similarity"])
def test_whole_face_masks_cover_the_inner_face(faces, family, warp):
    out = apply_family(family, faces[0], faces[1], np.random.default_rng(0), warp=warp)
    assert (_at(out.mask, faces[0].landmarks[INNER_FACE]) > 0).all()
    assert _at(out.mask, faces[0].landmarks[[30]])[0] == pytest.approx(1.0, abs=1e-5)  # nose tip
    assert out.mask[0].max() == 0 and out.mask[:, 0].max() == 0  # not the whole image


@pytest.mark.parametrize("region", ["eyes", "nose", "mouth"])
@pytest.mark.parametrize("seed", range(4))
def test_region_swap_mask_holds_its_region_and_no_other(faces, region, seed):
    target = faces[seed]
    out = region_swap(target, faces[seed + 1], np.random.default_rng(seed), region=region)
    assert out.params["region"] == region
    assert (_at(out.mask, target.landmarks[list(REGION_POINTS[region])]) > 0).all()
    others = target.landmarks[
        [i for name, idx in REGION_POINTS.items() if name != region for i in idx]
    ]
    # Landmarks of other regions closer than 2 px to a part (a turned head) cannot be told apart.
    hulls = [cv2.convexHull(target.landmarks[list(part)])[:, 0] for part in SWAP_REGIONS[region]]
    far = [
        min(-cv2.pointPolygonTest(h, (float(x), float(y)), True) for h in hulls) > 2
        for x, y in others
    ]
    assert np.mean(far) > 0.9
    assert (_at(out.mask, others[far]) == 0).all()


def test_region_swap_pastes_the_aligned_donor_region(faces):
    """A hard-edged mouth paste is the donor moved by the similarity of the outer lips, as is."""
    target, donor = faces[0], faces[1]
    out = region_swap(
        target, donor, np.random.default_rng(0), "mouth", feather=0.0, brightness_match=False
    )
    assert set(np.unique(out.mask)) == {0.0, 1.0}
    lips = list(SWAP_REGIONS["mouth"][0])
    to_target = similarity_transform(donor.landmarks[lips], target.landmarks[lips])
    moved = cv2.warpAffine(donor.image, to_target, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101)
    inside = out.mask == 1
    assert np.array_equal(out.image[inside], moved[inside])
    assert (out.image[inside] != target.image[inside]).any(axis=1).mean() > 0.5


@pytest.mark.parametrize("family", ["face_swap", "region_swap", "poisson_swap"])
def test_donor_must_be_another_identity(faces, family):
    twin = Face(faces[1].image, faces[1].landmarks, faces[0].identity, "twin")
    with pytest.raises(ValueError, match="identity"):
        apply_family(family, faces[0], twin, np.random.default_rng(0))
    out = apply_family(family, faces[0], faces[1], np.random.default_rng(0))
    assert out.donor_identity == faces[1].identity != faces[0].identity


def test_pick_donor_returns_another_identity(faces):
    source = FaceList(
        [Face(f.image, f.landmarks, identity=0 if i < 4 else 7) for i, f in enumerate(faces)]
    )
    rng = np.random.default_rng(0)
    assert all(pick_donor(source, i, rng).identity == 7 for i in range(4))
    assert all(pick_donor(source, 4, rng, candidates=3).identity == 0 for _ in range(5))
    with pytest.raises(ValueError, match="other than 0"):
        pick_donor(FaceList(source.faces[:4]), 0, rng)


def test_pick_donor_prefers_similar_landmarks(faces):
    """With candidates, the donor whose aligned landmarks match best wins (here: a scaled copy)."""
    target = faces[0]
    twin = Face(faces[1].image, target.landmarks * 1.1 - 3.0, 99, "similar")
    source = FaceList([target, faces[1], faces[2], twin, faces[3]])
    picks = {pick_donor(source, 0, np.random.default_rng(s), candidates=16).name for s in range(3)}
    assert picks == {"similar"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_bytes(faces, family):
    a = apply_family(family, faces[2], faces[3], np.random.default_rng(7))
    b = apply_family(family, faces[2], faces[3], np.random.default_rng(7))
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.params == b.params
    draws = [
        apply_family(family, faces[2], faces[3], np.random.default_rng(s)).params for s in range(3)
    ]
    assert draws[0] != draws[1] or draws[1] != draws[2]


def test_unknown_names_are_clear_errors(faces):
    with pytest.raises(ValueError, match="unknown manipulation family"):
        apply_family("morph", faces[0], faces[1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown region"):
        region_swap(faces[0], faces[1], np.random.default_rng(0), region="ears")
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade_image(faces[0].image, "sharpen", 1.0)


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_one():
    src = np.random.default_rng(0).uniform(0, 100, (20, 2))
    rot90_x2 = np.array([[0.0, -2.0, 3.0], [2.0, 0.0, 4.0]])  # x' = -2y + 3, y' = 2x + 4
    dst = src @ rot90_x2[:, :2].T + rot90_x2[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), rot90_x2, atol=1e-9)


def test_piecewise_warp_reproduces_an_affine_deformation(faces):
    """Landmarks moved by an affine map (with shear) are followed exactly by the piecewise warp.

    Every triangle then carries the same affine map, so each pixel of the target hull must read the
    donor pixel that the inverse map gives; one similarity cannot follow the shear.
    """
    donor = faces[1]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    # A donor whose red and green values are its own x and y, two grey levels per pixel.
    coords = np.stack([xs * 2, ys * 2, np.zeros_like(xs)], -1).astype(np.uint8)
    shear = np.array([[1.1, 0.15], [-0.05, 0.9]])
    offset = np.array([-8.0, 4.0])
    target = donor.landmarks @ shear.T + offset
    hull = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(target).astype(np.int32)), 1)
    inside = cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool)
    pixels = np.stack([xs[inside], ys[inside]], 1).astype(np.float64)
    expected = (pixels - offset) @ np.linalg.inv(shear).T  # donor (x, y) of each target pixel
    errors = {}
    for method in ("piecewise", "similarity"):
        warped = warp_to_landmarks(Face(coords, donor.landmarks, 1), target, (SIZE, SIZE), method)
        errors[method] = np.abs(warped[inside][:, :2] / 2.0 - expected).max()
    assert errors["piecewise"] <= 0.35  # 0.25 from coding coordinates in steps of half a pixel
    assert errors["similarity"] > 2.0


def test_poisson_clone_of_a_face_onto_itself_changes_almost_nothing(faces):
    """The clone lands where its mask is (no off-by-one shift): a face cloned onto itself stays."""
    target = faces[0]
    itself = Face(target.image, target.landmarks, identity=99, name="itself")
    out = apply_family("poisson_swap", target, itself, np.random.default_rng(0), warp="piecewise")
    diff = np.abs(out.image.astype(int) - target.image).max(axis=2)[out.mask > 0]
    assert np.percentile(diff, 99) <= 1  # the solver's rounding; off by one pixel gives tens


def _periodic_peak_ratio(image: np.ndarray, centre: tuple[int, int], n: int) -> float:
    """Power at the upsampling frequencies (multiples of n/4) over the rest of the high band.

    On the high-pass residual (image minus a Gaussian blur) of an ``n x n`` grey window.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    x, y = centre[0] - n // 2, centre[1] - n // 2
    residual = (grey - cv2.GaussianBlur(grey, (0, 0), 2))[y : y + n, x : x + n]
    power = np.abs(np.fft.fft2(residual - residual.mean())) ** 2
    kx, ky = np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n)
    peaks = (kx % (n // 4) == 0) & (ky % (n // 4) == 0) & ((kx != 0) | (ky != 0))
    band = (np.maximum(np.abs(kx), np.abs(ky)) >= n // 8) & ~peaks
    return float(power[peaks].mean() / power[band].mean())


@pytest.mark.parametrize("seed", range(3))
def test_upsampler_leaves_peaks_at_the_upsampling_frequencies(faces, seed):
    face = faces[seed]
    out = upsampler_resynthesis(face, None, np.random.default_rng(seed), region="face")
    # Measure in the largest square that is fully re-synthesised (chessboard distance to the rest).
    inside = cv2.distanceTransform((out.mask > 0.999).astype(np.uint8), cv2.DIST_C, 3)
    y, x = np.unravel_index(inside.argmax(), inside.shape)
    n = min(32, int(2 * (inside.max() - 1)) // 8 * 8)
    assert n >= 16
    original = _periodic_peak_ratio(face.image, (x, y), n)
    fake = _periodic_peak_ratio(out.image, (x, y), n)
    # A clean bilinear upsampler (even kernel overlap, no periodic tile) leaves no such peaks.
    clean = _periodic_peak_ratio(resynthesise(face.image, 4, strength=0.0, peak=0.0), (x, y), n)
    assert fake > 5 * max(original, clean)


def test_checkerboard_kernel_has_uneven_phase_gains():
    """On a flat image the checkerboard kernel prints a period-2 pattern, the bilinear one none."""
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert np.array_equal(resynthesise(flat, 4, strength=0.0, peak=0.0), flat)
    stripes = resynthesise(flat, 2, strength=1.0, peak=0.0)[..., 0].astype(int)
    phases = [stripes[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    assert all(np.ptp(p[2:-2, 2:-2]) == 0 for p in phases)  # constant per phase away from borders
    assert [int(p[4, 4]) for p in phases] == [round(128 * g) for g in (1.30, 0.85, 0.90, 0.95)]


# ------------------------------------------------------------------------------------------------
# Degradations
# ------------------------------------------------------------------------------------------------


def test_degradation_grids():
    grids = {name: d.grid for name, d in DEGRADATIONS.items()}
    assert grids == {
        "jpeg": (90, 70, 50, 30),
        "blur": (0.5, 1.0, 2.0, 3.0),
        "noise": (2.0, 5.0, 10.0, 20.0),
        "downscale": (0.75, 0.5, 0.33, 0.25),
    }


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_degradations_keep_shape_dtype_and_are_deterministic(faces, name):
    image = faces[0].image[:, :100]  # not square, odd sizes survive
    for strength in DEGRADATIONS[name].grid:
        a = degrade_image(image, name, strength, np.random.default_rng(3))
        b = degrade_image(image, name, strength, np.random.default_rng(3))
        assert a.shape == image.shape and a.dtype == np.uint8
        assert a.tobytes() == b.tobytes() and not np.array_equal(a, image)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b) ** 2).mean())


def test_lower_jpeg_quality_larger_error(faces):
    image = faces[0].image
    errors = [_mse(jpeg(image, q), image) for q in DEGRADATIONS["jpeg"].grid]
    assert all(e1 < e2 for e1, e2 in pairwise(errors)), errors
    assert errors[0] > 0


def test_jpeg_keeps_colours_in_place():
    """RGB in, RGB out (OpenCV encodes BGR): a red image stays red."""
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    out = jpeg(red, 90).astype(int)
    assert out[..., 0].mean() > 180 and out[..., 2].mean() < 20


def _high_frequency_energy(image: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float((cv2.Laplacian(grey, cv2.CV_64F) ** 2).mean())


def test_blur_removes_high_frequencies(faces):
    image = faces[1].image
    energy = [_high_frequency_energy(image)]
    energy += [_high_frequency_energy(blur_image(image, s)) for s in DEGRADATIONS["blur"].grid]
    assert all(e1 > e2 for e1, e2 in pairwise(energy)), energy
    assert np.array_equal(blur_image(image, 0), image)


@pytest.mark.parametrize("std", [2.0, 5.0, 10.0, 20.0])
def test_noise_std_is_as_requested(std):
    grey = np.full((128, 128, 3), 128, np.uint8)  # 128 +- 6 sigma stays in [0, 255]: no clipping
    noise = gaussian_noise(grey, std, np.random.default_rng(0)).astype(np.float64) - 128
    expected = np.sqrt(std**2 + 1 / 12)  # rounding to integers adds uniform noise of variance 1/12
    assert noise.std() == pytest.approx(expected, rel=0.03)
    assert abs(noise.mean()) < 4 * expected / np.sqrt(noise.size)  # zero mean, to 4 standard errors


def test_downscale(faces):
    image = faces[0].image
    assert np.array_equal(downscale(image, 1.0), image)
    errors = [_mse(downscale(image, f), image) for f in DEGRADATIONS["downscale"].grid]
    assert all(e1 < e2 for e1, e2 in pairwise(errors)), errors
    with pytest.raises(ValueError, match="factor"):
        downscale(image, 1.5)


def test_bad_images_are_clear_errors():
    with pytest.raises(ValueError, match=r"jpeg: image must be \(H, W, 3\) uint8"):
        jpeg(np.zeros((8, 8), np.uint8), 90)
    with pytest.raises(ValueError, match="gaussian_noise: image must be"):
        gaussian_noise(np.zeros((8, 8, 3), np.float32), 2.0, np.random.default_rng(0))
