"""``dfattn-preprocess``: face crops and landmarks of a benchmark's videos, for training and
evaluation.

Reads a benchmark in its official layout (:mod:`dfattn.data.public`) and writes the folder
that :mod:`dfattn.data.preprocessed` reads (layout in :mod:`dfattn.preprocess`)::

    dfattn-preprocess --dataset ffpp --root /data/FaceForensics++ --out /data/pre/ffpp \\
        --compression c23 --frames 32 --size 317 --workers 8
    dfattn-preprocess --dataset celebdf --root /data/Celeb-DF-v2 --out /data/pre/cdf --split test
    dfattn-preprocess --dataset dfdc --root /data/dfdc --out /data/pre/dfdc --face-detector mtcnn

Exit status 0 when the run completes (videos without a face or unreadable are listed in the
report, not fatal), 1 when the benchmark cannot be loaded or the settings are invalid, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from dfattn.data.detectors import FACE_DETECTORS
from dfattn.data.public import PUBLIC_DATASETS, FFPP_METHODS, SPLITS, load_public_dataset
from dfattn.preprocess import preprocess


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dfattn-preprocess",
        description="Sample frames of benchmark videos, detect the face offline (dlib, MTCNN or "
                    "MediaPipe; landmarks by dlib), and save face crops, their 68 landmarks and "
                    "an index.",
    )
    p.add_argument("--dataset", required=True, choices=sorted(PUBLIC_DATASETS),
                   help="benchmark layout to read")
    p.add_argument("--root", required=True, help="the benchmark's folder")
    p.add_argument("--out", required=True,
                   help="output folder (several benchmarks may share one)")
    p.add_argument("--frames", type=int, default=32, help="frames per video, evenly spaced (32)")
    p.add_argument("--size", type=int, default=317, help="side of the saved crops in pixels (317)")
    p.add_argument("--margin", type=float, default=0.125,
                   help="crop side = (1 + 2 margin) x face box: 0.125 the paper's 1.25 "
                        "enlargement (default), 0.25 the code's 1.5")
    p.add_argument("--face-detector", default="dlib", choices=FACE_DETECTORS,
                   help="face detector: dlib (HOG, default), mtcnn (facenet-pytorch) or "
                        "mediapipe; the 68 landmarks come from dlib's predictor in each case")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: all cores)")
    p.add_argument("--split", action="append", choices=SPLITS,
                   help="only videos of this split (repeatable; default all)")
    p.add_argument("--compression", default="c23", choices=("c0", "raw", "c23", "c40"),
                   help="ffpp / dfd: compression level (c23)")
    p.add_argument("--splits", help="ffpp: folder of train/val/test.json (default ROOT/splits)")
    p.add_argument("--methods", nargs="+", choices=FFPP_METHODS,
                   help="ffpp: manipulations to include (default: all present)")
    p.add_argument("--labels", help="videos: labels CSV path,label[,split][,method] "
                                    "(default ROOT/labels.csv)")
    p.add_argument("--name", default="videos", help="videos: dataset name (videos)")
    p.add_argument("--no-resume", action="store_true", help="redo videos already done")
    p.add_argument("--quiet", action="store_true", help="no progress bar or printed report")
    return p


def _options(args: argparse.Namespace) -> dict:
    """The adapter options that apply to ``args.dataset``."""
    if args.dataset == "ffpp":
        return {"compression": args.compression, "methods": args.methods, "splits": args.splits}
    if args.dataset == "dfd":
        return {"compression": args.compression}
    if args.dataset == "videos":
        return {"labels": args.labels, "dataset": args.name}
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        records = load_public_dataset(args.dataset, args.root, **_options(args))
    except (OSError, ValueError) as err:
        print(f"dfattn-preprocess: {err}", file=sys.stderr)
        return 1
    if args.split:
        records = [r for r in records if r.split in args.split]
    try:
        preprocess(records, args.out, frames_per_video=args.frames, size=args.size,
                   margin=args.margin, workers=args.workers, resume=not args.no_resume,
                   verbose=not args.quiet, detector=args.face_detector)
    except (ValueError, ImportError) as err:  # checked before any work: settings, duplicate
        # ids, a detector whose package is missing (DetectorUnavailable, an ImportError)
        print(f"dfattn-preprocess: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
