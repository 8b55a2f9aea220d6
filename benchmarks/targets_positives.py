"""Vulnerable points per fake: LAA-Net's heatmap targets, ``"paper"`` against ``"official"``.

The focal heatmap loss of LAA-Net divides by the number of positives (pixels where the target
heatmap is exactly 1, i.e. the vulnerable points), so this count sets how much the heatmap term
weighs against the classifier. This script counts them on the fakes of training pairs
(:class:`~dfattn.data.datasets.PseudoFakePairs`, ``train=True``, SBI) under both target variants
(:mod:`dfattn.data.targets`), without and with the geometric augmentation, for

- the built-in synthetic faces at the cpu profile's size and at 384 px (LAA-Net's input size),
  blended at the face size a training run uses (``TrainConfig.face_size``: max(input, 160)) and,
  at 384, also at 256 px, about the crop size at which LAA-Net's code blends (the "official"
  boundary is quantised at the blending resolution, so the count depends on it);
- real photos (``../shared/data/real_faces`` if present, via
  :class:`~dfattn.data.folder.FolderFaces`, landmarks cached in a temporary folder; the photos are
  only read, and only aggregate numbers are printed).

Run as ``python benchmarks/targets_positives.py`` (``--n`` pairs per setting, ``--n-real``).
The printed table is kept in ``benchmarks/results/targets_positives.txt``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.config import PROFILES  # noqa: E402
from dfattn.data.datasets import PseudoFakePairs  # noqa: E402
from dfattn.data.synthetic import SyntheticFaces  # noqa: E402
from dfattn.data.targets import TARGET_VARIANTS  # noqa: E402

REAL_FACES = REPO.parent / "shared" / "data" / "real_faces"


def face_size(image_size: int) -> int:
    """The side of the source faces a training run uses (``TrainConfig.face_size``'s default)."""
    return max(image_size, 160)


def positives(faces, image_size: int, n: int, targets: str, geometric: bool, seed: int = 0) -> np.ndarray:
    """``(n,)`` number of heatmap pixels equal to 1 in the fake of each of the first ``n`` pairs."""
    ds = PseudoFakePairs(faces, image_size, train=True, seed=seed, targets=targets, geometric=geometric)
    return np.array([int((ds[i]["heatmap"][1] == 1).sum()) for i in range(min(n, len(ds)))])


def rows_for(source: str, faces, image_size: int, n: int) -> list[dict]:
    rows = []
    side = faces[0].image.shape[0]
    for geometric in (False, True):
        counts = {v: positives(faces, image_size, n, v, geometric) for v in TARGET_VARIANTS}
        for variant, c in counts.items():
            rows.append({
                "faces": f"{source} {side}", "input": f"{image_size} ({image_size // 4})",
                "geometric": geometric,
                "targets": variant, "pairs": len(c), "mean": c.mean(), "median": np.median(c),
                "p10": np.percentile(c, 10), "p90": np.percentile(c, 90), "min": c.min(), "max": c.max(),
                "x paper": c.mean() / counts["paper"].mean(),
            })
    return rows


def real_faces(n: int, size: int, work: Path):
    """The first ``n`` photos of the shared folder, copied to ``work`` (landmarks cached there)."""
    from dfattn.data.folder import FolderFaces

    folder = work / f"photos_{n}"
    if not folder.exists():
        folder.mkdir()
        for path in sorted(REAL_FACES.glob("*.jpg"))[:n]:
            shutil.copy(path, folder / path.name)
    return FolderFaces(folder, size=size, cache_dir=work / "cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="pairs per synthetic setting")
    parser.add_argument("--n-384", type=int, default=100, help="pairs per setting at 384 px")
    parser.add_argument("--n-real", type=int, default=100, help="real photos (0: skip)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    start = time.perf_counter()
    cpu = PROFILES["cpu"].train.image_size
    rows = rows_for("synthetic", SyntheticFaces(args.n, face_size(cpu), seed=0), cpu, args.n)
    for side in (face_size(384), 256):
        rows += rows_for("synthetic", SyntheticFaces(args.n_384, side, seed=0), 384, args.n_384)
    if args.n_real and REAL_FACES.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            for size in (cpu, 384):
                faces = real_faces(args.n_real, face_size(size), Path(tmp))
                rows += rows_for("real photos", faces, size, args.n_real)
    table = pd.DataFrame(rows).set_index(["faces", "input", "geometric", "targets"])
    pd.set_option("display.width", 160)
    print("Vulnerable points (heatmap positives) per fake, SBI training pairs, seed 0; faces = source "
          "and side of the blended faces; input = image side (heatmap side)")
    print(table.round(2).to_string())
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
