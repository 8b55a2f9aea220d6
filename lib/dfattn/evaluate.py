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

import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from itertools import islice
from dataclasses import dataclass
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
    "OPERATING_METRICS",
    "OPERATING_RULES",
    "BOOTSTRAP_METRICS",
    "OperatingPoint",
    "bootstrap_metrics",
    "paired_bootstrap",
    "rate_interval",
    "rates_by_group",
    "choose_operating_point",
    "expected_calibration_error",
    "fit_temperature",
    "operating_metrics",
    "tpr_at_fpr",
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


# --------------------------------------------------------------------------------------------
# Operating points and calibration
# --------------------------------------------------------------------------------------------

OPERATING_METRICS = ("tpr_at_fpr_1", "tpr_at_fpr_5", "ece")
OPERATING_RULES = ("balanced_acc", "fpr")


def tpr_at_fpr(labels: Any, scores: Any, fpr: float) -> float:
    """The true-positive rate (share of fakes caught) at the best threshold whose false-positive
    rate (share of reals called fake) is at most ``fpr``, read off the ROC curve without
    interpolation (so never optimistic). ``nan`` when only one class is present."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    y, s = _check_labels(labels), np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tprs[fprs <= fpr + 1e-12].max())


def expected_calibration_error(labels: Any, probs: Any, bins: int = 15) -> float:
    """The expected calibration error of P(fake): in ``bins`` equal-width bins of the predicted
    probability, the gap between the share of fakes and the mean prediction, weighted by the
    share of samples in the bin (Guo et al. 2017, eq. 3, with P(fake) as the confidence of the
    binary event "fake"). 0 for a calibrated detector; at most 1."""
    y, p = _check_binary(labels, probs)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # bin of each sample, p = 1 in the last
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))  # per bin: |sum y - sum p|
    return float(gap.sum() / count.sum())


def operating_metrics(labels: Any, probs: Any) -> dict[str, float]:
    """TPR at 1 % and 5 % FPR (:func:`tpr_at_fpr`) and the ECE (:func:`expected_calibration_error`)."""
    return {"tpr_at_fpr_1": tpr_at_fpr(labels, probs, 0.01), "tpr_at_fpr_5": tpr_at_fpr(labels, probs, 0.05),
            "ece": expected_calibration_error(labels, probs)}


def _nll(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of logits (numerically stable)."""
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_temperature(labels: Any, logits: Any) -> float:
    """Temperature scaling (Guo et al. 2017, sec. 4.2): the ``T > 0`` that minimises the
    cross-entropy of ``sigmoid(logit / T)`` on held-out data (searched over ``log T`` in
    ``[log 0.05, log 20]``). It changes probabilities, never the ranking or a logit threshold."""
    from scipy.optimize import minimize_scalar

    y = _check_labels(labels).astype(np.float64)
    z = np.asarray(logits, dtype=np.float64).ravel()
    if y.shape != z.shape or y.size == 0 or not np.isfinite(z).all():
        raise ValueError(f"fit_temperature needs as many finite logits as labels, got {z.size} and {y.size}")
    if y.min() == y.max():
        raise ValueError("fit_temperature needs real and fake samples")
    best = minimize_scalar(lambda log_t: _nll(y, z / np.exp(log_t)), bounds=(np.log(0.05), np.log(20.0)),
                           method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x))


