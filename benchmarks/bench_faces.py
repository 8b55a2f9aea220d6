"""Face sources: synthetic faces per second on one core, landmark detection on real photos.

Run as ``python benchmarks/bench_faces.py`` (``--batch``/``--batches`` per size, ``--real`` for a
folder of photos; by default ``../shared/data/real_faces`` next to the repository, skipped when
absent). Synthetic rendering runs with ``cv2.setNumThreads(1)`` and without torch: the number
is the throughput of one data-loading worker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.data.synthetic import SyntheticFaces  # noqa: E402


def bench_synthetic(size: int, batch: int, batches: int) -> tuple[float, float]:
    """Faces per second rendering ``batches`` batches of ``batch`` faces at ``size`` px:
    ``(best batch, mean over all)``. The best batch is the one least disturbed by other work
    on a shared machine."""
    faces = SyntheticFaces(batch * batches, size=size, seed=1)
    faces[0]  # noise tiles and caches
    rates = []
    for b in range(batches):
        start = time.perf_counter()
        for i in range(b * batch, (b + 1) * batch):
            faces[i]
        rates.append(batch / (time.perf_counter() - start))
    return max(rates), len(rates) / sum(1.0 / r for r in rates)


def bench_folder(root: Path, workers: int) -> None:
    from dfattn.data.folder import FolderFaces

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        faces = FolderFaces(root, cache_dir=cache, workers=workers)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        FolderFaces(root, cache_dir=cache)
        warm = time.perf_counter() - start
    total = len(faces) + len(faces.skipped)
    print(f"landmarks on {total} photos in {root} ({workers} worker(s)): "
          f"{total / cold:.1f} images/s cold ({cold:.1f} s), cached re-open {warm * 1e3:.0f} ms; "
          f"{len(faces)} with landmarks ({len(faces) / max(total, 1):.1%}), "
          f"{len(faces.skipped)} skipped")
    by_method: dict[str, int] = {}
    for m in faces.methods:
        by_method[m] = by_method.get(m, 0) + 1
    print("  found by:", ", ".join(f"{k} {v}" for k, v in sorted(by_method.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="faces per timed batch")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per size")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared/data/real_faces")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rates = {size: bench_synthetic(size, args.batch, args.batches) for size in (128, 256, 384)}
    for size, (best, mean) in rates.items():
        print(f"synthetic faces {size:3d} px, one core: {best:6.1f} faces/s best batch "
              f"({1e3 / best:.2f} ms/face), {mean:6.1f} faces/s overall; "
              f"{best / rates[256][0]:.2f}x the 256 px rate")
    if args.real.is_dir():
        bench_folder(args.real, args.workers)
    else:
        print(f"no real faces at {args.real}: skipped the landmark benchmark")


if __name__ == "__main__":
    main()
