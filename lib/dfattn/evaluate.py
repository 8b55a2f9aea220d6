"""Evaluation: predictions as tables, frame- and video-level metrics, ROC curves.

The test protocol follows LAA-Net's released test configuration, which the MAT evaluation
shares:

- **flip test**: the logit of an image is the mean of the logits of the image and of its horizontal
  flip (:func:`fake_logit` with ``flip_tta=True``);
- **video level**: the frame logits of a video are averaged, and P(fake) of the video is
  ``sigmoid(mean logit)`` (:func:`video_level`);
- **metrics** on P(fake): AUC, AP, EER, and accuracy at the threshold 0.5 (:func:`binary_metrics`).

Everything in between is a :class:`pandas.DataFrame` with one row per image (or per video) and the
columns ``logit``, ``prob``, ``label`` (1 = fake), plus the metadata the dataset items carry
(``index``, ``video_id``, ``family``, ...). So per-family or per-degradation tables are a
``group_by`` away (:func:`evaluate_frames`), and the same functions serve frames and videos.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
    roc_curve,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dfattn.data.datasets import collate_pairs, loader_kwargs
from dfattn.models.base import Detector

__all__ = [
    "METRICS",
    "binary_metrics",
    "equal_error_rate",
    "evaluate_frames",
    "evaluating",
    "fake_logit",
    "plot_roc",
    "predict",
    "roc_points",
    "video_level",
]

METRICS = ("auc", "ap", "eer", "acc", "balanced_acc", "n", "n_fake")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _check_labels(labels: Any) -> np.ndarray:
    """``labels`` as a flat int64 array of 0 (real) and 1 (fake), or a clear error."""
    y = np.asarray(labels).ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int 0/1 and ``scores`` as float64 in [0, 1], with clear errors otherwise."""
    y = _check_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    if not (np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()):
        raise ValueError(
            "scores must be probabilities in [0, 1] (apply a sigmoid to logits); got range "
            f"[{np.nanmin(s):.4g}, {np.nanmax(s):.4g}], {int((~np.isfinite(s)).sum())} non-finite"
        )
    return y, s