@dataclass(frozen=True)
class OperatingPoint:
    """A decision rule for a detector: call an image fake when its logit is at least ``logit``.

    Chosen on validation data (:func:`choose_operating_point`) and stored in the checkpoint
    header (``operating_point``), so that ``dfattn-detect`` decides with it and says which it
    used. ``temperature`` rescales the logit into a calibrated probability
    ``sigmoid(logit / temperature)``; the decision does not depend on it. ``fpr``, ``tpr`` and
    ``balanced_acc`` are what the threshold gives on the data it was chosen on (``on``).
    """

    logit: float = 0.0
    rule: str = "default"
    target_fpr: float | None = None
    temperature: float = 1.0
    on: str = "none: no operating point was chosen on validation; P(fake) 0.5"
    n: int = 0
    n_fake: int = 0
    fpr: float = float("nan")
    tpr: float = float("nan")
    balanced_acc: float = float("nan")

    @property
    def threshold(self) -> float:
        """The threshold on the (temperature-scaled) probability P(fake)."""
        return float(expit(self.logit / self.temperature))

    def prob(self, logits: Any) -> np.ndarray:
        """Calibrated P(fake) of logits: ``sigmoid(logit / temperature)``."""
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature)

    def decide(self, logit: float, band: float = 0.0) -> str:
        """``"fake"``, ``"real"``, or ``"uncertain"`` when P(fake) is within ``band`` of the
        threshold (a share of probability, e.g. 0.1)."""
        if not math.isfinite(logit):
            return ""
        p = float(self.prob(logit))
        if band > 0 and abs(p - self.threshold) < band:
            return "uncertain"
        return "fake" if logit >= self.logit else "real"

    def describe(self) -> str:
        """One line for a reader: the threshold and where it comes from."""
        if self.rule == "default":
            return "threshold P(fake) = 0.5 (the checkpoint has no operating point chosen on validation)"
        if self.rule == "given":
            return f"threshold P(fake) = {self.threshold:.3f} (given: {self.on})"
        how = "best balanced accuracy" if self.rule == "balanced_acc" else f"FPR at most {self.target_fpr:g}"
        cal = f", temperature {self.temperature:.3g}" if self.temperature != 1.0 else ""
        return (f"threshold P(fake) = {self.threshold:.3f} (logit {self.logit:.3f}; {how} on {self.on}: "
                f"FPR {self.fpr:.3f}, TPR {self.tpr:.3f}{cal})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_header(cls, header: Mapping[str, Any], path: Any = "checkpoint") -> "OperatingPoint":
        """The checkpoint's operating point, or the default (logit 0, P(fake) 0.5) when it has none."""
        entry = header.get("operating_point")
        if entry is None:
            return cls()
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: the header's operating_point is not a table: {entry!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - names)
        if unknown:
            raise ValueError(f"{path}: the header's operating_point has unknown fields {unknown}")
        point = cls(**{k: (float("nan") if v is None and k in ("fpr", "tpr", "balanced_acc") else v)
                       for k, v in entry.items()})
        if not (math.isfinite(point.logit) and point.temperature > 0):
            raise ValueError(f"{path}: the header's operating_point is unusable (logit {point.logit}, "
                             f"temperature {point.temperature})")
        return point


def choose_operating_point(labels: Any, logits: Any, rule: str = "balanced_acc", target_fpr: float = 0.05,
                           temperature_scaling: bool = False, on: str = "validation") -> OperatingPoint:
    """The threshold on validation logits that maximises balanced accuracy (``rule="balanced_acc"``),
    or catches the most fakes with a false-positive rate of at most ``target_fpr``
    (``rule="fpr"``). The threshold is set halfway between the validation logit it admits and the
    next lower one, so it has a margin on both sides; with ``temperature_scaling`` a temperature is
    fitted too (:func:`fit_temperature`).

    Raises:
        ValueError: an unknown rule, a target outside (0, 1), or data without both classes.
    """
    if rule not in OPERATING_RULES:
        raise ValueError(f"unknown operating-point rule {rule!r}: choose from {OPERATING_RULES}")
    if rule == "fpr" and not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    y = _check_labels(labels)
    z = np.asarray(logits, dtype=np.float64).ravel()
    if y.shape != z.shape or not np.isfinite(z).all():
        raise ValueError(f"choose_operating_point needs as many finite logits as labels ({z.size}, {y.size})")
    if y.size == 0 or y.min() == y.max():
        raise ValueError("an operating point is chosen on data with both real and fake samples")
    fpr, tpr, thresholds = roc_curve(y, z, drop_intermediate=False)  # thresholds[0] = +inf
    if rule == "balanced_acc":
        i = int(np.argmax(tpr - fpr))  # balanced accuracy = (TPR + 1 - FPR) / 2; first (strictest) maximum
    else:
        i = int(np.flatnonzero(fpr <= target_fpr + 1e-12).max())
    if i == 0:  # nothing called fake: just above the largest logit
        cut = float(thresholds[1]) + 1e-6
    elif i + 1 < len(thresholds):
        cut = 0.5 * float(thresholds[i] + thresholds[i + 1])
    else:
        cut = float(thresholds[i]) - 1e-6
    return OperatingPoint(
        logit=cut, rule=rule, target_fpr=target_fpr if rule == "fpr" else None,
        temperature=fit_temperature(y, z) if temperature_scaling else 1.0, on=on,
        n=int(y.size), n_fake=int(y.sum()), fpr=float(fpr[i]), tpr=float(tpr[i]),
        balanced_acc=float(0.5 * (tpr[i] + 1.0 - fpr[i])))


# --------------------------------------------------------------------------------------------
# Uncertainty: bootstrap intervals
# --------------------------------------------------------------------------------------------

BOOTSTRAP_METRICS = ("auc", "ap", "eer", "tpr_at_fpr_5", "tpr_at_fpr_1")


def _metric(name: str, y: np.ndarray, s: np.ndarray) -> float:
    if name == "auc":
        return float(roc_auc_score(y, s))
    if name == "ap":
        return float(average_precision_score(y, s))
    if name == "eer":
        return equal_error_rate(y, s)
    if name.startswith("tpr_at_fpr_"):
        return tpr_at_fpr(y, s, float(name.rsplit("_", 1)[1]) / 100)
    raise ValueError(f"unknown metric {name!r}: choose from {BOOTSTRAP_METRICS} (or tpr_at_fpr_<percent>)")


def _resamples(y: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays of stratified bootstrap resamples: the reals and the fakes are each drawn with
    replacement at their own count, so every resample has both classes in the original numbers."""
    rng = np.random.default_rng(seed)
    reals, fakes = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    for _ in range(n_boot):
        yield np.concatenate([rng.choice(reals, reals.size), rng.choice(fakes, fakes.size)])


def _resampled_metrics(y: np.ndarray, s: np.ndarray, metrics: Sequence[str], n_boot: int, seed: int,
                       block: int = 2_000_000) -> np.ndarray:
    """``(n_boot, len(metrics))``: each metric on each resample of :func:`_resamples`, all at once.

    A resample is the count of times each image is drawn. The images are sorted once by score
    (highest first) and grouped into distinct scores; for every resample, the drawn fakes and reals
    at each distinct score, summed cumulatively, are its ROC curve (``TP``, ``FP`` at each
    threshold, as :func:`sklearn.metrics.roc_curve` with every threshold kept, plus scores drawn
    zero times, which only repeat the point before them). From these, with ``P`` fakes and ``N``
    reals drawn:

    - AUC, the Mann-Whitney statistic with ties counted half:
      ``sum_k tp_k (N - FP_k + fp_k / 2) / (P N)``;
    - AP, ``sum_k (R_k - R_{k-1}) TP_k / (TP_k + FP_k)`` with ``R_k = TP_k / P``
      (:func:`sklearn.metrics.average_precision_score`);
    - EER and TPR at an FPR as :func:`equal_error_rate` and :func:`tpr_at_fpr` read them.

    The same numbers as the metrics computed on each resampled array (the tests compare them),
    without a Python loop over resamples. ``block`` bounds the array sizes (resamples x images).
    """
    for m in metrics:
        if m not in ("auc", "ap", "eer") and not m.startswith("tpr_at_fpr_"):
            raise ValueError(f"unknown metric {m!r}: choose from {BOOTSTRAP_METRICS} (or tpr_at_fpr_<percent>)")
    order = np.argsort(-s, kind="stable")
    s_sorted, fake = s[order], y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # first image of each distinct score
    resamples = _resamples(y, n_boot, seed)
    out = np.empty((n_boot, len(metrics)))
    rows = max(1, block // max(1, y.size))
    for lo in range(0, n_boot, rows):
        draws = [np.bincount(i, minlength=y.size) for i in islice(resamples, rows)]
        w = np.stack(draws)[:, order].astype(np.float64)  # (R, n) draws of each image, sorted by score
        tp_k = np.add.reduceat(w * fake, starts, axis=1)  # (R, L) fakes drawn at each distinct score
        fp_k = np.add.reduceat(w * (1.0 - fake), starts, axis=1)  # (R, L) reals
        tp, fp = np.cumsum(tp_k, axis=1), np.cumsum(fp_k, axis=1)  # called fake at threshold k
        p, n = tp[:, -1:], fp[:, -1:]  # (R, 1)
        zero = np.zeros_like(p)
        tpr, fpr = np.hstack([zero, tp / p]), np.hstack([zero, fp / n])  # (R, L + 1), from (0, 0)
        for j, m in enumerate(metrics):
            if m == "auc":
                out[lo:lo + rows, j] = (tp_k * (n - fp + 0.5 * fp_k)).sum(1) / (p * n)[:, 0]
            elif m == "ap":
                called = tp + fp
                precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
                out[lo:lo + rows, j] = (np.diff(tpr, axis=1) * precision).sum(1)
            elif m == "eer":
                gap = fpr - (1.0 - tpr)  # FPR - FNR, non-decreasing from -1 to 1
                i = np.argmax(gap >= 0, axis=1)[:, None]  # >= 1
                g0, g1 = np.take_along_axis(gap, i - 1, 1), np.take_along_axis(gap, i, 1)
                f0, f1 = np.take_along_axis(fpr, i - 1, 1), np.take_along_axis(fpr, i, 1)
                out[lo:lo + rows, j] = (f0 + (-g0 / (g1 - g0)) * (f1 - f0))[:, 0]
            else:
                at = float(m.rsplit("_", 1)[1]) / 100
                out[lo:lo + rows, j] = np.where(fpr <= at + 1e-12, tpr, -np.inf).max(1)
    return out


def bootstrap_metrics(labels: Any, scores: Any, metrics: Sequence[str] = BOOTSTRAP_METRICS,
                      n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each metric of P(fake) ``scores`` with a percentile bootstrap interval.

    Resampling is stratified by class (:func:`_resamples`), the usual choice for ROC metrics of a
    fixed test set (the numbers of reals and fakes are part of its design). Deterministic under
    ``seed``. With few test images the interval is wide: report it.

    Returns:
        One row per metric, columns ``value`` (on all the data), ``low``, ``high`` (the
        ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles over ``n_boot`` resamples), ``n``
        and ``n_fake``.
    """
    y, s = _check_binary(labels, scores)
    if y.min() == y.max():
        raise ValueError("bootstrap intervals need both real and fake samples")
    values = _resampled_metrics(y, s, metrics, n_boot, seed)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"value": [_metric(m, y, s) for m in metrics], "low": low, "high": high,
                         "n": y.size, "n_fake": int(y.sum())}, index=pd.Index(list(metrics), name="metric"))


