"""Face sources: synthetic faces (determinism, anatomy, variety, realism to dlib) and folders of
photos (landmarks, skips with reasons, the cache, crops, the shared real faces)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfattn.data import folder as folder_mod
from dfattn.data.faces import FLIP_PERMUTATION, FaceSource
from dfattn.data.folder import (
    FolderFaces,
    crop_face,
    detect_landmarks,
    load_face,
    plausible_landmarks,
    read_image,
)
from dfattn.data.synthetic import IdentityParams, SyntheticFaces, landmarks_3d, render_face

REAL_FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_faces"


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean landmark error over the outer-eye-corner distance (the 300-W convention)."""
    iod = np.linalg.norm(truth[36] - truth[45])
    return float(np.linalg.norm(pred - truth, axis=1).mean() / iod)


@pytest.fixture(scope="module")
def faces50():
    return [SyntheticFaces(50, size=128, seed=11)[i] for i in range(50)]


# ---------------------------------------------------------------------------------------------
# Synthetic faces
# ---------------------------------------------------------------------------------------------


def test_records_have_the_face_layout():
    faces = SyntheticFaces(3, size=96, seed=0, first_identity=40)
    assert isinstance(faces, FaceSource) and len(faces) == 3
    face = faces[2]
    assert face.image.shape == (96, 96, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert face.identity == 42 and face.name == "synthetic/0/42/0"
    with pytest.raises(IndexError):
        faces[3]


def test_same_seed_same_bytes_in_any_order():
    a = SyntheticFaces(6, size=64, seed=5)
    forward = [a[i] for i in range(6)]
    backward = [SyntheticFaces(6, size=64, seed=5)[i] for i in reversed(range(6))][::-1]
    for f, b in zip(forward, backward):
        assert f.image.tobytes() == b.image.tobytes()
        assert np.array_equal(f.landmarks, b.landmarks)
    assert a[-1].image.tobytes() == forward[5].image.tobytes()


def test_seeds_and_indices_give_different_faces():
    a, b = SyntheticFaces(2, 64, seed=1), SyntheticFaces(2, 64, seed=2)
    assert not np.array_equal(a[0].image, a[1].image)
    assert not np.array_equal(a[0].image, b[0].image)
    assert a.params(0)["skin"] != b.params(0)["skin"]
    # an identity offset gives other people: face 0 of the offset split is identity 5 of the base
    c = SyntheticFaces(2, 64, seed=1, first_identity=5)
    assert c.params(0) == SyntheticFaces(6, 64, seed=1).params(5)
    assert c.params(0)["skin"] != a.params(0)["skin"]


def test_views_share_the_person_not_the_picture():
    faces = SyntheticFaces(4, 64, seed=3, views=2)
    assert [faces[i].identity for i in range(4)] == [0, 0, 1, 1]
    p0, p1 = faces.params(0), faces.params(1)
    assert p0["skin"] == p1["skin"] and p0["hair_style"] == p1["hair_style"]
    assert p0["yaw"] != p1["yaw"] and p0["scene_seed"] != p1["scene_seed"]


def test_render_face_from_seed_or_generator():
    a = render_face(7, size=64)
    b = render_face(np.random.default_rng(7), size=64, identity=3)
    assert a.image.tobytes() == b.image.tobytes() and b.identity == 3
    assert set(a.meta) == {"identity_params", "view_params"}


def test_the_neutral_template_is_mirror_symmetric_in_the_ibug_layout():
    m = landmarks_3d(IdentityParams())[:, :2]  # every parameter at its default
    mirrored = m[FLIP_PERMUTATION] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(mirrored, m, atol=1e-9)
    # image-left points have negative x: jaw start, right brow, right eye, left mouth corner
    assert m[0, 0] < 0 < m[16, 0] and m[17:22, 0].max() < 0 and m[36:42, 0].max() < 0
    assert m[48, 0] < 0 < m[54, 0]


def test_landmarks_inside_the_image_and_in_anatomical_order(faces50):
    for f in faces50:
        lm, size = f.landmarks, f.image.shape[0]
        assert lm.min() >= 0 and lm.max() <= size - 1, f.name
        eyes = lm[36:48, 1].mean()
        assert lm[17:27, 1].mean() < eyes < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1], f.name
        assert lm[36:42, 0].mean() < lm[30, 0] < lm[42:48, 0].mean(), f.name
        assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[48, 0] < lm[54, 0], f.name
        hull = cv2.convexHull(lm[:27].astype(np.float32))
        assert all(cv2.pointPolygonTest(hull, (float(x), float(y)), False) > 0
                   for x, y in lm[36:48]), f.name
        jaw_width = np.linalg.norm(lm[16] - lm[0]) / size
        assert 0.4 < jaw_width < 0.8, f.name  # a face crop, as a detector would give


