"""CNN face detectors that install offline with their weights: boxes for dlib's 68-point predictor.

The 68 iBUG landmarks that every data module needs come from dlib's shape predictor, which wants
the face box *dlib's HOG detector* would have drawn. This module runs another detector and turns
each face it finds into a :class:`Proposal` holding the detector's own box, its confidence, its
few key points and the dlib-like box mapped from it (:func:`dlib_box`); :mod:`dfattn.data.folder`
fits the landmarks in that box (:func:`~dfattn.data.folder.detect_faces`).

Detectors (:data:`FACE_DETECTORS`):

- ``"dlib"``: dlib's frontal HOG detector (in :mod:`dfattn.data.folder`; nothing here). Misses
  profiles, small faces and tight crops without context (the fallback chain of
  :func:`~dfattn.data.folder.detect_landmarks` rescues the crops).
- ``"mtcnn"``: facenet-pytorch's MTCNN (P/R/O-Net cascade, weights in the wheel, runs on torch).
  Install with ``pip install --no-deps facenet-pytorch==2.6.0``: its declared requirements would
  replace this project's torch and torchvision; what it imports (torch, torchvision, numpy,
  Pillow, requests, tqdm) is here already.
- ``"mediapipe"``: MediaPipe's BlazeFace, both models shipped in the wheel: the short-range one
  (faces filling much of the picture, such as crops) and the full-range one (small faces in a
  large frame); their detections are merged (non-maximum suppression). Install with
  ``pip install --no-deps mediapipe==0.10.21`` plus ``absl-py flatbuffers protobuf attrs``: its
  declared requirements would replace opencv-python-headless by opencv-contrib-python and pin
  numpy below 2; it runs with this project's numpy 2, OpenCV and protobuf. (Its native part
  prints a harmless protobuf message when imported; it is silenced here.)

The maps of :data:`BOX_TO_DLIB` and :data:`POINTS_TO_DLIB` were fitted on the shared real
faces and DFDC crops where dlib's own detector finds the face, as they are and shrunk into a
1280 x 720 frame, from a sample of 300 images (``benchmarks/bench_face_detectors.py --fit``
refits them; another sample gives other values within the noise of dlib's own boxes, the split
between ``k_d`` and ``k_q`` especially, as the two distances are nearly proportional).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "BOX_TO_DLIB",
    "FACE_DETECTORS",
    "INSTALL",
    "POINTS_TO_DLIB",
    "DetectorUnavailable",
    "FoundFace",
    "Proposal",
    "check_detector",
    "dlib_box",
    "iou",
    "load_detector",
    "propose",
]

FACE_DETECTORS = ("dlib", "mtcnn", "mediapipe")
INSTALL = {
    "mtcnn": "pip install --no-deps facenet-pytorch==2.6.0 && pip install requests",
    "mediapipe": "pip install --no-deps mediapipe==0.10.21 && pip install absl-py flatbuffers "
                 "protobuf attrs",
}
_PACKAGES = {"mtcnn": "facenet-pytorch", "mediapipe": "mediapipe"}
# The dlib-like box of a CNN face (dlib_box) averages two estimates fitted on the shared faces.
# From the detector's box (x0, y0, x1, y1), w = x1 - x0, h = y1 - y0: a square of side s * w
# centred at the box centre moved by (dx * w, dy * h).
BOX_TO_DLIB = {
    "mtcnn": (-0.008, 0.048, 0.975),
    "mediapipe-short": (-0.026, -0.047, 0.955),
    "mediapipe-full": (-0.029, -0.034, 0.992),
}
# From the key points: eye midpoint e, mouth centre m, d = |m - e|, u = (m - e) / d, v = u turned
# a quarter towards image-left, eye distance q: centre e + a d u + b d v, side k_d d + k_q q.
POINTS_TO_DLIB = {
    "mtcnn": (0.444, 0.044, 0.961, 0.988),
    "mediapipe-short": (0.429, 0.036, 1.341, 0.805),
    "mediapipe-full": (0.375, 0.036, 2.576, 0.048),
}
_MEDIAPIPE_CONFIDENCE = 0.5  # MediaPipe's default
_NMS_IOU = 0.3  # merging the two MediaPipe models' detections
_PAD = 0.3  # border added around an image where nothing is found (tight crops)
Box = tuple[float, float, float, float]  # left, top, right, bottom


@dataclass(frozen=True)
class FoundFace:
    """One face found in an image.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in image pixels: the detector's own box (dlib's HOG box for
            ``"hog"``, the box implied by the landmarks for dlib's fallback routes); it may reach
            past the image border.
        landmarks: ``(68, 2)`` float32 iBUG landmarks, image pixels.
        score: the detector's confidence (HOG score, MTCNN or MediaPipe probability; the
            verifying HOG score for dlib's fallback routes; ``nan`` if none).
        method: the route that found it: ``"hog"``, ``"hog-padded"``, ``"haar"``, ``"hog-low"``,
            ``"whole-image"`` (dlib), ``"mtcnn"``, ``"mediapipe-short"``, ``"mediapipe-full"``.
    """

    box: Box
    landmarks: np.ndarray
    score: float
    method: str


@dataclass(frozen=True)
class Proposal:
    """A CNN detector's face: its box, confidence, key points ``(k, 2)`` (MTCNN: eyes, nose tip,
    mouth corners; MediaPipe: eyes, nose tip, mouth centre, ear tragions), the model that found it
    and the dlib-like box the shape predictor should be run in."""

    box: Box
    score: float
    points: np.ndarray
    model: str
    dlib_box: Box


class DetectorUnavailable(ImportError):
    """The optional package a face detector needs is not installed (the message says how)."""


def check_detector(name: str) -> str:
    """``name`` if it is one of :data:`FACE_DETECTORS`, else a ``ValueError`` listing them."""
    if name not in FACE_DETECTORS:
        raise ValueError(f"unknown face detector {name!r}: choose one of {', '.join(FACE_DETECTORS)}")
    return name


def _unavailable(name: str, err: Exception) -> DetectorUnavailable:
    return DetectorUnavailable(
        f"face detector {name!r} needs the {_PACKAGES[name]} package, which is not installed or "
        f"does not load ({type(err).__name__}: {err}); install it with: {INSTALL[name]}"
    )


def dlib_box(box: Box, points: np.ndarray, model: str) -> Box:
    """The square box dlib's HOG detector would give for a face that ``model`` found with ``box``
    and key ``points``: centred where the key points say (:data:`POINTS_TO_DLIB`, more reliable
    on tight crops, where MTCNN's boxes overshoot), its side the mean of the two estimates (the
    box's, :data:`BOX_TO_DLIB`, steadier on small faces)."""
    dx, dy, s = BOX_TO_DLIB[model]
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    centre = np.array([0.5 * (x0 + x1) + dx * w, 0.5 * (y0 + y1) + dy * h])
    side = s * w
    pts = np.asarray(points, np.float64)
    if pts.shape[0] >= 4:
        eyes = pts[:2].mean(0)
        mouth = pts[3:5].mean(0) if model == "mtcnn" else pts[3]
        d = float(np.hypot(*(mouth - eyes)))
        if d >= 1.0:
            a, b, k_d, k_q = POINTS_TO_DLIB[model]
            u = (mouth - eyes) / d
            v = np.array([-u[1], u[0]])
            centre = eyes + a * d * u + b * d * v
            side = 0.5 * (side + k_d * d + k_q * float(np.hypot(*(pts[1] - pts[0]))))
    half = 0.5 * side
    return (float(centre[0] - half), float(centre[1] - half), float(centre[0] + half),
            float(centre[1] + half))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# --------------------------------------------------------------------------------------------
# MTCNN (facenet-pytorch)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mtcnn():
    try:
        from facenet_pytorch import MTCNN
    except Exception as err:  # ImportError, or a torch mismatch surfacing as another error
        raise _unavailable("mtcnn", err) from err
    return MTCNN(keep_all=True, device="cpu")


def _mtcnn_proposals(image: np.ndarray) -> list[Proposal]:
    boxes, probs, points = _mtcnn().detect(image, landmarks=True)
    if boxes is None:
        return []
    out = []
    for box, prob, pts in zip(boxes, probs, points):
        box, pts = tuple(float(v) for v in box), np.asarray(pts, np.float32)
        out.append(Proposal(box, float(prob), pts, "mtcnn", dlib_box(box, pts, "mtcnn")))
    return out


# --------------------------------------------------------------------------------------------
# MediaPipe
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Silence stderr, Python's and the native one (MediaPipe's import and graph set-up print)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@lru_cache(maxsize=1)
def _mediapipe():
    """The short- and full-range BlazeFace graphs, warmed up (loaded once per process)."""
    try:
        with _quiet():
            from mediapipe.python.solutions import face_detection

            models = []
            for selection in (0, 1):
                model = face_detection.FaceDetection(
                    model_selection=selection, min_detection_confidence=_MEDIAPIPE_CONFIDENCE)
                model.process(np.zeros((64, 64, 3), np.uint8))  # the graph logs on first use
                models.append(model)
    except Exception as err:
        raise _unavailable("mediapipe", err) from err
    return tuple(models)


