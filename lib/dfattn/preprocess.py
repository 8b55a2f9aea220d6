"""Offline preprocessing of benchmark videos into face crops with 68 landmarks.

For each :class:`~dfattn.data.public.VideoRecord`: sample ``frames_per_video`` frames evenly
(:func:`~dfattn.data.video.sample_frames`, 32 as in LAA-Net's released test configuration), find the largest face and its 68 landmarks in each frame offline
(:func:`~dfattn.data.folder.detect_landmarks`: dlib HOG + 68-point predictor by default; the
``detector`` option picks a CNN face detector, :mod:`dfattn.data.detectors`), crop it
(:func:`~dfattn.data.folder.crop_face`) and save crop and landmarks. Output layout::

    <out>/
      index.csv                                one row per saved crop (see INDEX_COLUMNS)
      report.json                              the last run's report (PreprocessReport)
      <video_id>/                              e.g. ffpp-c23/Deepfakes/000_003/
        000000.png  000000.npy  000012.png ...   crop (size x size RGB) and its (68, 2) float32
        done.json                              landmarks in crop pixels; the per-video marker

Crop. The paper crops "with an enlargement of 1.25" (LAA-Net paper §4.1): the crop's side is 1.25 x a
face box, here the square box dlib's detector gives for the landmarks (side = longer side of
the landmark box), i.e. :func:`crop_face` with ``margin = 0.125``. LAA-Net's code pads a
RetinaFace box by 0.25 on each side instead (1.5 x): ``margin = 0.25``. dlib's box is tighter
than RetinaFace's (it stops at the brows), so at 0.125 the chin lies close to the bottom edge;
use 0.25 where the crops feed self-blending, which needs some room around the jaw.

Resume. ``done.json`` is written last (atomically) and records the settings and the source
file's size and modification time; a video whose marker matches is skipped, any other is
(re)done. Videos that cannot be read or show no face in any frame get a marker too (so they
are not retried until the file changes) and are listed in every report: nothing is dropped
silently. ``index.csv`` is rebuilt from all markers under ``<out>`` at the end of each run, so
several benchmarks can share one output folder.

Videos are processed in parallel (``workers`` processes); the output does not depend on it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfattn.data.public import VideoRecord
from dfattn.data.detectors import check_detector, load_detector
from dfattn.data.folder import crop_face, detect_landmarks
from dfattn.data.preprocessed import INDEX_FILE
from dfattn.data.video import sample_frames

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_FILE",
    "MARKER_FILE",
    "PreprocessReport",
    "build_index",
    "preprocess",
    "process_video",
]

REPORT_FILE = "report.json"
MARKER_FILE = "done.json"
MARKER_VERSION = 1
INDEX_COLUMNS = ("video_id", "frame", "label", "split", "dataset", "method", "path",
                 "landmarks", "detector", "source")


@dataclass
class PreprocessReport:
    """What a :func:`preprocess` run did and what it could not do.

    Attributes:
        videos: videos asked for.
        processed: videos processed in this run.
        resumed: videos skipped because a matching ``done.json`` was found.
        frames: crops saved for the videos asked for (processed or resumed).
        no_face: videos with no face in any sampled frame (``video_id, path, frames_tried``).
        unreadable: videos that cannot be read (``video_id, path, error``).
        partial: videos with a face in some frames only (``video_id, frames_tried,
            frames_without_face``: the frame indices left out).
        out_dir: the output folder.
    """

    videos: int = 0
    processed: int = 0
    resumed: int = 0
    frames: int = 0
    no_face: list[dict] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    partial: list[dict] = field(default_factory=list)
    out_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"{self.out_dir}: {self.videos} videos ({self.processed} processed, "
            f"{self.resumed} already done), {self.frames} face crops",
            f"  no face found: {len(self.no_face)} videos",
            f"  unreadable: {len(self.unreadable)} videos",
            f"  some frames without a face: {len(self.partial)} videos "
            f"({sum(len(p['frames_without_face']) for p in self.partial)} frames)",
        ]
        for title, items, key in (("no face", self.no_face, "path"),
                                  ("unreadable", self.unreadable, "error")):
            lines += [f"    {title}: {item['video_id']}: {item[key]}" for item in items[:10]]
            if len(items) > 10:
                lines.append(f"    ... and {len(items) - 10} more (see {REPORT_FILE})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# One video
# --------------------------------------------------------------------------------------------


def _video_dir(out_dir: Path, video_id: str) -> Path:
    parts = Path(video_id).parts
    if not parts or Path(video_id).is_absolute() or ".." in parts:
        raise ValueError(f"video_id {video_id!r} is not a relative path inside the output folder")
    return out_dir.joinpath(*parts)


def _source_stamp(path: Path) -> dict:
    """Size and modification time of the source video (``None`` if missing)."""
    try:
        st = path.stat()
    except OSError:
        return {"size": None, "mtime_ns": None}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_done(marker: dict | None, record: VideoRecord, settings: dict) -> bool:
    return (marker is not None and marker.get("version") == MARKER_VERSION
            and marker.get("settings") == settings
            and marker.get("source") == {"path": str(record.path), **_source_stamp(record.path)})


def _settings(frames_per_video: int, size: int, margin: float, detector: str) -> dict:
    """The settings a ``done.json`` records (the detector only when it is not the default, so
    that markers written before it was an option still match)."""
    settings = {"frames_per_video": frames_per_video, "size": size, "margin": margin}
    if detector != "dlib":
        settings["detector"] = detector
    return settings


def process_video(record: VideoRecord, out_dir: str | os.PathLike, frames_per_video: int = 32,
                  size: int = 317, margin: float = 0.125, detector: str = "dlib") -> dict:
    """Crop the faces of one video into ``<out_dir>/<video_id>/`` and write its ``done.json``.

    ``detector`` is the face detector (:data:`~dfattn.data.detectors.FACE_DETECTORS`); the
    ``detector`` column of the index rows is the route that found each face (``"hog"``,
    ``"mtcnn"``, ...).

    Returns:
        The marker: ``status`` (``"ok"``, ``"no_face"`` or ``"unreadable"``), ``rows`` (the
        index rows of the saved crops), ``frames_tried``, ``frames_without_face``, ``error``.
    """
    out_dir = Path(out_dir)
    folder = _video_dir(out_dir, record.video_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER_FILE).unlink(missing_ok=True)  # first: a crash below must not look done
    for old in (*folder.glob("*.png"), *folder.glob("*.npy")):  # leftovers of other settings
        old.unlink()
    settings = _settings(frames_per_video, size, margin, detector)
    marker = {
        "version": MARKER_VERSION,
        "settings": settings,
        "source": {"path": str(record.path), **_source_stamp(record.path)},
        "record": {**asdict(record), "path": str(record.path)},
        "status": "ok", "error": "", "frames_tried": 0, "frames_without_face": [], "rows": [],
    }
    try:
        indices, frames = sample_frames(record.path, frames_per_video)
    except (OSError, ValueError) as err:
        marker.update(status="unreadable", error=str(err))
        _write_json(folder / MARKER_FILE, marker)
        return marker
    marker["frames_tried"] = len(indices)
    for index, frame in zip(indices.tolist(), frames):
        detection = detect_landmarks(frame, detector)
        if detection.landmarks is None:
            marker["frames_without_face"].append(index)
            continue
        crop, landmarks = crop_face(frame, detection.landmarks, size, margin)
        image_path, landmark_path = folder / f"{index:06d}.png", folder / f"{index:06d}.npy"
        if not cv2.imwrite(str(image_path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{image_path}: cannot write the face crop")
        np.save(landmark_path, landmarks.astype(np.float32))
        marker["rows"].append({
            "video_id": record.video_id, "frame": index, "label": record.label,
            "split": record.split, "dataset": record.dataset, "method": record.method,
            "path": image_path.relative_to(out_dir).as_posix(),
            "landmarks": landmark_path.relative_to(out_dir).as_posix(),
            "detector": detection.method, "source": str(record.path),
        })
    if not marker["rows"]:
        marker["status"] = "no_face"
    _write_json(folder / MARKER_FILE, marker)
    return marker


def _work(task: tuple[VideoRecord, str, int, int, float, str]) -> dict:
    """Pool entry point (module level so that spawned workers can import it)."""
    return process_video(*task)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # parallelism is over videos


# --------------------------------------------------------------------------------------------
# Index and report
# --------------------------------------------------------------------------------------------


def build_index(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Rebuild ``<out_dir>/index.csv`` from every ``done.json`` under it and return it."""
    out_dir = Path(out_dir)
    rows = []
    for marker_path in sorted(out_dir.rglob(MARKER_FILE)):
        marker = _read_marker(marker_path)
        if marker is not None:
            rows.extend(marker.get("rows", []))
    table = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    table = table.sort_values(["video_id", "frame"], kind="stable").reset_index(drop=True)
    tmp = out_dir / f".{INDEX_FILE}.{os.getpid()}.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out_dir / INDEX_FILE)
    return table


