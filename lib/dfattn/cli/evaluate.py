"""``dfattn-evaluate``: score trained detectors on held-out data and write the tables.

Data (``--data``):

- ``synthetic`` (default) or ``folder:PATH``: the held-out test people of the same source as in
  training (the checkpoint's seed and split sizes), with the cross-manipulation benchmark
  (each held-out family and self-blended fakes) and, with ``--quality``, every degradation;
- ``labelled:PATH``: a folder with ``real/`` and ``fake/`` face images (a sub-folder per video
  gives video-level metrics);
- ``preprocessed:PATH``: the test split of a ``dfattn-preprocess`` output (frame and video level,
  32 frames per video by default).

Writes ``OUT/<run>/frames.csv`` and the tables ``OUT/*.csv`` / ``OUT/*.md``; prints the main one::

    dfattn-evaluate runs/laanet/best.safetensors runs/mat/best.safetensors --out results --quality
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from dfattn.config import get_device
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.evaluate import evaluate_frames
from dfattn.plotting import save_table
from dfattn.protocol import (FrameItems, cross_manipulation, cross_manipulation_table, labelled_frames,
                             quality, quality_table)
from dfattn.checkpoint import load_detector


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="best.safetensors of each run (the run folder's name labels it)")
    p.add_argument("--data", default=None, help="synthetic | folder:PATH | labelled:PATH | preprocessed:PATH "
                                                "(default: the data each run trained on)")
    p.add_argument("--out", required=True, help="folder for the tables")
    p.add_argument("--quality", action="store_true", help="also the degradation benchmark (built-in data)")
    p.add_argument("--flip-tta", action="store_true", help="average each image's logit with its flip's")
    p.add_argument("--n-test", type=int, default=None, help="test faces (default: the run's)")
    p.add_argument("--frames", type=int, default=32, help="preprocessed: frames per test video (32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    return p


def _name(path: Path) -> str:
    return path.parent.name if path.name in ("best.safetensors", "last.safetensors") else path.stem


def evaluate_run(checkpoint: Path, data: str | None, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    device = get_device(args.device)
    model, header = load_detector(checkpoint, device)
    cfg = header["train_config"]
    size, seed = cfg["image_size"], cfg["seed"]
    data = data or cfg["data"]
    kw = dict(batch_size=args.batch_size, flip_tta=args.flip_tta, progress=True,
              amp=torch.bfloat16 if device.type == "cuda" else None, channels_last=cfg["channels_last"])
    run_dir = out / _name(checkpoint)
    run_dir.mkdir(parents=True, exist_ok=True)
    kind, _, path = data.partition(":")
    result: dict[str, Any] = {}
    if kind in ("synthetic", "folder"):
        sizes = SplitSizes(cfg["n_train"], cfg["n_val"], args.n_test or cfg["n_test"])
        faces = face_splits(data, sizes, cfg["face_size"], seed)["test"]
        models = {_name(checkpoint): model}
        frames = cross_manipulation(models, faces, size, seed, **kw)
        frames.to_csv(run_dir / "frames.csv", index=False)
        result["cross"] = cross_manipulation_table(frames).iloc[0]
        if args.quality:
            qframes = quality(models, faces, size, seed, **kw)
            qframes.to_csv(run_dir / "quality_frames.csv", index=False)
            result["quality"] = quality_table(qframes).iloc[:, 0]
    elif kind in ("labelled", "preprocessed"):
        if kind == "labelled":
            from dfattn.data.labelled import LabelledFolder

            items = LabelledFolder(path, size)
        else:
            from dfattn.data.preprocessed import PreprocessedFrames

            items = FrameItems(PreprocessedFrames(path, "test", frames_per_video=args.frames), size)
        frames, videos = labelled_frames(model, items, **kw)
        frames.to_csv(run_dir / "frames.csv", index=False)
        result["frame"] = evaluate_frames(frames).loc["all"]
        if videos is not None:
            videos.to_csv(run_dir / "videos.csv", index=False)
            result["video"] = evaluate_frames(videos).loc["all"]
    else:
        raise ValueError(f"unknown --data {data!r}: synthetic, folder:PATH, labelled:PATH or preprocessed:PATH")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, Any]] = {}
    for checkpoint in map(Path, args.checkpoints):
        try:
            for key, row in evaluate_run(checkpoint, args.data, out, args).items():
                tables.setdefault(key, {})[_name(checkpoint)] = row
        except (ValueError, FileNotFoundError) as err:
            print(f"dfattn-evaluate: {err}", file=sys.stderr)
            return 1
    for key, rows in tables.items():
        table = pd.DataFrame(rows).T if key != "quality" else pd.DataFrame(rows)
        save_table(table, key, out, floatfmt=".3f")
        print(f"\n{key} ({'AUC' if key in ('cross', 'quality') else 'all metrics'}):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