def _mediapipe_proposals(image: np.ndarray) -> list[Proposal]:
    h, w = image.shape[:2]
    found = []
    for model, name in zip(_mediapipe(), ("mediapipe-short", "mediapipe-full")):
        result = model.process(image)
        for d in result.detections or []:
            rel = d.location_data.relative_bounding_box
            box = (rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w,
                   (rel.ymin + rel.height) * h)
            points = np.array([(p.x * w, p.y * h) for p in d.location_data.relative_keypoints],
                              np.float32).reshape(-1, 2)
            score = float(d.score[0]) if len(d.score) else math.nan
            found.append(Proposal(box, score, points, name, dlib_box(box, points, name)))
    found.sort(key=lambda p: -p.score if math.isfinite(p.score) else 0.0)
    kept: list[Proposal] = []
    for p in found:  # greedy non-maximum suppression across the two models
        if all(iou(p.box, q.box) <= _NMS_IOU for q in kept):
            kept.append(p)
    return kept


# --------------------------------------------------------------------------------------------


def load_detector(detector: str) -> None:
    """Load a detector's model now (once per process): a ``ValueError`` for an unknown name, a
    :class:`DetectorUnavailable` when its package is missing (nothing to load for dlib's)."""
    check_detector(detector)
    if detector == "mtcnn":
        _mtcnn()
    elif detector == "mediapipe":
        _mediapipe()


