"""The book's evaluation protocol: which test data, which tables (chapters 4 and 5, ``dfattn-evaluate``).

Held-out people only, never seen in training or model selection:

- **cross-manipulation** (:func:`cross_manipulation`): the real test faces, each manipulated by every
  held-out family (:data:`~dfattn.data.manipulations.FAMILIES`), and their self-blended
  pseudo-fakes (the training distribution, on new people). Each family's fakes are scored against
  all the real images (AUC per family, then the mean over families);
- **quality** (:func:`quality`): the same benchmark under each degradation and strength
  (:data:`~dfattn.data.manipulations.DEGRADATIONS`), reals degraded alike;
- chapter 3's runs as chapters 4 and 6 read them (:func:`chapter_runs`);
- a **labelled folder** (``real/`` and ``fake/``) or a **preprocessed benchmark** (FF++,
  Celeb-DF, ...): frame-level and video-level metrics (:func:`labelled_frames`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from dfattn.data.datasets import Degradation, HeldOutFamilies, PseudoFakePairs, image_array
from dfattn.data.faces import FaceSource
from dfattn.data.manipulations import DEGRADATIONS, FAMILIES
from dfattn.evaluate import evaluate_frames, predict, video_level

if TYPE_CHECKING:
    from dfattn.config import Profile
    from dfattn.train import TrainConfig

PredictKw = dict[str, Any]


def _kinds(dataset: HeldOutFamilies) -> list[str]:
    return [dataset.kind(i) for i in range(len(dataset))]


class Materialised(torch.utils.data.Dataset):
    """The items of a dataset made once and kept (images as uint8), so that several models are
    scored on exactly the same images without making them again."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.items = []
        for i in range(len(dataset)):
            item = dict(dataset[i])
            images = item["image"]
            item["image"] = (images * 255).round().to(torch.uint8)
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.items[i])
        item["image"] = item["image"].float() / 255
        return item


def _predict_all(models: Mapping[str, nn.Module], dataset, **predict_kw: Any) -> pd.DataFrame:
    data = Materialised(dataset)
    return pd.concat([predict(model, data, **predict_kw).assign(model=name)
                      for name, model in models.items()], ignore_index=True)


def cross_manipulation(models: Mapping[str, nn.Module], faces: FaceSource, image_size: int, seed: int = 0,
                       families: Sequence[str] | None = None, sbi: bool = True, **predict_kw: Any
                       ) -> pd.DataFrame:
    """Frame table of the cross-manipulation benchmark for each model: one row per (model, image)
    with ``model``, ``kind`` (``real``, a family name or ``sbi``), ``logit``, ``prob``, ``label``
    and the face ``index``. Every model sees the same images.

    ``predict_kw`` go to :func:`~dfattn.evaluate.predict` (``flip_tta``, ``batch_size``, ...).
    """
    bench = HeldOutFamilies(faces, image_size, families, seed=seed)
    kinds = _kinds(bench)
    df = _predict_all(models, bench, **predict_kw)
    df["kind"] = kinds * len(models)
    if sbi:
        pairs = PseudoFakePairs(faces, image_size, "sbi", train=False, seed=seed + 7)
        fakes = _predict_all(models, pairs, **predict_kw)
        df = pd.concat([df, fakes[fakes["label"] == 1].assign(kind="sbi")], ignore_index=True)
    return df.drop(columns=["family"], errors="ignore")