def _report(markers: Sequence[dict], out_dir: Path, processed: int) -> PreprocessReport:
    report = PreprocessReport(videos=len(markers), processed=processed,
                              resumed=len(markers) - processed, out_dir=str(out_dir))
    for m in markers:
        video_id, path = m["record"]["video_id"], m["record"]["path"]
        report.frames += len(m["rows"])
        if m["status"] == "unreadable":
            report.unreadable.append({"video_id": video_id, "path": path, "error": m["error"]})
        elif m["status"] == "no_face":
            report.no_face.append({"video_id": video_id, "path": path,
                                   "frames_tried": m["frames_tried"]})
        elif m["frames_without_face"]:
            report.partial.append({"video_id": video_id, "frames_tried": m["frames_tried"],
                                   "frames_without_face": m["frames_without_face"]})
    return report


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def preprocess(records: Iterable[VideoRecord], out_dir: str | os.PathLike,
               frames_per_video: int = 32, size: int = 317, margin: float = 0.125,
               workers: int = 1, resume: bool = True, verbose: bool = True,
               detector: str = "dlib") -> PreprocessReport:
    """Face crops and landmarks of ``frames_per_video`` frames of every video (module docstring).

    Args:
        records: the videos (:func:`~dfattn.data.public.load_public_dataset`).
        out_dir: output folder (created).
        frames_per_video: frames sampled evenly per video (fewer if the video is shorter).
        size: side of the saved square crops, pixels.
        margin: crop side = ``(1 + 2 margin)`` x the face box; 0.125 is the paper's 1.25
            enlargement, 0.25 the code's 1.5.
        workers: processes working on different videos.
        resume: skip videos whose ``done.json`` matches these settings and the source file.
        verbose: show a progress bar and print the report.
        detector: the face detector, ``"dlib"`` (default), ``"mtcnn"`` or ``"mediapipe"``
            (:mod:`dfattn.data.detectors`); a video done with another detector is redone.

    Returns:
        The :class:`PreprocessReport`, also written to ``<out_dir>/report.json``.

    Raises:
        ValueError: two records share a ``video_id``, or bad settings (an unknown detector).
        DetectorUnavailable: the detector's package is not installed (an ``ImportError``).
    """
    check_detector(detector)
    records = list(records)
    if frames_per_video < 1 or size < 8 or margin < 0 or workers < 1:
        raise ValueError(f"need frames_per_video >= 1, size >= 8, margin >= 0, workers >= 1; got "
                         f"{frames_per_video}, {size}, {margin}, {workers}")
    ids = [r.video_id for r in records]
    if len(set(ids)) != len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"video ids listed more than once: {twice[:5]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(frames_per_video, size, margin, detector)

    markers: dict[str, dict] = {}
    todo = []
    for record in records:
        marker_path = _video_dir(out_dir, record.video_id) / MARKER_FILE
        marker = _read_marker(marker_path) if resume else None
        if _is_done(marker, record, settings):
            markers[record.video_id] = marker
        else:
            todo.append((record, str(out_dir), frames_per_video, size, margin, detector))
    if todo:
        load_detector(detector)  # a missing package fails here, before any worker starts

    bar = tqdm(total=len(todo), desc="videos", unit="video", disable=not verbose or not todo)
    if workers > 1 and len(todo) > 1:
        with get_context("spawn").Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
            for marker in pool.imap_unordered(_work, todo, chunksize=1):
                markers[marker["record"]["video_id"]] = marker
                bar.update()
    else:
        for task in todo:
            marker = _work(task)
            markers[marker["record"]["video_id"]] = marker
            bar.update()
    bar.close()

    build_index(out_dir)
    report = _report([markers[i] for i in ids], out_dir, processed=len(todo))
    _write_json(out_dir / REPORT_FILE, report.to_dict())
    if verbose:
        print(report)
    return report
