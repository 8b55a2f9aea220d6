"""One interface over the three detectors, and their configurations as plain JSON.

Every detector is an ``nn.Module`` with

- ``fake_logit(images) -> (B,)``: the logit of P(fake) for images ``(B, 3, H, W)`` in [0, 1]
  (the inference path: LAA-Net runs only its classification head);
- ``predict_proba(images) -> (B,)``: ``sigmoid(fake_logit)``;
- ``loss(batch) -> (total, parts)``: the training loss of a batch of
  :class:`~dfattn.data.datasets.PseudoFakePairs` items, and its detached parts for logging;
- ``set_epoch(epoch)``: per-epoch state (MAT's two-stage schedule and RIL centre rate).

:func:`create_detector` builds one by name; :func:`detector_config` and :func:`detector_from_config`
turn it into JSON and back (checkpoints store this JSON next to the safetensors weights).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Protocol

from torch import Tensor, nn

from dfattn.models.baseline import BaselineConfig, BinaryClassifier
from dfattn.models.laanet import LAANet, LAANetConfig
from dfattn.models.mat import MAT, MATConfig

DETECTORS: dict[str, tuple[type[nn.Module], type]] = {
    "laanet": (LAANet, LAANetConfig),
    "mat": (MAT, MATConfig),
    "baseline": (BinaryClassifier, BaselineConfig),
}


class Detector(Protocol):
    """What the trainer, the evaluator and the command-line tools need from a model."""

    def fake_logit(self, images: Tensor) -> Tensor: ...
    def predict_proba(self, images: Tensor) -> Tensor: ...
    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]: ...
    def set_epoch(self, epoch: int) -> None: ...


def _config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from :func:`dataclasses.asdict` output."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def create_detector(name: str, **config: Any) -> nn.Module:
    """A detector by name (``laanet``, ``mat``, ``baseline``) from its config fields.

    Nested fields may be given as dicts, e.g. ``loss_weights={"heatmap": 10.0}`` for LAA-Net or
    ``agda={"choice": "mass"}`` for MAT; they update the defaults.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}")
    model_cls, config_cls = DETECTORS[name]
    base = dataclasses.asdict(config_cls())
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        elif dataclasses.is_dataclass(value):
            base[key] = dataclasses.asdict(value)
        else:
            base[key] = value
    return model_cls(_config_from_dict(config_cls, base))


def detector_name(model: nn.Module) -> str:
    for name, (model_cls, _) in DETECTORS.items():
        if type(model) is model_cls:
            return name
    raise ValueError(f"{type(model).__name__} is not one of the registered detectors {sorted(DETECTORS)}")


def detector_config(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}``: JSON that :func:`detector_from_config` turns back into
    the same architecture (the weights travel separately)."""
    return {"name": detector_name(model), "config": dataclasses.asdict(model.config)}


def detector_from_config(spec: dict[str, Any], **overrides: Any) -> nn.Module:
    """Inverse of :func:`detector_config` (``overrides``, e.g. ``pretrained=False``, replace fields)."""
    return create_detector(spec["name"], **{**spec["config"], **overrides})
