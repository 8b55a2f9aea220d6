"""Face detectors (dlib HOG, MTCNN, MediaPipe): every face of an image with its 68 landmarks, the
default path unchanged, the option in the folder source and in preprocessing, clear errors."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfattn.data import detectors as det_mod
from dfattn.data import folder as folder_mod
from dfattn.data.folder import (
    CACHE_VERSION,
    FACE_DETECTORS,
    DetectorUnavailable,
    FolderFaces,
    FoundFace,
    detect_faces,
    detect_landmarks,
    plausible_landmarks,
    read_image,
)
from dfattn.data.synthetic import SyntheticFaces

REAL_FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_faces"
PACKAGES = {"dlib": "dlib", "mtcnn": "facenet_pytorch", "mediapipe": "mediapipe"}
DLIB_ROUTES = {"hog", "hog-padded", "haar", "hog-low", "whole-image"}


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean landmark error over the outer-eye-corner distance."""
    return float(np.linalg.norm(pred - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


@pytest.fixture(params=FACE_DETECTORS)
def detector(request) -> str:
    """Each detector whose package is installed (the others skip, naming the pip command)."""
    name = request.param
    if importlib.util.find_spec(PACKAGES[name]) is None:
        pytest.skip(f"{PACKAGES[name]} not installed ({det_mod.INSTALL.get(name, '')})")
    return name


@pytest.fixture(scope="module")
def synthetic():
    faces = SyntheticFaces(4, size=224, seed=21)
    return [faces[i] for i in range(len(faces))]


def two_faces(synthetic) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two synthetic faces side by side on one canvas, the left one larger; their true boxes."""
    canvas = np.full((300, 620, 3), (96, 104, 112), np.uint8)
    big, small = synthetic[0].image, cv2.resize(synthetic[1].image, (160, 160))
    canvas[38:262, 20:244] = big
    canvas[70:230, 400:560] = small
    truth = [synthetic[0].landmarks + np.float32([20, 38]),
             (synthetic[1].landmarks + 0.5) * np.float32(160 / 224) - 0.5 + np.float32([400, 70])]
    return canvas, truth


# ---------------------------------------------------------------------------------------------
# Every detector
# ---------------------------------------------------------------------------------------------


def test_finds_the_synthetic_faces(detector, synthetic):
    for face in synthetic:
        found = detect_faces(face.image, detector)
        assert len(found) == 1, (detector, face.name, found)
        f = found[0]
        assert isinstance(f, FoundFace) and f.landmarks.shape == (68, 2)
        assert f.landmarks.dtype == np.float32 and len(f.box) == 4
        assert nme(f.landmarks, face.landmarks) < 0.12, (detector, face.name)
        assert (f.method in DLIB_ROUTES) if detector == "dlib" else f.method.startswith(detector)
        det = detect_landmarks(face.image, detector)
        np.testing.assert_array_equal(det.landmarks, f.landmarks)  # one face: the same one


def test_every_face_largest_first(detector, synthetic):
    canvas, truth = two_faces(synthetic)
    found = detect_faces(canvas, detector)
    assert len(found) == 2, (detector, [(f.box, f.method) for f in found])
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in found]
    assert areas[0] > areas[1]
    for f, lm in zip(found, truth):
        x0, y0, x1, y1 = f.box
        centre = lm.mean(0)
        assert x0 < centre[0] < x1 and y0 < centre[1] < y1, (detector, f.box)
        assert nme(f.landmarks, lm) < 0.15, detector
        assert np.isfinite(f.score) and plausible_landmarks(f.landmarks, 620, 300)
    np.testing.assert_array_equal(detect_landmarks(canvas, detector).landmarks, found[0].landmarks)


def test_nothing_in_a_blank_image(detector):
    assert detect_faces(np.full((200, 240, 3), 128, np.uint8), detector) == []
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    assert detect_faces(noise, detector) == []
    det = detect_landmarks(np.full((200, 240, 3), 128, np.uint8), detector)
    assert det.landmarks is None and det.reason == "no face found"


def test_large_photos_are_searched_small_and_mapped_back(detector, synthetic):
    face = synthetic[2]
    big = cv2.resize(face.image, (1344, 1344), interpolation=cv2.INTER_CUBIC)  # 6x, over _MAX_SIDE
    found = detect_faces(big, detector)
    assert len(found) == 1
    assert nme(found[0].landmarks, (face.landmarks + 0.5) * 6 - 0.5) < 0.12
    assert max(found[0].box) > 700  # in the big image's pixels


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="shared real faces not present")
def test_finds_real_faces(detector):
    files = random.Random(0).sample(sorted(REAL_FACES.glob("*.jpg")), 12)
    found = 0
    for path in files:
        image = read_image(path)
        faces = detect_faces(image, detector)
        if faces:
            found += 1
            assert plausible_landmarks(faces[0].landmarks, *image.shape[1::-1])
    assert found >= 11, (detector, found)


# ---------------------------------------------------------------------------------------------
# The default (dlib) path is what it was
# ---------------------------------------------------------------------------------------------


def _old_hog_route(image: np.ndarray):
    """The first route of the original detect_landmarks, written with dlib's calls directly:
    the largest HOG box of ``detector(image, up)`` and the predictor in it."""
    dlib, detector, predictor, _ = folder_mod._models()
    up = 1 if max(image.shape[:2]) < 640 else 0
    rects = detector(image, up)
    if len(rects) == 0:
        return None
    r = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(image, dlib.rectangle(r.left(), r.top(), r.right(), r.bottom()))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def test_default_detection_is_unchanged(synthetic):
    images = [f.image for f in synthetic]
    if REAL_FACES.is_dir():
        images += [read_image(p) for p in sorted(REAL_FACES.glob("*.jpg"))[:6]]
    hog = 0
    for image in images:
        det = detect_landmarks(image)
        again = detect_landmarks(image, "dlib")
        assert det.method == again.method and np.array_equal(det.landmarks, again.landmarks)
        if det.method == "hog":
            hog += 1
            np.testing.assert_array_equal(det.landmarks, _old_hog_route(image))
            np.testing.assert_array_equal(detect_faces(image)[0].landmarks, det.landmarks)
    assert hog >= len(synthetic)
    assert CACHE_VERSION == "dlib68-v1"


def test_dlib_keeps_the_fallbacks_for_tight_crops(synthetic):
    """Crops with no context defeat the plain HOG detector: detect_faces gives the face that the
    fallback chain of detect_landmarks finds."""
    routes = set()
    for face, inset in ((synthetic[0], 0.1), (synthetic[2], 0.0)):
        lo, hi = face.landmarks.min(0), face.landmarks.max(0)
        x0, y0 = np.floor(lo + inset * (hi - lo)).astype(int)
        x1, y1 = np.ceil(hi - inset * (hi - lo)).astype(int)
        crop = np.ascontiguousarray(face.image[y0:y1, x0:x1])
        det = detect_landmarks(crop)
        found = detect_faces(crop)
        assert det.landmarks is not None and det.method != "hog"
        assert len(found) == 1 and found[0].method == det.method
        np.testing.assert_array_equal(found[0].landmarks, det.landmarks)
        bx0, by0, bx1, by1 = found[0].box
        centre = det.landmarks.mean(0)
        assert bx0 < centre[0] < bx1 and by0 < centre[1] < by1
        routes.add(det.method)
    assert len(routes) == 2  # two different fallback routes


# ---------------------------------------------------------------------------------------------
# Errors, the folder source, preprocessing
# ---------------------------------------------------------------------------------------------


def test_unknown_detector_lists_the_choices():
    image = np.zeros((64, 64, 3), np.uint8)
    for call in (lambda: detect_faces(image, "retinaface"),
                 lambda: detect_landmarks(image, "retinaface"),
                 lambda: FolderFaces(".", detector="retinaface")):
        with pytest.raises(ValueError, match="dlib, mtcnn, mediapipe"):
            call()
    from dfattn.data.sources import SplitSizes, face_splits

    with pytest.raises(ValueError, match="retinaface"):
        face_splits("synthetic", SplitSizes(2, 2, 2), detector="retinaface")


def test_a_missing_package_names_the_pip_command(monkeypatch):
    det_mod._mtcnn.cache_clear()
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails
    try:
        with pytest.raises(DetectorUnavailable, match="pip install --no-deps facenet-pytorch"):
            detect_faces(np.zeros((64, 64, 3), np.uint8), "mtcnn")
        assert issubclass(DetectorUnavailable, ImportError)
    finally:
        det_mod._mtcnn.cache_clear()


def test_folder_source_takes_the_detector(detector, synthetic, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i, face in enumerate(synthetic[:2]):
        cv2.imwrite(str(root / f"f{i}.png"), face.image[:, :, ::-1])
    cv2.imwrite(str(root / "blank.png"), np.full((120, 120, 3), 128, np.uint8))
    faces = FolderFaces(root, cache_dir=tmp_path / "cache", detector=detector)
    assert faces.files == ["f0.png", "f1.png"] and [f for f, _ in faces.skipped] == ["blank.png"]
    assert all((m in DLIB_ROUTES) if detector == "dlib" else m.startswith(detector)
               for m in faces.methods)
    expected = "" if detector == "dlib" else f"-{detector}"
    assert faces.cache_path.name.endswith(f"{expected}.json")
    assert faces.cache_path.stem.count("-") == (0 if detector == "dlib" else 1)
    again = FolderFaces(root, cache_dir=tmp_path / "cache", detector=detector)  # from the cache
    np.testing.assert_array_equal(again.landmarks(0), faces.landmarks(0))
    for i in range(len(faces)):
        assert nme(faces.landmarks(i), synthetic[i].landmarks) < 0.12


def test_face_splits_and_preprocess_pass_the_detector(monkeypatch, tmp_path):
    from dfattn.cli.preprocess import parser
    from dfattn.data import sources

    seen = {}

    class Fake:
        def __init__(self, path, **kwargs):
            seen.update(kwargs)
            self.identities, self.skipped = list(range(10)), []

        def __len__(self):
            return 10

    monkeypatch.setattr(folder_mod, "FolderFaces", Fake)
    sources.face_splits(f"folder:{tmp_path}", sources.SplitSizes(6, 2, 2), detector="mediapipe")
    assert seen["detector"] == "mediapipe"
    args = parser().parse_args(["--dataset", "ffpp", "--root", "r", "--out", "o",
                                "--face-detector", "mtcnn"])
    assert args.face_detector == "mtcnn"
    assert parser().parse_args(["--dataset", "ffpp", "--root", "r", "--out", "o"]).face_detector \
        == "dlib"
    from dfattn.preprocess import _settings

    assert "detector" not in _settings(32, 317, 0.125, "dlib")  # old markers still match
    assert _settings(32, 317, 0.125, "mtcnn")["detector"] == "mtcnn"
