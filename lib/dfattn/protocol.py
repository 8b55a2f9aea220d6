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
  Celeb-DF, ...): frame-level and video-level metrics (:func:`labelled_frames`);
- the **cross-dataset** test (:func:`cross_dataset`, :func:`cross_dataset_table`): a labelled
  folder of real deepfakes (DFDC faces) that training never saw, each image aligned as the
  training faces were, every metric with a bootstrap interval and the paired difference of each
  detector to the baseline;
- the cross-dataset test **by training source** (:func:`by_training_source`,
  :func:`training_source_table`): the same detectors trained on other real faces (another
  folder, or both), each scored on the same labelled folder;
- **false alarms by group** (:func:`false_alarms_by_group`): the real test faces each model calls
  fake at its operating threshold (chosen on validation), per group of an attribute.
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
from dfattn.evaluate import (BOOTSTRAP_METRICS, OperatingPoint, bootstrap_metrics, evaluate_frames, paired_bootstrap,
                             predict, rates_by_group, video_level)

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


class Kept(torch.utils.data.Dataset):
    """A dataset's items as it makes them, each made once on first use and then kept (the same
    tensors: unlike :class:`Materialised`, no rounding), for several models scored in turn."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset, self.items = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i not in self.items:
            self.items[i] = self.dataset[i]
        return self.items[i]


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


def cross_dataset(models: Mapping[str, nn.Module], configs: Mapping[str, "TrainConfig"], folder: str | Path,
                  no_face: str = "resize", workers: int = 1, **predict_kw: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """Frame table of each model on a labelled folder (``real/``, ``fake/``), every image prepared
    as that model's training faces were (:class:`~dfattn.data.labelled.LabelledFolder` with
    ``align``: its face detector, face size, margin and input size).

    Returns:
        ``(frames, counts)``: one row per (model, image) with ``model``, ``logit``, ``prob``,
        ``label``, ``path``, ``aligned``; and ``{"images", "scored", "no_face", "unreadable"}``
        (of the first model's folder; ``no_face`` images are scored resized, or left out with
        ``no_face="skip"``).
    """
    from dfattn.data.labelled import LabelledFolder

    folders: dict[tuple, Kept] = {}  # each image read and aligned once, for every model
    parts = []
    for name, model in models.items():
        c = configs[name]
        key = (c.image_size, c.face_size, c.face_detector)
        if key not in folders:
            folders[key] = Kept(LabelledFolder(folder, c.image_size, skip_bad=True, align=c.face_detector,
                                               face_size=c.face_size, no_face=no_face, workers=workers))
        frames = predict(model, folders[key], **predict_kw)
        aligned = folders[key].dataset.aligned
        parts.append(frames.assign(model=name, aligned=[aligned[i] for i in frames["index"]]))
    first = next(iter(folders.values())).dataset
    counts = {"images": len(first) + len(first.skipped) + (len(first.no_face) if no_face == "skip" else 0),
              "scored": len(first), "no_face": len(first.no_face), "unreadable": len(first.skipped)}
    return pd.concat(parts, ignore_index=True), counts


def by_training_source(models: Sequence[str], sources: Mapping[str, tuple[str, str | Path]],
                       profile: "Profile | str", folder: str | Path, seed: int = 0, no_face: str = "resize",
                       **predict_kw: Any) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """The cross-dataset test of each model trained on each source of real faces.

    Args:
        models: detector names (trained at ``profile``'s scale, as chapter 3's runs).
        sources: ``{label: (data spec, runs folder)}``; each model trains-or-loads under
            ``runs folder / model`` on that spec (the spec's own splits: model selection on its
            validation people), e.g. ``"folder:A"``, ``"folder:B"`` and ``"folder:A+folder:B"``.
        folder: the labelled test folder (``real/``, ``fake/``), scored once per trained model
            (:func:`cross_dataset`: aligned as each model's training faces).

    Returns:
        ``(frames, info)``: :func:`cross_dataset`'s frames with a ``source`` column, and per
        source ``{"training faces", "validation faces", "scored", "no_face"}``.
    """
    from dfattn.data.sources import SplitSizes, face_splits
    from dfattn.train import TrainConfig, train

    parts, info = [], {}
    for label, (spec, runs) in sources.items():
        configs = {m: TrainConfig(model=m, profile=profile, data=spec, seed=seed, progress=False).resolved()
                   for m in models}
        detectors = {m: train(c, Path(runs) / m)[0] for m, c in configs.items()}
        c0 = configs[models[0]]
        splits = face_splits(spec, SplitSizes(c0.n_train, c0.n_val, c0.n_test), c0.face_size, seed,
                             detector=c0.face_detector)
        kw = {"amp": c0.eval_autocast(), "channels_last": c0.channels_last, **predict_kw}
        frames, counts = cross_dataset(detectors, configs, folder, no_face=no_face, **kw)
        parts.append(frames.assign(source=label))
        info[label] = {"training faces": len(splits["train"]), "validation faces": len(splits["val"]),
                       "scored": counts["scored"], "no_face": counts["no_face"]}
    return pd.concat(parts, ignore_index=True), info


def training_source_table(frames: pd.DataFrame, info: Mapping[str, Mapping[str, int]] | None = None,
                          baseline: str | None = "baseline", **table_kw: Any) -> pd.DataFrame:
    """:func:`cross_dataset_table` of each training source of :func:`by_training_source`'s frames,
    stacked: rows ``(source, model)`` and ``(source, "<model> - <baseline>")`` (the paired
    differences, same images and resamples within the source), plus ``training faces`` from
    ``info``."""
    blocks = []
    for source, part in frames.groupby("source", sort=False):
        table, diffs = cross_dataset_table(part.drop(columns="source"), baseline, **table_kw)
        block = pd.concat([table, diffs]) if diffs is not None else table
        if info is not None:
            block["training faces"] = info[source]["training faces"]
        blocks.append(block.set_axis(pd.MultiIndex.from_product([[source], block.index], names=["source", "row"])))
    out = pd.concat(blocks)
    out["n"] = out["n"].astype("Int64")
    return out


def _spread(table: pd.DataFrame, column: str, metrics: Sequence[str]) -> dict[str, float]:
    """One row of a bootstrap table (rows: metrics) as ``{metric, metric_low, metric_high}``."""
    row = {}
    for metric in metrics:
        row.update({metric: table.loc[metric, column], f"{metric}_low": table.loc[metric, "low"],
                    f"{metric}_high": table.loc[metric, "high"]})
    return row


def cross_dataset_table(frames: pd.DataFrame, baseline: str | None = "baseline",
                        metrics: Sequence[str] = BOOTSTRAP_METRICS, n_boot: int = 1000, seed: int = 0
                        ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Each model's metrics on :func:`cross_dataset`'s frames with 95 % stratified bootstrap
    intervals, and each other model's paired difference to ``baseline`` (same images, same
    resamples).

    Returns:
        ``(table, differences)``: ``table`` has rows models and columns ``<metric>``,
        ``<metric>_low``, ``<metric>_high`` and ``n``; ``differences`` rows ``"<model> - <baseline>"``
        and columns ``<metric>``, ``<metric>_low``, ``<metric>_high`` (``None`` without the
        baseline among the models).
    """
    by_model = {m: part.sort_values("path") for m, part in frames.groupby("model", sort=False)}
    rows = {}
    for name, part in by_model.items():
        boot = bootstrap_metrics(part["label"], part["prob"], metrics, n_boot=n_boot, seed=seed)
        rows[name] = {**_spread(boot, "value", metrics), "n": len(part)}
    table = pd.DataFrame(rows).T.astype({"n": int})
    if baseline is None or baseline not in by_model or len(by_model) < 2:
        return table, None
    base = by_model[baseline]
    diffs = {}
    for name, part in by_model.items():
        if name == baseline:
            continue
        if list(part["path"]) != list(base["path"]):
            raise ValueError(f"{name} and {baseline} were not scored on the same images")
        d = paired_bootstrap(part["label"], part["prob"], base["prob"], metrics, n_boot=n_boot, seed=seed)
        diffs[f"{name} - {baseline}"] = _spread(d, "difference", metrics)
    return table, pd.DataFrame(diffs).T


def with_intervals(table: pd.DataFrame, metrics: Sequence[str] = BOOTSTRAP_METRICS, digits: int = 3
                   ) -> pd.DataFrame:
    """A table of :func:`cross_dataset_table` for reading: each metric as ``value [low, high]``."""
    out = pd.DataFrame(index=table.index)
    for metric in metrics:
        out[metric] = [f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" for v, lo, hi in
                       zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]
    for extra in [c for c in table.columns if c not in out.columns and not c.endswith(("_low", "_high"))
                  and c not in metrics]:
        out[extra] = table[extra]
    return out


def false_alarms_by_group(frames: pd.DataFrame, points: Mapping[str, OperatingPoint],
                          groups: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """The false-positive rate of each model on real faces, per group, at its operating point.

    Args:
        frames: rows of real images only, with ``model``, ``logit`` and, per model, the images in
            the same order as ``groups``.
        points: each model's :class:`~dfattn.evaluate.OperatingPoint` (chosen on validation).
        groups: attribute -> one group label per real image.

    Returns:
        Rows ``(attribute, group)``; columns ``n`` and, per model, ``<model>`` (the rate),
        ``<model>_low``, ``<model>_high`` (Wilson 95 %).
    """
    out = None
    for name, part in frames.groupby("model", sort=False):
        if (part["label"] != 0).any():
            raise ValueError(f"{name}: false alarms are counted on real images only")
        flagged = part["logit"].to_numpy() >= points[name].logit  # OperatingPoint.decide, vectorised
        table = rates_by_group(flagged, groups)
        cols = table[["rate", "low", "high"]].rename(columns={"rate": name, "low": f"{name}_low",
                                                            "high": f"{name}_high"})
        out = table[["n"]].join(cols) if out is None else out.join(cols)
    return out


__all__ = [
    "FAMILIES",
    "FrameItems",
    "Materialised",
    "chapter_runs",
    "cross_dataset",
    "cross_dataset_table",
    "cross_manipulation",
    "cross_manipulation_table",
    "false_alarms_by_group",
    "with_intervals",
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
