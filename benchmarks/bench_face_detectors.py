"""Face detectors compared: the share of images where each finds a face, and its speed.

Run as ``python benchmarks/bench_face_detectors.py`` (``--sample N`` images per set with a fixed
``--seed``, 0 for all; ``--out`` for the markdown table, ``benchmarks/results/face_detectors.md``
by default). Sets, from ``../shared/data`` next to the repository (absent ones are skipped):

- ``dfdc_faces/real``, ``dfdc_faces/fake``: the DFDC face crops (224 px, tight, strongly
  compressed), reported each and together;
- ``real_faces``: the 700 real photos (160 px tight crops);
- ``frames``: DFDC real crops shrunk to 25-90 % (so faces of about 40 to 150 pixels) and pasted
  at a random place of a 1280 x 720 frame whose background is the crop blurred and darkened:
  small faces in a video frame, which the shared sets do not have.

A face counts as found when :func:`dfattn.data.folder.detect_faces` returns one (its landmarks
passed :func:`~dfattn.data.folder.plausible_landmarks`); ``frames`` only counts a face that
overlaps the pasted one. The speed is images per second of ``detect_faces`` alone (image
decoding excluded), one process, torch limited to one thread, the detectors interleaved image by
image so that the load of a shared machine falls on all of them alike. The landmark agreement
column is the median distance, over the inter-ocular distance, between a detector's landmarks and
those of dlib's plain HOG route where that route found the face.

Only aggregate numbers are written: no image, crop, landmark or per-image result.

``--fit`` instead refits the box maps of :mod:`dfattn.data.detectors` (``BOX_TO_DLIB`` and
``POINTS_TO_DLIB``) on the shared faces where dlib's HOG route finds the face, as crops and in
frames, and prints them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from dfattn.data import detectors as det_mod  # noqa: E402
from dfattn.data import folder as folder_mod  # noqa: E402
from dfattn.data.folder import FACE_DETECTORS, detect_faces, read_image  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
FRAME = (720, 1280)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sample(files: list[Path], n: int, seed: int) -> list[Path]:
    return sorted(files) if n <= 0 or n >= len(files) else sorted(random.Random(seed).sample(sorted(files), n))


def in_frame(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """``image`` shrunk by a random factor into a 1280 x 720 frame: ``(frame, factor, offset)``."""
    k = float(rng.uniform(0.25, 0.9))
    small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    frame = cv2.resize(cv2.GaussianBlur(image, (0, 0), 10), FRAME[::-1]) // 2
    off = np.array([rng.integers(0, FRAME[1] - small.shape[1]), rng.integers(0, FRAME[0] - small.shape[0])])
    frame[off[1]:off[1] + small.shape[0], off[0]:off[0] + small.shape[1]] = small
    return frame, k, off


def nme(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean() / max(np.linalg.norm(b[36:42].mean(0) - b[42:48].mean(0)), 1e-6))


def sets(n: int, seed: int) -> dict[str, list]:
    out = {}
    for name, folder in (("dfdc_faces/real", SHARED / "dfdc_faces" / "real"),
                         ("dfdc_faces/fake", SHARED / "dfdc_faces" / "fake"),
                         ("real_faces", SHARED / "real_faces")):
        if folder.is_dir():
            out[name] = sample(list(folder.glob("*.jpg")), n, seed)
    if "dfdc_faces/real" in out:
        out["frames"] = sample(list((SHARED / "dfdc_faces" / "real").glob("*.jpg")), max(n // 3, 1) if n > 0 else 300,
                               seed + 1)
    return out


def run(args) -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    detectors = [d for d in args.detectors]
    for d in detectors:
        det_mod.load_detector(d)
    data = sets(args.sample, args.seed)
    if not data:
        print(f"no shared data under {SHARED}: nothing to measure")
        return
    rng = np.random.default_rng(args.seed)
    stats: dict[tuple[str, str], dict] = {}
    start_all = time.perf_counter()
    for set_name, files in data.items():
        for d in detectors:
            stats[set_name, d] = {"n": 0, "found": 0, "multi": 0, "time": 0.0, "nme": [], "methods": {}}
        for path in files:
            image = read_image(path)
            target = None
            if set_name == "frames":
                image, k, off = in_frame(image, rng)
            results = {}
            for d in detectors:
                t = time.perf_counter()
                faces = detect_faces(image, d)
                dt = time.perf_counter() - t
                results[d] = faces
                s = stats[set_name, d]
                s["n"] += 1
                s["time"] += dt
            if set_name == "frames":  # the pasted face: its box in the frame
                h, w = read_image(path).shape[:2]
                target = (off[0], off[1], off[0] + k * w, off[1] + k * h)
            ref = results.get("dlib")
            ref_lm = ref[0].landmarks if ref and ref[0].method == "hog" else None
            for d, faces in results.items():
                s = stats[set_name, d]
                if target is not None:
                    faces = [f for f in faces if det_mod.iou(folder_mod._box_from_landmarks(f.landmarks), target) > 0.1]
                if faces:
                    s["found"] += 1
                    s["methods"][faces[0].method] = s["methods"].get(faces[0].method, 0) + 1
                    if ref_lm is not None and d != "dlib":
                        s["nme"].append(nme(faces[0].landmarks, ref_lm))
                s["multi"] += len(results[d]) > 1
        print(f"{set_name}: {len(files)} images done ({time.perf_counter() - start_all:.0f} s)", flush=True)
    write(args, data, stats, detectors, time.perf_counter() - start_all)


def write(args, data, stats, detectors, elapsed: float) -> None:
    def merged(names, d):
        parts = [stats[n, d] for n in names if (n, d) in stats]
        return {"n": sum(p["n"] for p in parts), "found": sum(p["found"] for p in parts),
                "multi": sum(p["multi"] for p in parts), "time": sum(p["time"] for p in parts),
                "nme": [x for p in parts for x in p["nme"]]}

    rows = []
    order = [n for n in ("dfdc_faces/real", "dfdc_faces/fake") if n in data]
    groups = [(n, [n]) for n in order]
    if len(order) == 2:
        groups.append(("dfdc_faces (all)", order))
    groups += [(n, [n]) for n in ("real_faces", "frames") if n in data]
    for label, names in groups:
        for d in detectors:
            s = merged(names, d)
            agree = f"{np.median(s['nme']):.3f}" if s["nme"] else "-"
            rows.append(f"| {label} | {d} | {s['n']} | {s['found'] / s['n']:.1%} | "
                        f"{s['multi'] / s['n']:.1%} | {s['n'] / s['time']:.1f} | {agree} |")
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for dist in ("dlib-bin", "facenet-pytorch", "mediapipe", "torch", "opencv-python-headless"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    n_desc = "all images" if args.sample <= 0 else f"a sample of {args.sample} images per set (seed {args.seed}; frames: {max(args.sample // 3, 1)})"
    speed = "images/s (measured under load)" if not args.idle else "images/s"
    text = f"""# Face detectors: share of images with a face found, and speed