def equal_error_rate(labels: Any, scores: Any) -> float:
    """The error rate where the false-positive rate equals the false-negative rate.

    Along the ROC curve (:func:`sklearn.metrics.roc_curve`, every threshold kept) ``FPR - FNR``
    only grows, from -1 to 1; the EER is where it crosses zero, linearly interpolated between the
    two ROC points around the crossing (so ties and steps give the exact value on the segment).
    ``nan`` when only one class is present.
    """
    y, s = _check_binary(labels, scores)
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    gap = fpr - (1.0 - tpr)  # FPR - FNR, non-decreasing from -1 (threshold +inf) to 1
    i = int(np.argmax(gap >= 0))  # first point at or past the crossing (i >= 1: gap[0] = -1)
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(labels: Any, scores: Any, threshold: float = 0.5) -> dict[str, float]:
    """Detection metrics of P(fake) ``scores`` against ``labels`` (1 = fake).

    Returns ``auc`` (ROC AUC), ``ap`` (average precision, fake = positive), ``eer``
    (:func:`equal_error_rate`), ``acc`` and ``balanced_acc`` (an image is called fake when its
    score is ``>= threshold``; balanced accuracy is the mean of the recalls of the classes
    present), ``n`` and ``n_fake``. AUC, AP and EER are ``nan`` when only one class is present.

    Raises:
        ValueError: lengths differ, no samples, labels other than 0/1, scores outside [0, 1].
    """
    y, s = _check_binary(labels, scores)
    predicted = (s >= threshold).astype(np.int64)
    both = y.min() != y.max()
    with warnings.catch_warnings():  # one class: sklearn warns that y_pred has an unseen class
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y, predicted)
    return {
        "auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "ap": float(average_precision_score(y, s)) if both else float("nan"),
        "eer": equal_error_rate(y, s),
        "acc": float(accuracy_score(y, predicted)),
        "balanced_acc": float(balanced),
        "n": int(y.size),
        "n_fake": int(y.sum()),
    }


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and restore every submodule's own ``training`` flag afterwards
    (``model.train(flag)`` would overwrite submodules deliberately left in another mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def fake_logit(model: Detector, images: Tensor, flip_tta: bool = False) -> Tensor:
    """The ``(B,)`` logit of P(fake) of ``images``: ``model.fake_logit(images)``; with ``flip_tta``
    the mean of the logits of the images and of their horizontal flips (LAA-Net's flip test,
    ``flip_test`` in its released test configuration), both in one forward pass of ``2B`` images."""
    n = images.shape[0]
    if flip_tta:
        images = torch.cat([images, images.flip(-1)])  # (2B, 3, H, W)
    logits = model.fake_logit(images)
    if logits.shape != (images.shape[0],):
        raise ValueError(f"{type(model).__name__}.fake_logit must return (B,) = ({images.shape[0]},) "
                         f"logits, got {tuple(logits.shape)}")
    return logits.view(2, n).mean(0) if flip_tta else logits


def _column(value: Any, n: int) -> np.ndarray | None:
    """A batch field as one value per image, or ``None`` if it is not per-image scalar metadata
    (masks, heatmaps and other tensors with more than one dimension are left out)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy() if value.ndim == 1 and len(value) == n else None
    if isinstance(value, (list, tuple)) and len(value) == n and \
            all(isinstance(v, (str, bytes, int, float, bool, np.generic)) for v in value):
        return np.asarray(value)
    return None


def predict(
    model: Detector,
    dataset: Dataset,
    batch_size: int = 64,
    flip_tta: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> pd.DataFrame:
    """P(fake) of every image of a dataset, as a table with one row per image, in dataset order.

    Args:
        model: a detector; it runs where its parameters are, in eval mode without gradients, and
            every submodule's train/eval mode is restored afterwards.
        dataset: a dataset of dict items (``image`` and usually ``label`` plus metadata). Items
            holding several images (``image`` of shape ``(k, 3, H, W)``, e.g.
            :class:`~dfattn.data.datasets.PseudoFakePairs`) are flattened with
            :func:`~dfattn.data.datasets.collate_pairs`.
        batch_size, num_workers: of the DataLoader (no shuffling).
        flip_tta: average the logits of each image and of its horizontal flip (:func:`fake_logit`).
        progress: show a tqdm bar.
        amp: autocast dtype (``torch.bfloat16`` on GPU); ``None``: full precision.
        channels_last: feed the images in channels-last memory format (as the model was trained).

    Returns:
        Columns ``logit`` (float64), ``prob`` (``sigmoid(logit)``), ``label`` (int, 1 = fake; only
        if the items have one), then every per-image scalar field of the items (numbers and
        strings such as ``index``, ``video_id``, ``path``, ``family``), in item order. Fields with
        more dimensions (``mask``, ``heatmap``...) are left out.
    """
    if len(dataset) == 0:
        raise ValueError(f"{type(dataset).__name__} is empty: nothing to predict")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    collate = collate_pairs if dataset[0]["image"].ndim == 4 else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        **loader_kwargs(num_workers, pin_memory=device.type == "cuda"))
    logits: list[Tensor] = []
    columns: dict[str, list[np.ndarray]] = {}
    with evaluating(model), torch.no_grad():
        for batch in tqdm(loader, desc="predict", disable=not progress):
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
                logits.append(fake_logit(model, images, flip_tta).float())  # (B,)
            for key, value in batch.items():
                column = _column(value, len(images)) if key not in ("image", "logit", "prob") else None
                if column is not None:
                    columns.setdefault(key, []).append(column)
    logit = torch.cat(logits).cpu().numpy().astype(np.float64)
    table = {"logit": logit, "prob": expit(logit)}
    data = {key: np.concatenate(parts) for key, parts in columns.items()}
    if "label" in data:
        table["label"] = _check_labels(data.pop("label"))
    return pd.DataFrame({**table, **data})


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _keys(df: pd.DataFrame, by: str | Sequence[str], what: str) -> list[str]:
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise KeyError(f"{what}: no column {missing} in the table (columns: {list(df.columns)})")
    return keys


def video_level(frame_df: pd.DataFrame, by: str | Sequence[str] = "video_id") -> pd.DataFrame:
    """One row per video: the mean of its frame logits, ``prob = sigmoid(mean logit)``
    (the papers' video-level protocol), its label, ``n_frames``, and the metadata constant over its frames.

    ``by`` names the column(s) identifying a video (e.g. ``["degradation", "video_id"]`` when
    the same videos are scored under several degradations). Videos are in order of first
    appearance.

    Raises:
        KeyError: a ``by`` column or ``logit`` is missing.
        ValueError: a video has both real and fake frames (the message names some of them).
    """
    keys = _keys(frame_df, by, "video_level")
    if "logit" not in frame_df.columns:
        raise KeyError(f"video_level needs a 'logit' column (columns: {list(frame_df.columns)})")
    grouped = frame_df.groupby(keys, sort=False, dropna=False)
    if "label" in frame_df.columns:
        mixed = grouped["label"].nunique()
        mixed = mixed.index[mixed > 1]
        if len(mixed):
            raise ValueError(
                f"{len(mixed)} video(s) have both real and fake frames, e.g. {list(mixed[:5])}: "
                f"is {keys} really a video identifier?"
            )
    videos = grouped.agg(logit=("logit", "mean"), n_frames=("logit", "size"))
    others = [c for c in frame_df.columns if c not in (*keys, "logit", "prob")]
    if others:
        constant = grouped[others].nunique(dropna=False).le(1).all()
        videos = videos.join(grouped[list(constant.index[constant])].first())
    videos.insert(1, "prob", expit(videos["logit"].to_numpy()))
    if "label" in videos.columns:
        videos.insert(2, "label", videos.pop("label").astype(np.int64))
    return videos.reset_index()


def evaluate_frames(
    df: pd.DataFrame,
    group_by: str | Sequence[str] | None = None,
    pool_reals: bool = False,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """:func:`binary_metrics` of ``prob`` against ``label``, per group and for the whole table.

    Works on any table with ``label`` and ``prob``: frames from :func:`predict` or videos from
    :func:`video_level`.

    Args:
        group_by: column(s) to group by (e.g. ``"degradation"``); groups come in order of first
            appearance, then an ``"all"`` row.
        pool_reals: score each group's *fakes* against *all* the real rows of the table (the
            FF++ per-method protocol of the MAT paper's tables: each method's fakes against every real
            test video), for a grouping such as the manipulation family that real images have no
            share in. Groups are then formed from the fakes only.

    Returns:
        One row per group, indexed by the group value (a tuple for several columns; ``"all"``
        for the whole table), with the columns of :data:`METRICS`.
    """
    _keys(df, ["label", "prob"], "evaluate_frames")
    rows: dict[Any, dict[str, float]] = {}
    keys: list[str] = []
    if group_by is not None:
        keys = _keys(df, group_by, "evaluate_frames")
        reals = df[df["label"] == 0]
        source = df[df["label"] == 1] if pool_reals else df
        by = keys if len(keys) > 1 else keys[0]  # a scalar key gives scalar group values
        for value, part in source.groupby(by, sort=False, dropna=False):
            if pool_reals:
                part = pd.concat([reals, part])
            rows[value] = binary_metrics(part["label"], part["prob"], threshold)
    everything = ("all",) * len(keys) if len(keys) > 1 else "all"
    rows[everything] = binary_metrics(df["label"], df["prob"], threshold)
    if len(keys) > 1:
        index = pd.MultiIndex.from_tuples(list(rows), names=keys)
    else:
        index = pd.Index(list(rows), name=keys[0] if keys else None)
    return pd.DataFrame(list(rows.values()), index=index, columns=list(METRICS))


def roc_points(df: pd.DataFrame) -> pd.DataFrame:
    """The ROC curve of ``prob`` against ``label``: columns ``fpr``, ``tpr``, ``threshold``
    (:func:`sklearn.metrics.roc_curve`, from threshold ``inf`` at (0, 0) to (1, 1)).

    Raises:
        ValueError: only one class is present (no ROC curve then).
    """
    y, s = _check_binary(df["label"], df["prob"])
    if y.min() == y.max():
        raise ValueError(f"an ROC curve needs real and fake rows; all {y.size} have label {y[0]}")
    fpr, tpr, thresholds = roc_curve(y, s)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def plot_roc(curves: Mapping[str, pd.DataFrame], ax=None, title: str | None = None):
    """ROC curves of several tables (``name -> table`` with ``label`` and ``prob``) on one axis,
    the AUC of each in the legend, the chance diagonal dashed. Returns the axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    for name, frame in curves.items():
        points = roc_points(frame)
        auc = roc_auc_score(frame["label"], frame["prob"])
        ax.plot(points["fpr"], points["tpr"], lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.6")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
           xlabel="false-positive rate (reals called fake)",
           ylabel="true-positive rate (fakes caught)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return ax