def cross_manipulation_table(frames: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Rows: models; columns: ``metric`` of each held-out family's fakes against all the reals, the
    ``mean`` over families, and ``sbi`` (pseudo-fakes of the test people: the training
    distribution, reported beside the mean, not in it)."""
    rows = {}
    for name, part in frames.groupby("model", sort=False):
        table = evaluate_frames(part, "kind", pool_reals=True)[metric].drop("all")
        families = [k for k in table.index if k != "sbi"]
        row = table[families].to_dict()
        row["mean"] = float(table[families].mean())
        if "sbi" in table.index:
            row["sbi"] = float(table["sbi"])
        rows[name] = row
    return pd.DataFrame(rows).T


def quality(models: Mapping[str, nn.Module], faces: FaceSource, image_size: int, seed: int = 0,
            degradations: Sequence[str] | None = None, families: Sequence[str] | None = None,
            strengths: Mapping[str, Sequence[float]] | None = None, **predict_kw: Any) -> pd.DataFrame:
    """Frame table of the benchmark under each degradation at each strength of its grid (or of
    ``strengths[name]``): columns ``model``, ``degradation``, ``strength``, ``kind`` plus
    :func:`~dfattn.evaluate.predict`'s."""
    parts = []
    for name in degradations or list(DEGRADATIONS):
        for strength in (strengths or {}).get(name, DEGRADATIONS[name].grid):
            bench = HeldOutFamilies(faces, image_size, families, Degradation(name, strength), seed)
            df = _predict_all(models, bench, **predict_kw)
            parts.append(df.assign(kind=_kinds(bench) * len(models), degradation=name, strength=strength))
    return pd.concat(parts, ignore_index=True).drop(columns=["family"], errors="ignore")


def quality_table(frames: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """``metric`` of all held-out fakes against the reals; rows ``(degradation, strength)``,
    columns the models."""
    columns = {}
    for name, part in frames.groupby("model", sort=False):
        columns[name] = evaluate_frames(part, ["degradation", "strength"])[metric].drop(("all", "all"))
    return pd.DataFrame(columns)


def labelled_frames(model: nn.Module, dataset: torch.utils.data.Dataset, by: str = "video_id",
                    **predict_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Frame table of a labelled dataset and, if its items carry ``by`` (a video id) with more than
    one frame per video, the video table (mean frame logit per video, the papers' protocol)."""
    frames = predict(model, dataset, **predict_kw)
    if by in frames.columns and frames[by].nunique() < len(frames):
        return frames, video_level(frames, by)
    return frames, None


def chapter_runs(models: Sequence[str], profile: "Profile | str", runs: str | Path, data: str = "synthetic",
                 seed: int = 0) -> tuple[dict[str, "TrainConfig"], dict[str, nn.Module], FaceSource]:
    """Chapter 3's runs, as chapters 4 and 6 read them: each model's resolved config under
    ``profile``, its detector (train-or-load from ``runs / model``: a finished run is read back) and
    the test faces of the first model's split (held-out people).

    Returns:
        ``(configs, detectors, test_faces)``: ``{model: TrainConfig}``, ``{model: Detector}`` (the
        selected weights, eval mode) and a :class:`~dfattn.data.faces.FaceSource`.
    """
    from dfattn.data.sources import SplitSizes, face_splits
    from dfattn.train import TrainConfig, train  # here: dfattn.train imports this module

    configs = {m: TrainConfig(model=m, profile=profile, data=data, seed=seed, progress=False).resolved()
               for m in models}
    detectors = {m: train(c, Path(runs) / m)[0] for m, c in configs.items()}
    c0 = configs[models[0]]
    test_faces = face_splits(data, SplitSizes(c0.n_train, c0.n_val, c0.n_test), c0.face_size, seed,
                             detector=c0.face_detector)["test"]
    return configs, detectors, test_faces


__all__ = [
    "FAMILIES",
    "FrameItems",
    "Materialised",
    "chapter_runs",
    "cross_manipulation",
    "cross_manipulation_table",
    "labelled_frames",
    "quality",
    "quality_table",
]


class FrameItems(torch.utils.data.Dataset):
    """Dict items (``image`` float (3, S, S) in [0, 1], ``label``, ``video_id``, ``method``) of a
    sequence of :class:`~dfattn.data.preprocessed.LabelledFrame`, for :func:`~dfattn.evaluate.predict`."""

    def __init__(self, frames: Sequence[Any], image_size: int):
        self.frames, self.image_size = frames, image_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        frame = self.frames[i]
        return {"image": torch.from_numpy(image_array(frame.image, self.image_size)),
                "label": torch.tensor(float(frame.label)), "video_id": frame.video_id,
                "method": frame.method, "index": i}