Command: `python benchmarks/bench_face_detectors.py --sample {args.sample} --seed {args.seed}{" --out " + args.out if args.out else ""}`
({n_desc}; {elapsed / 60:.1f} min in all), {datetime.date.today().isoformat()}.
Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other jobs (load average at the end
{loadavg}): the speeds are lower than on an idle machine; the detectors ran interleaved image by
image, so their ratios are what to read. One process, torch and OpenCV limited to one thread.
Versions: {", ".join(versions)}.

Found: `detect_faces` returned a face (68 landmarks that passed `plausible_landmarks`); in
`frames` (DFDC real crops shrunk to 25-90 % into a 1280 x 720 frame) only a face on the pasted
one counts. More than one: images where it returned several faces (each image holds one
face, so these are mostly false detections; in `frames` the background, the crop blurred, can
still pass for a face). Landmark agreement: median distance to dlib's
plain-HOG landmarks where that route found the face, over the inter-ocular distance.

| set | detector | images | found | more than one | {speed} | landmark agreement with dlib HOG |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + "\n"
    routes = []
    for label, names in groups:
        if "dlib" in detectors and len(names) == 1:
            m = stats[names[0], "dlib"]["methods"]
            n = stats[names[0], "dlib"]["n"]
            routes.append(f"{label} {m.get('hog', 0) / n:.1%} by the plain HOG route, "
                          f"{(sum(m.values()) - m.get('hog', 0)) / n:.1%} by its fallbacks")
    if routes:
        text += "\ndlib's faces (largest face): " + "; ".join(routes) + ".\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