def propose(image: np.ndarray, detector: str) -> list[Proposal]:
    """Every face a CNN detector finds in an ``(H, W, 3)`` uint8 RGB image, largest box first.

    When it finds none, it looks again in the image with a replicated border (``_PAD`` of the
    longer side): tight face crops defeat both detectors now and then.

    Raises:
        ValueError: ``detector`` is not a CNN detector of :data:`FACE_DETECTORS`.
        DetectorUnavailable: its package is missing (an ``ImportError`` naming the pip command).
    """
    check_detector(detector)
    if detector == "dlib":
        raise ValueError("propose() runs the CNN detectors; dlib's is in dfattn.data.folder")
    image = np.ascontiguousarray(image)
    run = _mtcnn_proposals if detector == "mtcnn" else _mediapipe_proposals
    found = run(image)
    if not found:  # a tight crop: the detectors want some context around the face
        pad = int(round(_PAD * max(image.shape[:2])))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = [_shifted(p, -pad) for p in run(padded)]
    return sorted(found, key=lambda p: -(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]))


def _shifted(p: Proposal, by: float) -> Proposal:
    move = lambda b: tuple(float(v) + by for v in b)  # noqa: E731
    return Proposal(move(p.box), p.score, p.points + np.float32(by), p.model, move(p.dlib_box))
