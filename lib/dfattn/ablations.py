"""The ablation grid of chapter 5: which variants, under what budget, and their table.

The budget of each profile is its :class:`~dfattn.config.AblationScale` (``profile.ablation``).

Every row is one change to a detector or its data, trained under the same profile, budget and
data as its reference row, on each seed of the budget, then scored on the cross-manipulation and
quality benchmarks of chapter 4 (:mod:`dfattn.protocol`). The table reports the mean and the
spread (standard deviation over seeds; 0 with one seed).

The training-data options of :class:`~dfattn.train.TrainConfig` (``targets``: LAA-Net's "paper" or
"official" heatmap targets; ``geometric_aug``: SBI's margin crop and LAA-Net's geometric
augmentation) can be changed for a whole grid (``run_ablations(..., data_options={...})``, which
then trains into folders of their own), or compared row by row with :data:`DATA_ABLATIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from dfattn.config import AblationScale, Profile, get_profile
from dfattn.data.manipulations import DEGRADATIONS
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.evaluate import binary_metrics
from dfattn.protocol import cross_dataset as cross_dataset_frames
from dfattn.protocol import cross_manipulation, cross_manipulation_table, quality, quality_table
from dfattn.train import TrainConfig, train


@dataclass(frozen=True)
class Ablation:
    """One row: ``model`` with ``model_config`` and ``train`` overrides (``TrainConfig`` fields)."""

    name: str
    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    reference: bool = False  # the unchanged model each group is read against


ABLATIONS: tuple[Ablation, ...] = (
    # LAA-Net (paper §4.4): the decoder, the explicit-attention heads, the loss weights, the data.
    Ablation("LAA-Net (E-FPN, both heads)", "laanet", reference=True),
    Ablation("LAA-Net: plain FPN", "laanet", {"fpn": "fpn"}),
    Ablation("LAA-Net: no FPN", "laanet", {"fpn": "none"}),
    Ablation("LAA-Net: heatmap head only", "laanet", {"loss_weights": {"consistency": 0.0}}),
    Ablation("LAA-Net: consistency head only", "laanet", {"loss_weights": {"heatmap": 0.0}}),
    Ablation("LAA-Net: neither head", "laanet", {"loss_weights": {"heatmap": 0.0, "consistency": 0.0}}),
    Ablation("LAA-Net: released-checkpoint weights", "laanet",
             {"loss_weights": {"heatmap": 10.0, "consistency": 100.0, "label_smoothing": 0.72}}),
    Ablation("LAA-Net: BI instead of SBI", "laanet", train={"blend": "bi"}),
    # MAT (paper §4.5): number of attention maps, texture enhancement, RIL, AGDA.
    Ablation("MAT (M = 4, paper)", "mat", reference=True),
    Ablation("MAT: M = 1", "mat", {"num_attentions": 1}),
    Ablation("MAT: M = 8", "mat", {"num_attentions": 8}),
    Ablation("MAT: no texture enhancement", "mat", {"texture_block": "none"}),
    Ablation("MAT: no regional independence loss", "mat", {"ril_weight": 0.0}),
    Ablation("MAT: no AGDA", "mat", {"agda_weight": 0.0}),
)


# The training-data fidelity options (not in the chapter's grid): each against "LAA-Net (E-FPN,
# both heads)" to choose their defaults on validation.
DATA_ABLATIONS: tuple[Ablation, ...] = (
    Ablation("LAA-Net: official heatmap targets", "laanet", train={"targets": "official"}),
    Ablation("LAA-Net: geometric augmentation", "laanet", train={"geometric_aug": True}),
    Ablation("LAA-Net: official targets + geometric augmentation", "laanet",
             train={"targets": "official", "geometric_aug": True}),
)

DATA_OPTIONS = {"targets": "paper", "geometric_aug": False}  # TrainConfig fields and their defaults


def _data_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` checked against :data:`DATA_OPTIONS`, defaults dropped."""
    options = dict(options or {})
    unknown = set(options) - set(DATA_OPTIONS)
    if unknown:
        raise ValueError(f"unknown data options {sorted(unknown)}; known: {sorted(DATA_OPTIONS)}")
    return {k: v for k, v in options.items() if v != DATA_OPTIONS[k]}


def _profile(profile: Profile | str) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def ablation_config(row: Ablation, profile: Profile | str, seed: int, data: str = "synthetic",
                    budget: AblationScale | None = None, data_options: dict[str, Any] | None = None
                    ) -> TrainConfig:
    """The run of ``row`` on ``seed``: the profile's ablation scale (``budget``: another one).

    ``data_options``: training-data fields of :data:`DATA_OPTIONS` (``targets``, ``geometric_aug``)
    for every row; a row's own ``train`` overrides win."""
    profile = _profile(profile)
    budget = budget or profile.ablation
    overrides = {**_data_options(data_options), **row.train}
    return TrainConfig(model=row.model, profile=profile, data=data, seed=seed, image_size=budget.image_size,
                       n_train=budget.n_train, n_val=budget.n_val, n_test=budget.n_test, epochs=budget.epochs,
                       model_config=dict(row.model_config), progress=False, **overrides)


