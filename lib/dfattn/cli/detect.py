"""``dfattn-detect``: is each face in an image, a folder of images or a video real or fake?

Every face the face detector finds (``--face-detector``: dlib's HOG detector by default, or the
CNN detectors MTCNN and MediaPipe) is cropped around its 68 landmarks, resized to the model's
input and scored: one row per face in ``OUT/detections.csv``, with its box. An image's (or a
video frame's) score is the highest of its faces' (``--image-score max``, SBI's rule: one fake
face makes a fake picture) or that of its largest face (``largest``). A video's score is the mean
of its frame scores (logits), through the sigmoid: the papers' video-level protocol.

Each score is a decision: ``fake`` when P(fake) is at least the checkpoint's operating point
(chosen on validation by dfattn-train and stored in its header; 0.5 for a checkpoint without
one), ``real`` below it, or ``uncertain`` within ``--uncertain`` of it; ``--threshold`` sets
another. The threshold used is printed. ``OUT/<name>_overlay.png`` draws each face's box, decision
and P(fake) over the picture, with the detector's own attention map in the face's crop where it
has one (LAA-Net's heatmap, MAT's attention). ``<name>`` is the file's stem, or its path below the
inputs' common folder with ``__`` for ``/`` where two inputs share a stem::

    dfattn-detect runs/laanet/best.safetensors photo.jpg faces/ clip.mp4 --out detections

Rows are written and flushed as faces are scored (an interruption keeps them). Unreadable
images, missing or damaged videos and images without a face are skipped, counted and named; the
exit code is 0 when at least one face was scored, 1 otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dfattn.cli.common import load_for_use, margin, number, output_folder, positive_int, run_tool
from dfattn.config import get_device
from dfattn.data.detectors import load_detector as load_face_detector
from dfattn.data.folder import FACE_DETECTORS, crop_face, detect_faces, face_square, list_images, read_image
from dfattn.evaluate import OperatingPoint, fake_logit, video_level
from dfattn.plotting import heat_overlay

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
IMAGE_SCORES = ("max", "largest")
log = logging.getLogger("dfattn-detect")


def probability(text: str) -> float:
    """argparse type: a probability strictly between 0 and 1."""
    value = number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a threshold on P(fake) is in (0, 1), got {value:g}")
    return value


def band(text: str) -> float:
    """argparse type: the half-width of the uncertain band, in [0, 0.5)."""
    value = number(text)
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"the uncertain band is a share of probability in [0, 0.5), got {value:g}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-detect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained detector (best.safetensors)")
    p.add_argument("inputs", nargs="+", help="images, folders of images, or videos")
    p.add_argument("--out", default="detections", help="folder for detections.csv and the overlays")
    p.add_argument("--frames", type=positive_int, default=32, help="frames per video (32)")
    p.add_argument("--margin", type=margin, default=0.2,
                   help="face crop margin, a share of the face box in [0, 1] (as in training on folders)")
    p.add_argument("--face-detector", choices=FACE_DETECTORS, default=FACE_DETECTORS[0],
                   help=f"face detector ({FACE_DETECTORS[0]})")
    p.add_argument("--image-score", choices=IMAGE_SCORES, default="max",
                   help="an image's score: its most fake face's (max, SBI's rule) or its largest face's")
    p.add_argument("--threshold", type=probability, default=None,
                   help="call fake at P(fake) >= this (default: the checkpoint's operating point)")
    p.add_argument("--uncertain", type=band, default=0.0, metavar="BAND",
                   help="call uncertain within BAND of the threshold (e.g. 0.1; default 0: off)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--no-overlays", "--no-heatmaps", dest="no_overlays", action="store_true",
                   help="do not write the overlay PNGs")
    p.add_argument("--device", default=None)
    return p


def _inputs(inputs: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """``(path, error)`` for every image or video the inputs name (folders expanded)."""
    for item in map(Path, inputs):
        if item.is_dir():
            files = list_images(item)
            if not files:
                yield item, "no images in folder"
            for f in files:
                yield f, ""
        elif not item.exists():
            yield item, "no such file"
        else:
            yield item, ""


def _names(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name per input: its stem, or, where stems collide, its path below the
    inputs' common folder (``a/face.jpg`` -> ``a__face_jpg``)."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    parents = [str(p.resolve().parent) for p in paths]
    common = Path(os.path.commonpath(parents)) if parents else Path()
    names = {}
    for p in paths:
        if stems[p.stem] == 1:
            names[p] = p.stem
        else:
            rel = p.resolve().relative_to(common)
            names[p] = "__".join(rel.parent.parts + (f"{rel.stem}_{rel.suffix.lstrip('.')}",))
    return names


def _frames(path: Path, frames: int) -> Iterator[tuple[str, np.ndarray | None, str]]:
    """``(frame label, RGB image or None, error)`` of one input: the image, or sampled frames."""
    try:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            from dfattn.data.video import sample_frames

            indices, images = sample_frames(path, frames)
            for k, image in zip(indices, images):
                yield str(int(k)), image, ""
        else:
            yield "", read_image(path), ""
    except (ValueError, OSError) as err:  # unreadable, missing, damaged: a counted skip
        yield "", None, str(err)


def _own_maps(model, x: torch.Tensor) -> np.ndarray | None:
    """The detector's own attention over each face of the batch, ``(B, S, S)`` (one pass), or
    ``None`` if it has none."""
    from dfattn.explain import attribution_maps

    try:
        return attribution_maps(model, x, "own").cpu().numpy()
    except TypeError:  # no attention map of its own (the baseline)
        return None


COLUMNS = ("source", "frame", "face", "x0", "y0", "x1", "y1", "logit", "prob", "decision", "error")
COLOURS = {"fake": (230, 40, 40), "real": (40, 180, 60), "uncertain": (240, 170, 0)}  # RGB


def _crop_to_image(square: tuple[int, int, int], size: int) -> np.ndarray:
    """The ``2 x 3`` affine map from the pixels of a ``size`` crop of ``square``
    (:func:`~dfattn.data.folder.face_square`) to image pixels (pixel centres map)."""
    x0, y0, n = square
    k = n / size
    return np.array([[k, 0.0, x0 + 0.5 * k - 0.5], [0.0, k, y0 + 0.5 * k - 0.5]], np.float32)


class Overlay:
    """The picture with each face's box, decision and P(fake), and the detector's own map
    warped back into the face's crop."""

    def __init__(self, image: np.ndarray):
        self.image = image.copy()
        self.labels: list[tuple[tuple[float, ...], str, str]] = []

    def add(self, box, face: np.ndarray, square: tuple[int, int, int], heat: np.ndarray | None,
            decision: str, prob: float) -> None:
        if heat is not None:
            h, w = self.image.shape[:2]
            matrix = _crop_to_image(square, face.shape[0])
            coloured = cv2.warpAffine(heat_overlay(face, heat), matrix, (w, h), flags=cv2.INTER_LINEAR)
            inside = cv2.warpAffine(np.ones(face.shape[:2], np.uint8), matrix, (w, h),
                                    flags=cv2.INTER_NEAREST).astype(bool)
            self.image[inside] = coloured[inside]
        self.labels.append((box, decision, f"{decision} {prob:.2f}"))

    def write(self, path: Path) -> None:
        image = self.image
        thick = max(1, round(max(image.shape[:2]) / 300))
        for box, decision, text in self.labels:  # boxes and labels over every heat map
            colour = COLOURS.get(decision, (255, 255, 255))
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, thick)
            scale = 0.4 * thick
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = y0 - 3 if y0 - th - 4 >= 0 else y1 + th + 3
            cv2.rectangle(image, (x0, ty - th - 2), (x0 + tw + 2, ty + 2), colour, -1)
            cv2.putText(image, text, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _point(header: dict, args: argparse.Namespace) -> OperatingPoint:
    """The decision rule: ``--threshold`` if given, else the checkpoint's operating point."""
    point = OperatingPoint.from_header(header, args.checkpoint)
    if args.threshold is None:
        return point
    logit = point.temperature * math.log(args.threshold / (1.0 - args.threshold))
    return OperatingPoint(logit=logit, rule="given", temperature=point.temperature, on="--threshold")


def _detect(args: argparse.Namespace) -> int:
    dev = get_device(args.device)
    try:
        load_face_detector(args.face_detector)  # a missing optional package: say so before any work
    except ImportError as err:
        raise ValueError(f"--face-detector {args.face_detector}: {err}") from None
    model, header, size = load_for_use(args.checkpoint, dev)
    point = _point(header, args)
    print(f"dfattn-detect: {point.describe()}" + (f"; uncertain within {args.uncertain:g}" if args.uncertain else ""))
    out = output_folder(args.out)
    items = list(_inputs(args.inputs))
    names = _names([p for p, error in items if not error])
    rows: list[dict] = []
    interrupted = False
    with open(out / "detections.csv", "w", newline="") as table:
        writer = csv.DictWriter(table, COLUMNS)
        writer.writeheader()
        table.flush()
        try:
            for path, error in tqdm(items, desc="dfattn-detect", unit="input", leave=False):
                frames = [("", None, error)] if error else _frames(path, args.frames)
                for frame, image, problem in frames:
                    base = {"source": str(path), "frame": frame, "face": "", "logit": math.nan,
                            "prob": math.nan, "decision": "", "error": problem}
                    found: list[dict] = []
                    if image is not None:
                        scored = _score(model, image, size, dev, args, point, out,
                                        names[path] + (f"_f{frame}" if frame else ""))
                        if isinstance(scored, str):  # why the picture has no score
                            base["error"] = scored
                        else:
                            found = scored
                    if base["error"]:
                        log.warning("%s%s: skipped (%s)", path, f" frame {frame}" if frame else "", base["error"])
                    for face_row in found or [{}]:
                        row = {**base, **face_row}
                        writer.writerow(row)
                        rows.append(row)
                    table.flush()  # a crash or Ctrl-C keeps every row so far
        except KeyboardInterrupt:
            interrupted = True
    _summary(rows, out, point, args)
    if interrupted:
        print(f"dfattn-detect: interrupted; the {len(rows)} rows so far are in {out / 'detections.csv'}",
              file=sys.stderr)
        return 130
    return 0 if any(math.isfinite(r["logit"]) for r in rows) else 1


def _score(model, image: np.ndarray, size: int, dev: torch.device, args: argparse.Namespace,
           point: OperatingPoint, out: Path, name: str) -> list[dict] | str:
    """The rows of one picture's faces (largest first), or why it has none; the overlay is written
    as ``OUT/<name>_overlay.png``."""
    faces = detect_faces(image, args.face_detector)
    if not faces:
        return "no face found"
    crops = [crop_face(image, f.landmarks, size, args.margin) for f in faces]
    x = torch.from_numpy(np.stack([c for c, _ in crops])).permute(0, 3, 1, 2).float().div(255).to(dev)
    with torch.no_grad():
        logits = fake_logit(model, x, args.flip_tta).double().cpu().numpy()  # (n_faces,)
    if not np.isfinite(logits).all():
        return f"the model's output is not finite ({logits.tolist()}): a damaged checkpoint?"
    probs = point.prob(logits)
    rows = []
    overlay = None if args.no_overlays else Overlay(image)
    heats = None if overlay is None else _own_maps(model, x)  # (n_faces, S, S) or None
    for k, (found, (face, _), logit, prob) in enumerate(zip(faces, crops, logits, probs)):
        decision = point.decide(float(logit), args.uncertain)
        x0, y0, x1, y1 = (round(float(v), 1) for v in found.box)
        rows.append({"face": k, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "logit": float(logit),
                     "prob": float(prob), "decision": decision})
        if overlay is not None:
            overlay.add(found.box, face, face_square(found.landmarks, args.margin),
                        None if heats is None else heats[k], decision, float(prob))
    if overlay is not None:
        overlay.write(out / f"{name}_overlay.png")
    return rows


def picture_scores(rows: pd.DataFrame, rule: str = "max") -> pd.DataFrame:
    """One logit per picture (an image, or a frame of a video) from its faces' rows: the highest
    (``max``, SBI's rule) or the largest face's (``largest``: face 0, faces come largest first)."""
    if rule not in IMAGE_SCORES:
        raise ValueError(f"unknown image score {rule!r}: choose from {IMAGE_SCORES}")
    scored = rows[np.isfinite(rows["logit"].astype(float))]
    keys = ["source", "frame"]
    grouped = scored.groupby(keys, sort=False)
    pictures = grouped.agg(logit=("logit", "max"), n_faces=("logit", "size")).reset_index()
    if rule == "largest":
        largest = scored[scored["face"].astype(int) == 0][keys + ["logit"]]
        pictures = pictures.drop(columns="logit").merge(largest, on=keys, how="left")[keys + ["logit", "n_faces"]]
    return pictures


def _summary(rows: list[dict], out: Path, point: OperatingPoint, args: argparse.Namespace) -> None:
    """One line per input: its decision and P(fake) (an image: :func:`picture_scores` of its faces;
    a video: :func:`~dfattn.evaluate.video_level`, the mean of its frame scores), then the counts."""
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"logit": float, "frame": str})
    pictures = picture_scores(table, args.image_score)
    inputs = video_level(pictures[["source", "logit"]], "source").set_index("source")
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    for source, group in by_source.items():
        if source not in inputs.index:
            print(f"{source}: no face scored ({group[0]['error']})")
            continue
        logit = float(inputs.loc[source, "logit"])
        verdict = f"{point.decide(logit, args.uncertain)} (P(fake) = {float(point.prob(logit)):.3f}"
        mine = pictures[pictures["source"] == source]
        n_frames = len({r["frame"] for r in group})
        if n_frames > 1 or group[0]["frame"]:
            print(f"{source}: {verdict}; mean logit of {len(mine)}/{n_frames} frames with a face)")
        else:
            faces = int(mine["n_faces"].iloc[0])
            how = "" if faces == 1 else f"; {'most fake' if args.image_score == 'max' else 'largest'} of {faces} faces"
            print(f"{source}: {verdict}{how})")
    n_faces = int(np.isfinite(table["logit"]).sum())
    skipped = len(table) - n_faces
    print(f"dfattn-detect: {n_faces} faces scored in {len(pictures)} pictures, {skipped} skipped; "
          f"table in {out / 'detections.csv'}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-detect", parser(), _detect, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
