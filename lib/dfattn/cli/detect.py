"""``dfattn-detect``: P(fake) of the face in an image, in every image of a folder, or in a video.

Each image (or each of ``--frames`` evenly spaced video frames) goes through the offline dlib
detector; the largest face is cropped around its 68 landmarks, resized to the model's input and
scored. A video's probability is the sigmoid of the mean frame logit (the papers' video-level
protocol). Prints one line per input and writes ``OUT/detections.csv``; for a detector with an
attention map of its own (LAA-Net's heatmap, MAT's attention), the map is drawn over each face as
``OUT/<name>_heatmap.png``::

    dfattn-detect runs/laanet/best.safetensors photo.jpg faces/ clip.mp4 --out detections
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from dfattn.config import get_device
from dfattn.data.folder import crop_face, detect_landmarks, list_images, read_image
from dfattn.checkpoint import load_detector
from dfattn.evaluate import fake_logit
from dfattn.plotting import heat_overlay

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
log = logging.getLogger("dfattn-detect")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-detect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained detector (best.safetensors)")
    p.add_argument("inputs", nargs="+", help="images, folders of images, or videos")
    p.add_argument("--out", default="detections", help="folder for detections.csv and heatmaps")
    p.add_argument("--frames", type=int, default=32, help="frames per video (32)")
    p.add_argument("--margin", type=float, default=0.2, help="face crop margin (as in training on folders)")
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--no-heatmaps", action="store_true", help="do not write the overlay PNGs")
    p.add_argument("--device", default=None)
    return p


def _sources(inputs: Sequence[str], frames: int) -> Iterator[tuple[str, str, np.ndarray | None, str]]:
    """``(source, frame label, RGB image or None, error)`` for every image / sampled frame."""
    for item in map(Path, inputs):
        if item.is_dir():
            files = list_images(item)
            if not files:
                yield str(item), "", None, "no images in folder"
            for f in files:
                yield from _sources([str(f)], frames)
        elif item.suffix.lower() in VIDEO_SUFFIXES:
            from dfattn.data.video import sample_frames

            try:
                indices, images = sample_frames(item, frames)
            except ValueError as err:
                yield str(item), "", None, str(err)
                continue
            for k, image in zip(indices, images):
                yield str(item), str(int(k)), image, ""
        else:
            try:
                yield str(item), "", read_image(item), ""
            except (ValueError, FileNotFoundError) as err:
                yield str(item), "", None, str(err)


def _own_map(model, x: torch.Tensor) -> np.ndarray | None:
    """The detector's own attention over the face, ``(S, S)``, or ``None`` if it has none."""
    from dfattn.explain import attribution_maps

    try:
        heat = attribution_maps(model, x, "own")[0].cpu().numpy()
    except TypeError:  # no attention map of its own (the baseline)
        return None
    return heat


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parser().parse_args(argv)
    device = get_device(args.device)
    try:
        model, header = load_detector(args.checkpoint, device)
    except (ValueError, FileNotFoundError) as err:
        print(f"dfattn-detect: {err}", file=sys.stderr)
        return 1
    size = header["train_config"]["image_size"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for source, frame, image, error in _sources(args.inputs, args.frames):
        row = {"source": source, "frame": frame, "logit": math.nan, "prob": math.nan, "error": error}
        if image is not None:
            det = detect_landmarks(image)
            if det.landmarks is None:
                row["error"] = det.reason
            else:
                face, _ = crop_face(image, det.landmarks, size, args.margin)
                x = torch.from_numpy(face).permute(2, 0, 1)[None].float().div(255).to(device)
                with torch.no_grad():
                    logit = fake_logit(model, x, args.flip_tta)
                row["logit"] = float(logit)
                row["prob"] = float(torch.sigmoid(logit))
                heat = None if args.no_heatmaps else _own_map(model, x)
                if heat is not None:
                    stem = Path(source).stem + (f"_f{frame}" if frame else "")
                    cv2.imwrite(str(out / f"{stem}_heatmap.png"),
                                cv2.cvtColor(heat_overlay(face, heat), cv2.COLOR_RGB2BGR))
        if row["error"]:
            log.warning("%s%s: skipped (%s)", source, f" frame {frame}" if frame else "", row["error"])
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "detections.csv", index=False)
    scored = table.dropna(subset=["logit"])
    for source, group in table.groupby("source", sort=False):
        ok = group.dropna(subset=["logit"])
        if ok.empty:
            print(f"{source}: no face scored ({group['error'].iloc[0]})")
        elif len(group) > 1 or group["frame"].iloc[0]:
            p = 1 / (1 + math.exp(-ok["logit"].mean()))
            print(f"{source}: P(fake) = {p:.3f} (mean logit of {len(ok)}/{len(group)} frames with a face)")
        else:
            print(f"{source}: P(fake) = {ok['prob'].iloc[0]:.3f}")
    skipped = len(table) - len(scored)
    print(f"dfattn-detect: {len(scored)} faces scored, {skipped} skipped; table in {out / 'detections.csv'}")
    return 0 if len(scored) else 1


if __name__ == "__main__":
    sys.exit(main())
