"""Pseudo-fake throughput: SBI pairs per second with LAA-Net's targets, and BI pairs per second.

Run as ``python benchmarks/bench_sbi.py`` (``--n`` faces, ``--size`` px, ``--repeats``). One
process, one OpenCV thread: the number is the throughput of one data-loading worker. Faces are
rendered before timing. Each repeat times every face once; the best repeat is reported (the
machine may be shared), with the per-step breakdown of that repeat.

References measured with the official code on the same 2-core machines: the official SBI code makes
about 75 pairs/s without targets, LAA-Net's pipeline about 37 pairs/s with them. Goal: >= 80.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.data.blending import NearestLandmarkIndex, blend_images, self_blend
from dfattn.data.synthetic import SyntheticFaces
from dfattn.data.targets import laanet_targets

STEPS = ("mask", "perturb", "affine", "elastic", "blur", "blend", "targets")
GOAL = 80.0


def sbi_repeat(faces, heatmap_size: int, seed: int) -> tuple[float, dict[str, float]]:
    """One pass over ``faces``: (seconds, seconds per step)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for i, face in enumerate(faces):
        rng = np.random.default_rng([seed, i])
        result = self_blend(face, rng, timings=timings)
        t0 = time.perf_counter()
        laanet_targets(result.mask_unscaled, heatmap_size, ratio=result.ratio)
        timings["targets"] = timings.get("targets", 0.0) + time.perf_counter() - t0
    return time.perf_counter() - start, timings


def bi_repeat(faces, index: NearestLandmarkIndex, heatmap_size: int, seed: int) -> float:
    start = time.perf_counter()
    for i, face in enumerate(faces):
        result = blend_images(face, index, np.random.default_rng([seed, i]))
        laanet_targets(result.mask_unscaled, heatmap_size, ratio=result.ratio)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="faces (pre-rendered)")
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    source = SyntheticFaces(args.n, size=args.size, seed=3)
    faces = [source[i] for i in range(args.n)]
    heatmap_size = args.size // 4

    sbi_repeat(faces[:10], heatmap_size, seed=1000)  # warm-up
    best, best_steps = float("inf"), {}
    for r in range(args.repeats):
        seconds, steps = sbi_repeat(faces, heatmap_size, seed=r)
        if seconds < best:
            best, best_steps = seconds, steps
    rate = args.n / best
    print(f"SBI + LAA-Net targets, {args.size} px, 1 thread: {rate:.1f} pairs/s "
          f"({1e3 / rate:.2f} ms/pair, best of {args.repeats} x {args.n}); "
          f"goal {GOAL:.0f}: {'met' if rate >= GOAL else 'NOT met'} ({rate / GOAL:.2f}x); "
          f"vs SBI code ~75/s without targets: {rate / 75:.2f}x, "
          f"vs LAA-Net ~37/s: {rate / 37:.2f}x")
    accounted = sum(best_steps.values())
    for step in STEPS:
        t = best_steps.get(step, 0.0)
        print(f"  {step:8s} {1e3 * t / args.n:6.3f} ms/pair  {t / best:6.1%}")
    print(f"  {'other':8s} {1e3 * (best - accounted) / args.n:6.3f} ms/pair  "
          f"{(best - accounted) / best:6.1%}")

    start = time.perf_counter()
    index = NearestLandmarkIndex.from_faces(faces)
    build = time.perf_counter() - start
    bi_best = min(bi_repeat(faces, index, heatmap_size, seed=r) for r in range(args.repeats))
    bi_rate = args.n / bi_best
    print(f"BI + LAA-Net targets, {args.size} px, 1 thread: {bi_rate:.1f} pairs/s "
          f"({1e3 / bi_rate:.2f} ms/pair; k-nearest index over {args.n} faces built in "
          f"{1e3 * build:.1f} ms); {bi_rate / rate:.2f}x the SBI rate")


if __name__ == "__main__":
    main()