def paired_bootstrap(labels: Any, scores_a: Any, scores_b: Any, metrics: Sequence[str] = BOOTSTRAP_METRICS,
                     n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The difference ``metric(a) - metric(b)`` of two detectors scored on the *same* images, with
    a paired percentile bootstrap interval (both detectors see the same resample each time, so
    what the images have in common cancels out). An interval that contains 0 means the data do
    not tell the two apart.

    Returns:
        One row per metric, columns ``a``, ``b``, ``difference``, ``low``, ``high``,
        ``p_below_zero`` (the share of resamples where a did worse than b; for ``eer``, where
        lower is better, a worse ``a`` is a positive difference), ``n``.
    """
    y, a = _check_binary(labels, scores_a)
    _, b = _check_binary(labels, scores_b)
    if y.min() == y.max():
        raise ValueError("bootstrap intervals need both real and fake samples")
    diffs = _resampled_metrics(y, a, metrics, n_boot, seed) - _resampled_metrics(y, b, metrics, n_boot, seed)
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2], axis=0)
    va = np.array([_metric(m, y, a) for m in metrics])
    vb = np.array([_metric(m, y, b) for m in metrics])
    return pd.DataFrame({"a": va, "b": vb, "difference": va - vb, "low": low, "high": high,
                         "p_below_zero": (diffs < 0).mean(0), "n": y.size},
                        index=pd.Index(list(metrics), name="metric"))


def rate_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a rate ``successes / trials`` (e.g. a false-positive rate on a
    group of real faces): better than the normal approximation for small counts and rates near
    0. ``(nan, nan)`` for no trials."""
    from scipy.stats import norm

    if trials <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials], got {successes} of {trials}")
    z = float(norm.ppf((1 + level) / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def rates_by_group(flagged: Any, groups: Mapping[str, Sequence[Any]], level: float = 0.95) -> pd.DataFrame:
    """The rate of ``flagged`` (bool per image, e.g. real faces called fake at the operating
    threshold: the false-positive rate) in each group of each attribute, with Wilson intervals.

    Args:
        flagged: one bool per image.
        groups: attribute name -> one group label per image (``None`` / NaN: unknown, counted in
            no group of that attribute).

    Returns:
        Rows ``(attribute, group)`` (groups sorted), columns ``n``, ``flagged``, ``rate``,
        ``low``, ``high``; a first row ``("all", "all")``.
    """
    hits = np.asarray(flagged, dtype=bool)
    rows: dict[tuple[str, str], dict[str, float]] = {}

    def add(key: tuple[str, str], mask: np.ndarray) -> None:
        n, k = int(mask.sum()), int(hits[mask].sum())
        low, high = rate_interval(k, n, level)
        rows[key] = {"n": n, "flagged": k, "rate": k / n if n else float("nan"), "low": low, "high": high}

    add(("all", "all"), np.ones(hits.size, dtype=bool))
    for attribute, labels in groups.items():
        values = pd.Series(list(labels), dtype=object)
        if len(values) != hits.size:
            raise ValueError(f"{attribute}: {len(values)} group labels for {hits.size} images")
        for group in sorted(values.dropna().unique(), key=str):
            add((attribute, str(group)), (values == group).to_numpy())
    table = pd.DataFrame(rows).T
    table.index.names = ["attribute", "group"]
    return table.astype({"n": int, "flagged": int})