def _run_folder(row: Ablation, seed: int, data_options: dict[str, Any]) -> str:
    """``<model>_<row>_s<seed>``, with the non-default grid-wide data options appended."""
    suffix = "".join(f"_{_slug(f'{k}_{v}')}" for k, v in sorted(data_options.items()))
    return f"{row.model}_{_slug(row.name)}{suffix}_s{seed}"


def run_ablations(rows: Sequence[Ablation], profile: Profile | str, runs: Path, data: str = "synthetic",
                  budget: AblationScale | None = None, data_options: dict[str, Any] | None = None,
                  cross_dataset: str | Path | None = None, **predict_kw: Any) -> pd.DataFrame:
    """Train-or-load every (row, seed) and score it, at the profile's ablation scale
    (:class:`~dfattn.config.AblationScale`; ``budget``: another one). One table row per
    (ablation, seed) with the AUC on each held-out family, their ``mean``, ``sbi``, and ``quality``
    (mean AUC over the degradations at ``budget.quality_strength``). All rows of a seed are scored
    on the same images, made once.

    ``data_options`` (e.g. ``{"targets": "official"}``): training-data options for every row
    (:func:`ablation_config`); runs with non-default ones go to folders named after them.
    ``cross_dataset``: a labelled folder of real deepfakes (``real/``, ``fake/``) every run is also
    scored on (:func:`~dfattn.protocol.cross_dataset`, column ``cross_dataset``: its AUC)."""
    profile = _profile(profile)
    budget = budget or profile.ablation
    options = _data_options(data_options)
    records = []
    strengths = {n: [DEGRADATIONS[n].grid[budget.quality_strength]] for n in DEGRADATIONS}
    plan = [(seed, list(rows)) for seed in budget.seeds]
    plan += [(seed, [r for r in rows if r.reference]) for seed in budget.reference_seeds]
    for seed, seed_rows in plan:
        if not seed_rows:
            continue
        models, minutes, configs, config = {}, {}, {}, None
        for row in seed_rows:
            config = ablation_config(row, profile, seed, data, budget, options).resolved()
            model, history = train(config, runs / _run_folder(row, seed, options))
            models[row.name], minutes[row.name] = model, history["train_seconds"].sum() / 60
            configs[row.name] = config
        sizes = SplitSizes(config.n_train, config.n_val, config.n_test)
        test = face_splits(data, sizes, config.face_size, seed, detector=config.face_detector)["test"]
        kw = {"amp": config.eval_autocast(), **predict_kw}  # the run's scoring precision
        cross = cross_manipulation_table(cross_manipulation(models, test, config.image_size, seed, **kw))
        q = quality_table(quality(models, test, config.image_size, seed, strengths=strengths, **kw))
        other = {}
        if cross_dataset is not None:
            frames, _ = cross_dataset_frames(models, configs, cross_dataset, **kw)
            other = {name: binary_metrics(part["label"], part["prob"])["auc"]
                     for name, part in frames.groupby("model", sort=False)}
        for row in seed_rows:
            records.append({"ablation": row.name, "model": row.model, "seed": seed,
                            "minutes": minutes[row.name], **cross.loc[row.name].to_dict(),
                            "quality": float(q[row.name].mean()),
                            **({"cross_dataset": other[row.name]} if other else {})})
    return pd.DataFrame(records)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def summarise(results: pd.DataFrame, columns: Sequence[str] = ("mean", "sbi", "quality")) -> pd.DataFrame:
    """Mean and spread (standard deviation, NaN with one seed) over seeds of each ablation, rows in
    their original order."""
    order = list(dict.fromkeys(results["ablation"]))
    grouped = results.groupby("ablation", sort=False)
    table = pd.DataFrame(index=order)
    for column in columns:
        table[f"{column}"] = grouped[column].mean()
        table[f"{column}_std"] = grouped[column].std(ddof=1)  # NaN for a single seed
    table["seeds"] = grouped["seed"].nunique()
    return table


def as_text(summary: pd.DataFrame, columns: Sequence[str] = ("mean", "sbi", "quality")) -> pd.DataFrame:
    """``mean ± std`` strings (three decimals) for the README and the book."""
    out = pd.DataFrame(index=summary.index)
    labels = {"mean": "held-out families AUC", "sbi": "held-out SBI AUC", "quality": "degraded AUC",
              "cross_dataset": "DFDC faces AUC"}
    for column in columns:
        out[labels.get(column, column)] = [f"{m:.3f}" if pd.isna(s) else f"{m:.3f} ± {s:.3f}"
                                           for m, s in zip(summary[column], summary[f"{column}_std"])]
    out["seeds"] = summary["seeds"]
    return out


__all__ = ["ABLATIONS", "Ablation", "DATA_ABLATIONS", "DATA_OPTIONS", "ablation_config", "as_text",
           "run_ablations", "summarise"]
