"""``dfattn-detect``: P(fake) of the face in an image, in every image of a folder, or in a video.

Each image (or each of ``--frames`` evenly spaced video frames) goes through the offline dlib
detector; the largest face is cropped around its 68 landmarks, resized to the model's input and
scored. A video's probability is the sigmoid of the mean frame logit (the papers' video-level
protocol). Prints one line per input and writes ``OUT/detections.csv`` row by row as faces are
scored (an interruption keeps every row written); for a detector with an attention map of its own
(LAA-Net's heatmap, MAT's attention), the map is drawn over each face as
``OUT/<name>_heatmap.png`` (``<name>`` is the file's stem, or its path below the inputs' common
folder with ``__`` for ``/`` where two inputs share a stem)::

    dfattn-detect runs/laanet/best.safetensors photo.jpg faces/ clip.mp4 --out detections

Unreadable images, missing or damaged videos and images without a face are skipped, counted and
named; the exit code is 0 when at least one face was scored, 1 otherwise, 130 on Ctrl-C.
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

from dfattn.cli.common import load_for_use, margin, output_folder, positive_int, run_tool
from dfattn.config import get_device
from dfattn.data.folder import crop_face, detect_landmarks, list_images, read_image
from dfattn.evaluate import fake_logit, video_level
from dfattn.plotting import heat_overlay

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
log = logging.getLogger("dfattn-detect")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-detect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained detector (best.safetensors)")
    p.add_argument("inputs", nargs="+", help="images, folders of images, or videos")
    p.add_argument("--out", default="detections", help="folder for detections.csv and heatmaps")
    p.add_argument("--frames", type=positive_int, default=32, help="frames per video (32)")
    p.add_argument("--margin", type=margin, default=0.2,
                   help="face crop margin, a share of the face box in [0, 1] (as in training on folders)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--no-heatmaps", action="store_true", help="do not write the overlay PNGs")
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


def _own_map(model, x: torch.Tensor) -> np.ndarray | None:
    """The detector's own attention over the face, ``(S, S)``, or ``None`` if it has none."""
    from dfattn.explain import attribution_maps

    try:
        heat = attribution_maps(model, x, "own")[0].cpu().numpy()
    except TypeError:  # no attention map of its own (the baseline)
        return None
    return heat


COLUMNS = ("source", "frame", "logit", "prob", "error")


def _detect(args: argparse.Namespace) -> int:
    dev = get_device(args.device)
    model, _, size = load_for_use(args.checkpoint, dev)
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
                    row = {"source": str(path), "frame": frame, "logit": math.nan, "prob": math.nan,
                           "error": problem}
                    if image is not None:
                        row.update(_score(model, image, size, dev, args, out,
                                          names[path] + (f"_f{frame}" if frame else "")))
                    if row["error"]:
                        log.warning("%s%s: skipped (%s)", path, f" frame {frame}" if frame else "", row["error"])
                    writer.writerow(row)
                    table.flush()  # a crash or Ctrl-C keeps every row so far
                    rows.append(row)
        except KeyboardInterrupt:
            interrupted = True
    _summary(rows, out)
    if interrupted:
        print(f"dfattn-detect: interrupted; the {len(rows)} rows so far are in {out / 'detections.csv'}",
              file=sys.stderr)
        return 130
    return 0 if any(math.isfinite(r["logit"]) for r in rows) else 1


def _score(model, image: np.ndarray, size: int, dev: torch.device, args: argparse.Namespace, out: Path,
           name: str) -> dict:
    """The row fields of one image: its largest face's logit and probability, or why there is none;
    the overlay is written as ``OUT/<name>_heatmap.png``."""
    det = detect_landmarks(image)
    if det.landmarks is None:
        return {"error": det.reason}
    face, _ = crop_face(image, det.landmarks, size, args.margin)
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float().div(255).to(dev)
    with torch.no_grad():
        logit = float(fake_logit(model, x, args.flip_tta))
    if not math.isfinite(logit):
        return {"error": f"the model's output is not finite ({logit}): a damaged checkpoint?"}
    heat = None if args.no_heatmaps else _own_map(model, x)
    if heat is not None:
        cv2.imwrite(str(out / f"{name}_heatmap.png"), cv2.cvtColor(heat_overlay(face, heat), cv2.COLOR_RGB2BGR))
    return {"logit": logit, "prob": 1 / (1 + math.exp(-logit))}


def _summary(rows: list[dict], out: Path) -> None:
    """One line per input (a video: :func:`~dfattn.evaluate.video_level`, the sigmoid of its mean
    frame logit), then the counts."""
    scored = [{"source": r["source"], "logit": r["logit"]} for r in rows if math.isfinite(r["logit"])]
    table = pd.DataFrame(scored, columns=["source", "logit"]).astype({"logit": float})
    inputs = video_level(table, "source").set_index("source")
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    for source, group in by_source.items():
        if source not in inputs.index:
            print(f"{source}: no face scored ({group[0]['error']})")
        elif len(group) > 1 or group[0]["frame"]:
            print(f"{source}: P(fake) = {inputs.loc[source, 'prob']:.3f} (mean logit of "
                  f"{inputs.loc[source, 'n_frames']}/{len(group)} frames with a face)")
        else:
            print(f"{source}: P(fake) = {inputs.loc[source, 'prob']:.3f}")
    print(f"dfattn-detect: {len(scored)} faces scored, {len(rows) - len(scored)} skipped; "
          f"table in {out / 'detections.csv'}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-detect", parser(), _detect, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
