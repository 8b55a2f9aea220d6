"""Frames from video files (OpenCV / FFmpeg), sampled the way the benchmarks' protocols do.

Reads any container OpenCV's FFmpeg backend reads (the benchmarks ship ``.mp4``)::

    video.mp4  ->  frame_count(video.mp4) = N
               ->  sample_frame_indices(N, 32)          # evenly spaced, LAA-Net / SBI protocol
               ->  read_frames(video.mp4, indices)      # (32, H, W, 3) uint8 RGB

Frames are decoded sequentially (``grab`` up to the last wanted frame, ``retrieve`` only the
wanted ones), which is exact for every codec, unlike seeking. The frame count in a container's
header is sometimes wrong; :func:`read_frames` raises :class:`ShortVideoError` (carrying the true
count) when the stream ends early, and :func:`sample_frames` then samples again from the true count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "SAMPLING_MODES",
    "ShortVideoError",
    "frame_count",
    "read_frames",
    "sample_frame_indices",
    "sample_frames",
]

SAMPLING_MODES = ("linspace", "first")


class ShortVideoError(ValueError):
    """The stream ended before a requested frame; :attr:`n_frames` is how many it really has."""

    def __init__(self, message: str, n_frames: int):
        super().__init__(message)
        self.n_frames = n_frames


def sample_frame_indices(n_frames: int, n: int, mode: str = "linspace") -> np.ndarray:
    """Indices of ``n`` frames out of ``n_frames``, sorted and distinct (int64).

    Modes:
        ``"linspace"``: evenly spaced over the whole video, first and last frame included,
        ``floor(linspace(0, n_frames - 1, n))`` (the frame sampling of the LAA-Net and SBI
        preprocessing code, 32 per test video); ``"first"``: the first ``n`` frames.

    A video with fewer than ``n`` frames gives all its frames (no duplicates).
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown frame sampling mode {mode!r}: use one of {SAMPLING_MODES}")
    if n_frames < 0 or n < 1:
        raise ValueError(f"need n_frames >= 0 and n >= 1, got n_frames={n_frames}, n={n}")
    if n_frames <= n:
        return np.arange(n_frames, dtype=np.int64)
    if mode == "first":
        return np.arange(n, dtype=np.int64)
    return np.floor(np.linspace(0, n_frames - 1, n)).astype(np.int64)


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"{path}: not a readable video (OpenCV/FFmpeg cannot open it)")
    return capture


def frame_count(path: str | os.PathLike) -> int:
    """The number of frames of a video: the container's count, or counted by decoding if the
    container has none.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable video, or has no frames (the message names it).
    """
    path = Path(path)
    capture = _open(path)
    try:
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # some streams have no count in their header: count by decoding
            n = 0
            while capture.grab():
                n += 1
    finally:
        capture.release()
    if n <= 0:
        raise ValueError(f"{path}: video has no frames")
    return n


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """The frames at ``indices`` as ``(len(indices), H, W, 3)`` uint8 RGB, in the order given
    (repeated indices give repeated frames).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable video, has no frames, or a frame cannot be decoded.
        ShortVideoError: the stream ends before the largest index (a ``ValueError``; its
            ``n_frames`` is the number of frames the stream really has).
    """
    path = Path(path)
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted.size and wanted.min() < 0:
        raise ValueError(f"{path}: negative frame index {int(wanted.min())}")
    targets = set(wanted.tolist())
    last = int(wanted.max()) if wanted.size else -1
    capture = _open(path)
    frames: dict[int, np.ndarray] = {}
    position = 0
    try:
        while position <= last:
            if not capture.grab():
                break
            if position in targets:
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    raise ValueError(f"{path}: frame {position} cannot be decoded")
                frames[position] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            position += 1
    finally:
        capture.release()
    if position == 0 and last >= 0:
        raise ValueError(f"{path}: video has no frames (or none can be decoded)")
    if position <= last:
        raise ShortVideoError(
            f"{path}: frame {last} requested but the stream ends after {position} frames",
            n_frames=position,
        )
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([frames[i] for i in wanted.tolist()])


def sample_frames(path: str | os.PathLike, n: int, mode: str = "linspace"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames sampled from a video (:func:`sample_frame_indices`): ``(indices, frames)``.

    If the container's frame count is too high (the stream ends early) the frames are sampled
    again from the true count, so the result always spans the whole video; if fewer than a quarter
    of the frames the container announces decode, the video is damaged and a ``ValueError`` says so.
    """
    claimed = frame_count(path)
    indices = sample_frame_indices(claimed, n, mode)
    try:
        return indices, read_frames(path, indices)
    except ShortVideoError as err:
        if err.n_frames == 0:
            raise ValueError(f"{path}: video has no frames") from err
        if err.n_frames < claimed / 4:  # not a header that overstates: a damaged stream
            raise ValueError(f"{path}: only {err.n_frames} of its {claimed} frames decode "
                             f"(a damaged or truncated video)") from err
        indices = sample_frame_indices(err.n_frames, n, mode)
        return indices, read_frames(path, indices)