# --------------------------------------------------------------------------------------------
# --fit: the box maps of dfattn.data.detectors
# --------------------------------------------------------------------------------------------


def fit(args) -> None:
    files = sample(list((SHARED / "real_faces").glob("*.jpg")) + list((SHARED / "dfdc_faces").rglob("*.jpg")),
                   args.sample or 300, args.seed)
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list] = {}
    for path in files:
        image = read_image(path)
        det, box, _ = folder_mod._dlib_chain(image)
        if det.method != "hog":
            continue
        for kind in ("crop", "frame"):
            if kind == "crop":
                img, k, off = image, 1.0, np.zeros(2)
            else:
                img, k, off = in_frame(image, rng)
            target = ((np.array(box, float).reshape(2, 2) + 0.5) * k - 0.5 + off).ravel()
            for d in ("mtcnn", "mediapipe"):
                best = max(((det_mod.iou(p.box, tuple(target)), p) for p in det_mod.propose(img, d)),
                           default=(0.0, None), key=lambda op: op[0])
                if best[0] > 0.2:
                    p = best[1]
                    rows.setdefault(p.model, []).append((target, np.array(p.box, float), p.points.astype(float)))
    for model, data in sorted(rows.items()):
        T = np.array([r[0] for r in data]); B = np.array([r[1] for r in data]); P = np.array([r[2] for r in data])
        tc, ts = (T[:, :2] + T[:, 2:]) / 2, T[:, 2] - T[:, 0]
        bc, bw, bh = (B[:, :2] + B[:, 2:]) / 2, B[:, 2] - B[:, 0], B[:, 3] - B[:, 1]
        box_map = (np.median((tc[:, 0] - bc[:, 0]) / bw), np.median((tc[:, 1] - bc[:, 1]) / bh), np.median(ts / bw))
        eyes = P[:, :2].mean(1)
        mouth = P[:, 3:5].mean(1) if model == "mtcnn" else P[:, 3]
        em = mouth - eyes
        d = np.hypot(*em.T)
        q = np.hypot(*(P[:, 1] - P[:, 0]).T)
        u = em / d[:, None]
        v = np.stack([-u[:, 1], u[:, 0]], 1)
        rel = tc - eyes
        a, b = np.median((rel * u).sum(1) / d), np.median((rel * v).sum(1) / d)
        (k_d, k_q), *_ = np.linalg.lstsq(np.stack([d, q], 1) / ts[:, None], np.ones(len(ts)), rcond=None)
        print(f'"{model}": box {tuple(round(float(x), 3) for x in box_map)}, '
              f'points {tuple(round(float(x), 3) for x in (a, b, k_d, k_q))}  ({len(data)} faces)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=300, help="images per set (0: all; default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detectors", nargs="+", default=list(FACE_DETECTORS), choices=FACE_DETECTORS)
    p.add_argument("--out", default=None,
                   help="also write the table here (the committed one: benchmarks/results/face_detectors.md)")
    p.add_argument("--idle", action="store_true", help="the machine was idle: drop 'under load'")
    p.add_argument("--fit", action="store_true", help="refit the detectors' box maps and print them")
    args = p.parse_args()
    fit(args) if args.fit else run(args)


if __name__ == "__main__":
    main()
