"""``dfattn-evaluate``: score trained detectors on held-out data and write the tables.

Data (``--data``):

- ``synthetic`` (default) or ``folder:PATH``: the held-out test people of the same source as in
  training (the checkpoint's seed and split sizes), with the cross-manipulation benchmark
  (each held-out family and self-blended fakes) and, with ``--quality``, every degradation;
- ``labelled:PATH``: a folder with ``real/`` and ``fake/`` face images (a sub-folder per video
  gives video-level metrics). They are prepared as the run's training faces were: landmarks by
  its face detector (cached), the training crop and margin at its face size, then its input
  size; an image without a face found is scored resized as it is (``--no-face skip``: left
  out). Columns ``scored`` and ``no_face`` count them. ``--no-align`` only resizes;
- ``preprocessed:PATH``: the test split of a ``dfattn-preprocess`` output (frame and video level,
  32 frames per video by default).

Each run is labelled by the detector its header names and, where that differs, its folder
(``mat (runs_b)``); two runs that would share a label get ``#2``, ``#3``. Writes
``OUT/<label>/frames.csv`` and the tables ``OUT/*.csv`` / ``OUT/*.md``; prints the main one::

    dfattn-evaluate runs/laanet/best.safetensors runs/mat/best.safetensors --out results --quality

A reused ``--out`` first loses the files an earlier dfattn-evaluate wrote there (listed in
``OUT/.dfattn-evaluate.json``), so no stale table stands beside the new ones. A checkpoint that
cannot be read is named and skipped: the others' tables are still written, and the exit code is 1.
Unreadable images of a ``labelled:`` folder are skipped and counted (column ``skipped``).
The frame table (``frame.csv``: on built-in or folder data every held-out family's fakes and the
self-blended ones against the test reals; with videos also ``video.csv``) has AUC, AP, EER, TPR at 1 % and
5 % FPR (``tpr_at_fpr_1``, ``tpr_at_fpr_5``), the expected calibration error (``ece``), and the
accuracy and balanced accuracy at the checkpoint's operating point (``threshold``: chosen on
validation by dfattn-train; 0.5 for a checkpoint without one; probabilities are temperature-scaled
where the run fitted a temperature).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from dfattn.cli.common import load_for_use, output_folder, positive_int, run_tool
from dfattn.config import get_device
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.evaluate import OperatingPoint, evaluate_frames, operating_metrics
from dfattn.plotting import save_table
from dfattn.protocol import (FrameItems, cross_manipulation, cross_manipulation_table, labelled_frames,
                             quality, quality_table)
from dfattn.train import autocast_dtype, scoring_autocast


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="best.safetensors of each run (the run folder's name labels it)")
    p.add_argument("--data", default=None, help="synthetic | folder:PATH | labelled:PATH | preprocessed:PATH "
                                                "(default: the data each run trained on)")
    p.add_argument("--out", required=True, help="folder for the tables")
    p.add_argument("--quality", action="store_true", help="also the degradation benchmark (built-in data)")
    p.add_argument("--flip-tta", action="store_true", help="average each image's logit with its flip's")
    p.add_argument("--n-test", type=positive_int, default=None, help="test faces (default: the run's)")
    p.add_argument("--frames", type=positive_int, default=32, help="preprocessed: frames per test video (32)")
    p.add_argument("--no-align", action="store_true",
                   help="labelled: resize the images as they are (default: crop them as training faces)")
    p.add_argument("--no-face", choices=("resize", "skip"), default="resize",
                   help="labelled: an image without a detected face is scored resized (default) or left out")
    p.add_argument("--workers", type=positive_int, default=1, help="processes for landmark detection (1)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--amp", choices=("run", "bf16", "off"), default="run",
                   help="autocast while scoring: the run's eval_amp (by default as its training: bf16 "
                        "on CUDA, float32 on CPU), bf16 (also on CPUs with native bf16), or off (float32)")
    p.add_argument("--device", default=None)
    return p


MANIFEST = ".dfattn-evaluate.json"


def _folder(path: Path) -> str:
    return path.parent.name if path.name in ("best.safetensors", "last.safetensors") else path.stem


def _label(detector: str, checkpoint: Path, taken: set[str]) -> str:
    """The run's label: the header's detector, with the folder where that says more, unique."""
    folder = _folder(checkpoint)
    label = detector if folder == detector else f"{detector} ({folder})"
    base, k = label, 2
    while label in taken:
        label, k = f"{base} #{k}", k + 1
    taken.add(label)
    return label


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def evaluate_run(model, header: dict[str, Any], label: str, data: str | None, out: Path,
                 args: argparse.Namespace, written: list[str]) -> dict[str, Any]:
    """The result rows of one run (``{table: Series}``); its frame tables go to ``OUT/<label>/``."""
    cfg = header["train_config"]
    size, seed = cfg["image_size"], cfg["seed"]
    data = data or cfg["data"]
    dev = next(model.parameters()).device
    amp = (scoring_autocast(cfg.get("amp", "auto"), cfg.get("eval_amp"), dev) if args.amp == "run"
           else autocast_dtype(args.amp, dev))
    kw = dict(batch_size=args.batch_size, flip_tta=args.flip_tta, progress=True, amp=amp,
              channels_last=cfg.get("channels_last", False))
    run_dir = out / _slug(label)
    run_dir.mkdir(parents=True, exist_ok=True)

    def save(table: pd.DataFrame, name: str) -> None:
        table.to_csv(run_dir / name, index=False)
        written.append(str((run_dir / name).relative_to(out)))

    point = OperatingPoint.from_header(header, label)

    def summary(table: pd.DataFrame, extra: dict | None = None) -> pd.Series:
        """All-rows metrics at the operating point (probabilities temperature-scaled where the run
        fitted a temperature), TPR at 1 % / 5 % FPR and the ECE."""
        table["prob"] = point.prob(table["logit"])
        metrics = evaluate_frames(table, threshold=point.threshold).loc["all"]
        more = {**operating_metrics(table["label"], table["prob"]), "threshold": point.threshold, **(extra or {})}
        return pd.concat([metrics, pd.Series(more)])

    kind, _, path = data.partition(":")
    result: dict[str, Any] = {}
    if kind in ("synthetic", "folder"):
        sizes = SplitSizes(cfg["n_train"], cfg["n_val"], args.n_test if args.n_test is not None else cfg["n_test"])
        faces = face_splits(data, sizes, cfg["face_size"], seed, detector=cfg.get("face_detector", "dlib"))["test"]
        models = {label: model}
        frames = cross_manipulation(models, faces, size, seed, **kw)
        result["cross"] = cross_manipulation_table(frames).iloc[0]
        result["frame"] = summary(frames)  # every family's fakes and the SBI fakes against the reals
        save(frames, "frames.csv")
        if args.quality:
            qframes = quality(models, faces, size, seed, **kw)
            save(qframes, "quality_frames.csv")
            result["quality"] = quality_table(qframes).iloc[:, 0]
    elif kind in ("labelled", "preprocessed"):
        if kind == "labelled":
            from dfattn.data.labelled import LabelledFolder

            align = None if args.no_align else cfg.get("face_detector", "dlib")
            items = LabelledFolder(path, size, skip_bad=True, align=align, face_size=cfg["face_size"],
                                   no_face=args.no_face, workers=args.workers)
        else:
            from dfattn.data.preprocessed import PreprocessedFrames

            items = FrameItems(PreprocessedFrames(path, "test", frames_per_video=args.frames), size)
        frames, videos = labelled_frames(model, items, **kw)
        counts = {"scored": len(frames), "skipped": len(getattr(items, "skipped", ()))}
        if kind == "labelled":
            counts["no_face"] = len(items.no_face)
        result["frame"] = summary(frames, counts)
        save(frames, "frames.csv")
        if videos is not None:
            result["video"] = summary(videos)
            save(videos, "videos.csv")
    else:
        raise ValueError(f"unknown --data {data!r}: synthetic, folder:PATH, labelled:PATH or preprocessed:PATH")
    return result


def _clear_earlier(out: Path) -> None:
    """Remove what an earlier dfattn-evaluate wrote into ``out`` (its manifest lists it)."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return
    try:
        earlier = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        earlier = []
    for name in earlier if isinstance(earlier, list) else []:
        target = (out / str(name)).resolve()
        if out.resolve() in target.parents and target.is_file():
            target.unlink()
    manifest.unlink()