def test_variety_of_skin_pose_and_expression(faces50):
    cheeks, rolls, turns, mouths = [], [], [], []
    for f in faces50:
        lm = f.landmarks
        x, y = np.round(0.5 * (lm[3] + lm[31])).astype(int)
        cheeks.append(f.image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0))
        axis = lm[42:48].mean(0) - lm[36:42].mean(0)
        rolls.append(np.degrees(np.arctan2(axis[1], axis[0])))
        # yaw: where the nose tip sits between the jaw ends (0.5 = frontal)
        turns.append((lm[30, 0] - lm[0, 0]) / (lm[16, 0] - lm[0, 0]))
        mouths.append(np.linalg.norm(lm[66] - lm[62]) / np.linalg.norm(lm[54] - lm[48]))
    luma = np.array(cheeks) @ np.array([0.3, 0.59, 0.11])
    assert luma.std() > 20 and luma.max() - luma.min() > 80
    assert np.std(rolls) > 3 and np.std(turns) > 0.04
    assert np.mean(np.array(mouths) > 0.1) > 0.1  # some open mouths
    assert np.mean(np.array(mouths) < 0.02) > 0.3  # and many closed ones


def test_dlib_sees_the_faces_where_the_landmarks_say():
    """The realism check: dlib's detector finds the faces and its landmarks agree with ours."""
    faces = SyntheticFaces(10, size=256, seed=21)
    errors = []
    for i in range(len(faces)):
        f = faces[i]
        det = detect_landmarks(f.image)
        if det.method in ("hog", "hog-padded"):
            errors.append(nme(det.landmarks, f.landmarks))
    assert len(errors) >= 8
    assert np.mean(errors) < 0.1


