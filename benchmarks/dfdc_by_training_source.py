"""The DFDC faces by the source of the real training faces (issue 18), outside the book.

Chapter 4's section "By the source of the training reals" as a script, for a machine where the
whole ``make book`` does not fit: LAA-Net and the baseline are trained (train-or-load) at the
book's scale on UTKFace (chapter 3's runs: ``runs/<profile>/utkface/<model>``), on the 700
``real_faces`` photos alone and on both together (``folder:UTK+folder:real_faces``: each split on
its own, a seeded sample of the profile's ``n_train`` from both training splits), each selected on
its own validation people, and each selected run is scored once on ``dfdc_faces`` (aligned as its
training faces, flip TTA, the run's scoring precision). Nothing is chosen on the test set: the
rows are the result.

Prints, and writes to ``--out`` (markdown), the selected epoch and validation AUCs of every run,
the metrics with 95 % bootstrap intervals (1,000 stratified resamples), the paired difference
``laanet - baseline`` within each source, the counts, the machine and the minutes.

    python benchmarks/dfdc_by_training_source.py [--profile cpu] [--models laanet baseline]
        [--sources utkface real_faces both] [--out benchmarks/results/dfdc_by_training_source.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from pathlib import Path

import pandas as pd

from dfattn.config import book_data, get_profile, runs_dir
from dfattn.data.folder import FolderFaces
from dfattn.protocol import by_training_source, training_source_table, with_intervals
from dfattn.train import TrainConfig

from bench_precision import machine  # this folder: the CPU model and its AVX-512 / bf16 flags

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("utkface", "real_faces", "both")  # UTKFace (chapter 3's runs), real_faces alone, the two joined


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--models", nargs="+", default=["laanet", "baseline"])
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES),
                   help="which sources of training reals (default: all three)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dfdc_by_training_source.md")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("dfattn.data").setLevel(logging.ERROR)  # images without a face: counted
    profile = get_profile(args.profile)
    if profile.real is None:  # smoke: a check of the whole path at its tiny training scale
        profile = dataclasses.replace(profile, real=profile.train)
    book = book_data(profile)
    if book.cross_dataset is None or book.other_reals is None:
        raise SystemExit("needs ../shared/data with utkface/, real_faces/ and dfdc_faces/")
    start = time.perf_counter()
    workers = os.cpu_count() or 1
    for folder in (book.spec.partition(":")[2], book.other_reals, book.cross_dataset):
        t = time.perf_counter()  # landmarks once per folder, in parallel (the results do not depend on it)
        faces = FolderFaces(folder, workers=workers)
        print(f"{Path(folder).name}: {len(faces)} faces, {len(faces.skipped)} without one "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    runs = runs_dir(book.profile) / book.key
    other = f"folder:{book.other_reals}"
    every = {"utkface": (book.label, book.spec, runs),
             "real_faces": ("real_faces", other, runs / "sources" / "real_faces"),
             "both": (f"{book.label} + real_faces", f"{book.spec}+{other}", runs / "sources" / "both")}
    sources = {every[k][0]: every[k][1:] for k in SOURCES if k in args.sources}
    kw = dict(flip_tta=True, batch_size=64, progress=False)
    frames, info = by_training_source(args.models, sources, book.profile, book.cross_dataset, args.seed, **kw)
    table = training_source_table(frames, info, seed=args.seed)
    minutes = (time.perf_counter() - start) / 60

    selection = {}
    for label, (spec, folder) in sources.items():
        for m in args.models:
            history = pd.read_csv(Path(folder) / m / "metrics.csv")
            best = history.loc[history["val_auc"].idxmax()]
            selection[(label, m)] = {"epochs": len(history), "selected epoch": int(best["epoch"]),
                                     "val AUC (SBI)": best["val_auc"],
                                     "held-out families AUC": best.get("family_auc", float("nan")),
                                     "training min": history["train_seconds"].sum() / 60}
    selection = pd.DataFrame(selection).T.rename_axis(["source", "model"]).reset_index()
    selection[["epochs", "selected epoch"]] = selection[["epochs", "selected epoch"]].astype(int)
    config = TrainConfig(model=args.models[0], profile=book.profile, data=book.spec).resolved()
    shown = with_intervals(table, metrics=("auc", "ap", "eer", "tpr_at_fpr_5", "tpr_at_fpr_1"))
    shown = shown[["auc", "ap", "eer", "tpr_at_fpr_5", "tpr_at_fpr_1", "n", "training faces"]].reset_index()
    shown["n"] = shown["n"].astype(object).where(shown["n"].notna(), "")
    counts = "; ".join(f"{label}: {v['training faces']} training and {v['validation faces']} validation faces, "
                       f"{v['scored']} DFDC images scored, no face found in {v['no_face']} (scored resized)"
                       for label, v in info.items())
    text = "\n".join([
        "# DFDC faces by the source of the real training faces",
        "",
        f"`python benchmarks/dfdc_by_training_source.py --profile {args.profile} --sources "
        f"{' '.join(args.sources)}`: {machine()}, "
        f"{minutes:.0f} min (landmarks, training and scoring; runs already on disk are read back).",
        "",
        f"Profile {book.profile.name}: {config.backbone} at {config.image_size} px, ImageNet weights, "
        f"the epochs of each run in the first table, seed {args.seed}; flip TTA; scoring in the run's "
        f"precision (float32 on CPU under this profile). {counts}.",
        "",
        "Model selection (validation people of each source only):",
        "",
        selection.to_markdown(index=False, floatfmt=".3f"),
        "",
        "On the 2,000 DFDC faces (95 % stratified bootstrap intervals, 1,000 resamples; "
        "`laanet - baseline`: the paired difference on the same images and resamples):",
        "",
        shown.to_markdown(index=False),
        "",
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    table.to_csv(args.out.with_suffix(".csv"), float_format="%.4f")


if __name__ == "__main__":
    main()
