"""Readers of ``dfattn-preprocess`` output: the contract between preprocessing, training and
evaluation.

Reads the layout written by :func:`dfattn.preprocess.preprocess`::

    <root>/
      index.csv        video_id, frame, label, split, dataset, method, path, landmarks, ...
      <video_id>/000000.png   face crop, (S, S) RGB
      <video_id>/000000.npy   its 68 landmarks, (68, 2) float32, crop pixels

- :class:`PreprocessedFaces`: a :class:`~dfattn.data.faces.FaceSource` of the frames of one
  split and label (the real frames that self-blended training starts from);
- :class:`PreprocessedFrames`: labelled frames for evaluation; video-level scores average the
  frame logits of each ``video_id`` (the video-level protocol of both papers);
- :func:`index`: the index as a DataFrame.

The ``datasets`` filters match a dataset name exactly or its family: ``"ffpp"`` selects
``"ffpp-c23"`` and ``"ffpp-c40"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from dfattn.data.faces import Face
from dfattn.data.folder import read_image
from dfattn.data.video import sample_frame_indices

__all__ = ["INDEX_FILE", "LabelledFrame", "PreprocessedFaces", "PreprocessedFrames", "index"]

INDEX_FILE = "index.csv"
_TEXT_COLUMNS = ("video_id", "split", "dataset", "method", "path", "landmarks")
_INT_COLUMNS = ("frame", "label")


def index(root: str | os.PathLike) -> pd.DataFrame:
    """The index of a preprocessed folder: one row per face crop (ids kept as strings).

    Raises:
        FileNotFoundError: no ``index.csv`` in ``root``.
        ValueError: the index lacks a required column.
    """
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing index (run dfattn-preprocess first)")
    table = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False)
    missing = [c for c in _TEXT_COLUMNS + _INT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table.astype({c: np.int64 for c in _INT_COLUMNS})


def _matches(values: pd.Series, wanted: Sequence[str] | None, family: bool = False) -> pd.Series:
    if wanted is None:
        return pd.Series(True, index=values.index)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    hit = values.isin(wanted)
    if family:  # "ffpp" also selects "ffpp-c23"
        hit |= values.str.split("-", n=1).str[0].isin(wanted)
    return hit


def _select(table: pd.DataFrame, split: str | None, label: int | None,
            datasets: Sequence[str] | None, methods: Sequence[str] | None) -> pd.DataFrame:
    keep = _matches(table["dataset"], datasets, family=True) & _matches(table["method"], methods)
    if split is not None:
        keep &= table["split"] == split
    if label is not None:
        keep &= table["label"] == int(label)
    return table[keep].reset_index(drop=True)


def _load(root: Path, row, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Crop and landmarks of one index row, resized to ``size`` (landmarks rescaled with it)."""
    image = read_image(root / row.path)
    landmark_path = root / row.landmarks
    try:
        landmarks = np.load(landmark_path).astype(np.float32)
    except (OSError, ValueError) as err:
        raise ValueError(f"{landmark_path}: cannot read landmarks ({err})") from err
    if landmarks.shape != (68, 2):
        raise ValueError(f"{landmark_path}: landmarks must be (68, 2), got {landmarks.shape}")
    h, w = image.shape[:2]
    if size is not None and (h, w) != (size, size):
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
        scale = np.array([size / w, size / h], np.float32)
        landmarks = (landmarks + 0.5) * scale - 0.5  # pixel centres map to pixel centres
    return image, landmarks


class PreprocessedFaces:
    """A :class:`~dfattn.data.faces.FaceSource` over preprocessed frames.

    Args:
        root: a ``dfattn-preprocess`` output folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (all).
        label: 0 real (default), 1 fake, or ``None`` (both).
        size: side the crops are resized to (``None``: as saved).
        datasets: dataset names or families to keep (``None``: all).
        methods: methods to keep (``None``: all).

    Face ``i`` has ``identity`` = the number of its video in the whole index (stable across
    splits and filters), ``name`` = ``<video_id>/<frame>``, and ``meta`` with ``dataset``,
    ``method``, ``label``, ``split``. An empty selection is allowed (e.g. Celeb-DF has no
    ``val`` split).
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "train", label: int | None = 0,
                 size: int | None = None, datasets: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None):
        self.root, self.size = Path(root), size
        table = index(self.root)
        videos = {v: i for i, v in enumerate(sorted(table["video_id"].unique()))}
        self.rows = _select(table, split, label, datasets, methods)
        self.identities = [videos[v] for v in self.rows["video_id"]]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PreprocessedFaces({str(self.root)!r}, n={len(self)}, size={self.size})"

    def __getitem__(self, i: int) -> Face:
        if not -len(self) <= i < len(self):
            raise IndexError(f"face {i} out of range for {self!r}")
        row = self.rows.iloc[i]
        image, landmarks = _load(self.root, row, self.size)
        meta = {"dataset": row.dataset, "method": row.method, "label": int(row.label),
                "split": row.split}
        return Face(image, landmarks, self.identities[i], f"{row.video_id}/{row.frame}", meta)


@dataclass(frozen=True)
class LabelledFrame:
    """One evaluation frame: ``image`` (S, S, 3) uint8 RGB, ``label`` 0 real / 1 fake, and the
    video, method and dataset it comes from."""

    image: np.ndarray
    label: int
    video_id: str
    method: str
    dataset: str


class PreprocessedFrames:
    """Labelled frames of one split for evaluation (a sequence of :class:`LabelledFrame`).

    Args:
        root: a ``dfattn-preprocess`` output folder.
        split: ``"test"`` (default), ``"val"``, ``"train"`` or ``None`` (all).
        size: side the crops are resized to (``None``: as saved).
        frames_per_video: keep this many frames per video, evenly spaced over those saved
            (``None``: all). LAA-Net's code instead draws 32 with replacement at random; this
            is deterministic and never repeats a frame.
        datasets, methods: optional filters, as in :class:`PreprocessedFaces`.

    Attributes:
        rows: the index rows served, in order.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "test",
                 size: int | None = None, frames_per_video: int | None = None, *,
                 datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None):
        self.root, self.size = Path(root), size
        rows = _select(index(self.root), split, None, datasets, methods)
        if frames_per_video is not None:
            keep = []
            for _, group in rows.groupby("video_id", sort=False):
                picks = sample_frame_indices(len(group), frames_per_video)
                keep.extend(group.index[picks].tolist())
            rows = rows.loc[sorted(keep)].reset_index(drop=True)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PreprocessedFrames({str(self.root)!r}, n={len(self)}, size={self.size})"

    def video_labels(self) -> dict[str, int]:
        """``{video_id: label}`` of the videos served."""
        videos = self.rows.drop_duplicates("video_id")
        return dict(zip(videos["video_id"], videos["label"].astype(int)))

    def __getitem__(self, i: int) -> LabelledFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {self!r}")
        row = self.rows.iloc[i]
        image, _ = _load(self.root, row, self.size)
        return LabelledFrame(image, int(row.label), row.video_id, row.method, row.dataset)