# ---------------------------------------------------------------------------------------------
# Folders of photos
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Four synthetic faces in two sub-folders, a truncated JPEG, a noise image and a blank one."""
    root = tmp_path_factory.mktemp("photos")
    truth = {}
    faces = SyntheticFaces(4, size=200, seed=2)
    for i in range(4):
        name = f"{'ab'[i // 2]}/face{i}.png"
        (root / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), faces[i].image[:, :, ::-1])
        truth[name] = faces[i].landmarks
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "noise.png"), rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "blank.bmp"), np.full((120, 160, 3), 128, np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root, truth


def test_folder_finds_faces_and_reports_skips(photo_folder, tmp_path, caplog):
    root, truth = photo_folder
    with caplog.at_level(logging.WARNING, logger="dfattn.data.folder"):
        faces = FolderFaces(root, cache_dir=tmp_path)
    assert faces.files == sorted(truth)
    assert [f for f, _ in faces.skipped] == ["blank.bmp", "broken.jpg", "noise.png"]
    reasons = dict(faces.skipped)
    assert reasons["broken.jpg"].startswith("unreadable") and "broken.jpg" in reasons["broken.jpg"]
    assert reasons["noise.png"] == reasons["blank.bmp"] == "no face found"
    assert "skipped 3 of 7" in caplog.text and "broken.jpg" in caplog.text
    for i, name in enumerate(faces.files):
        face = faces[i]
        assert face.name == name and face.image.shape == (200, 200, 3)
        assert nme(face.landmarks, truth[name]) < 0.12
    assert [faces[i].identity for i in range(4)] == [0, 1, 2, 3]
    by_folder = FolderFaces(root, cache_dir=tmp_path, identity="folder")
    assert [by_folder[i].identity for i in range(4)] == [0, 0, 1, 1]


def test_cache_skips_detection_until_a_file_changes(photo_folder, tmp_path, monkeypatch):
    root, _ = photo_folder
    first = FolderFaces(root, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1  # outside the data folder
    calls = []
    real = folder_mod.detect_landmarks
    monkeypatch.setattr(folder_mod, "detect_landmarks", lambda im: calls.append(1) or real(im))
    again = FolderFaces(root, cache_dir=tmp_path)
    assert calls == [] and again.files == first.files and again.skipped == first.skipped
    np.testing.assert_array_equal(again.landmarks(0), first.landmarks(0))
    path = root / first.files[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    FolderFaces(root, cache_dir=tmp_path)
    assert len(calls) == 1


def test_parallel_detection_gives_the_same_landmarks(photo_folder, tmp_path):
    root, _ = photo_folder
    one = FolderFaces(root, cache_dir=tmp_path / "one")
    two = FolderFaces(root, cache_dir=tmp_path / "two", workers=2)
    assert one.files == two.files and one.skipped == two.skipped
    for i in range(len(one)):
        np.testing.assert_array_equal(one.landmarks(i), two.landmarks(i))


def test_folder_crops_around_the_landmarks(photo_folder, tmp_path):
    root, _ = photo_folder
    faces = FolderFaces(root, size=128, cache_dir=tmp_path)
    for i in range(len(faces)):
        face = faces[i]
        assert face.image.shape == (128, 128, 3)
        width = np.ptp(face.landmarks, axis=0).max()
        assert 0.6 * 128 < width < 0.8 * 128  # margin 0.2: landmark box ~71 % of the crop
        assert face.landmarks.min() > 0 and face.landmarks.max() < 127


def test_crop_face_moves_landmarks_with_the_pixels():
    image = np.zeros((300, 240, 3), np.uint8)
    lm = np.random.default_rng(1).uniform([60, 80], [180, 260], (68, 2)).astype(np.float32)
    lm[0] = (5.0, 5.0)  # near the corner: the crop needs padding
    lm[1] = (120.0, 150.0)
    cv2.circle(image, (120, 150), 10, (255, 255, 255), -1)
    crop, moved = crop_face(image, lm, size=64)
    assert crop.shape == (64, 64, 3) and moved.dtype == np.float32
    weight = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:64, 0:64]
    centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    np.testing.assert_allclose(centroid, moved[1], atol=0.3)


def test_unreadable_file_is_a_clear_error(photo_folder, tmp_path):
    root, _ = photo_folder
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(root / "broken.jpg")
    with pytest.raises(ValueError, match="missing.png"):
        read_image(root / "missing.png")
    copy = tmp_path / "data"
    (copy / "x").mkdir(parents=True)
    (copy / "x" / "f.png").write_bytes((root / "a" / "face0.png").read_bytes())
    faces = FolderFaces(copy, cache_dir=tmp_path / "cache")
    (copy / "x" / "f.png").write_bytes(b"garbage")  # broken after indexing
    with pytest.raises(ValueError, match="f.png"):
        faces[0]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderFaces(tmp_path / "nowhere", cache_dir=tmp_path)


def test_plausibility_rejects_scrambled_landmarks():
    lm = SyntheticFaces(1, 128, seed=4)[0].landmarks
    assert plausible_landmarks(lm, 128, 128)
    upside_down = lm.copy()
    upside_down[:, 1] = 127 - upside_down[:, 1]
    assert not plausible_landmarks(upside_down, 128, 128)
    assert not plausible_landmarks(lm[np.random.default_rng(0).permutation(68)], 128, 128)
    assert not plausible_landmarks(lm + 200, 128, 128)  # outside the picture


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="shared real faces not present")
def test_shared_real_faces_get_landmarks(tmp_path):
    faces = FolderFaces(REAL_FACES, cache_dir=tmp_path, workers=2)
    total = len(faces) + len(faces.skipped)
    assert total == len(list(REAL_FACES.glob("*.jpg")))
    assert len(faces) >= 0.95 * total
    assert all(reason == "no face found" for _, reason in faces.skipped)
    lm = faces.landmarks(0)
    assert plausible_landmarks(lm, 160, 160, slack=0.15)


def test_load_face_detects_or_names_the_file(photo_folder):
    root, truth = photo_folder
    face = load_face(root / "a" / "face0.png", size=96, identity=7)
    assert face.image.shape == (96, 96, 3) and face.identity == 7 and face.meta["method"]
    with pytest.raises(ValueError, match="noise.png: no face found"):
        load_face(root / "noise.png")