def _evaluate(args: argparse.Namespace) -> int:
    dev = get_device(args.device)
    out = output_folder(args.out)
    _clear_earlier(out)
    tables: dict[str, dict[str, Any]] = {}
    written: list[str] = []
    taken: set[str] = set()
    failed = []
    for checkpoint in map(Path, args.checkpoints):
        try:
            model, header, _ = load_for_use(checkpoint, dev)
            label = _label(header["detector"]["name"], checkpoint, taken)
            for key, row in evaluate_run(model, header, label, args.data, out, args, written).items():
                tables.setdefault(key, {})[label] = row
        except (ValueError, FileNotFoundError, KeyError) as err:
            message = f"{checkpoint}: missing {err} in the header" if isinstance(err, KeyError) else str(err)
            print(f"dfattn-evaluate: {message}; skipped", file=sys.stderr)
            failed.append(str(checkpoint))
    for key, rows in tables.items():
        table = pd.DataFrame(rows).T if key != "quality" else pd.DataFrame(rows)
        save_table(table, key, out, floatfmt=".3f")
        written += [f"{key}.csv", f"{key}.md"]
        print(f"\n{key} ({'AUC' if key in ('cross', 'quality') else 'all metrics'}):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    (out / MANIFEST).write_text(json.dumps(written, indent=1))
    if failed:
        print(f"dfattn-evaluate: {len(failed)} of {len(args.checkpoints)} checkpoints could not be evaluated: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-evaluate", parser(), _evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
