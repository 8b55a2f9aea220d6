"""The one contract every detector keeps, and the registry that finds detectors by name.

The trainer, the evaluator, the protocol, the attribution code, the ablations and every
command-line tool talk to a model only through :class:`Detector`:

=======================  ========  ==================================================================
method                   required  what it is
=======================  ========  ==================================================================
``fake_logit(images)``   yes       ``(B,)`` logit of P(fake) for images ``(B, 3, H, W)`` in [0, 1]:
                                   the inference path (LAA-Net runs only its classification head;
                                   MAT's two softmax logits become ``z_fake - z_real``)
``loss(batch)``          yes       ``(total, parts)``: the training loss of a batch of pseudo-fake
                                   pairs (``image``, ``label`` and any targets) and its detached
                                   parts for logging
``predict_proba``        no        ``sigmoid(fake_logit)`` under ``torch.no_grad``, defined here once
``attention_map``        no        ``(B, h, w)`` non-negative map of where the model itself looks, at
                                   its own resolution, or ``None`` (the default: no explicit map)
``trainable(epoch)``     no        names of the direct submodules that train at ``epoch`` (default:
                                   all, less ``backbone`` for the first ``frozen_backbone_epochs``)
``set_epoch(epoch)``     no        per-epoch state (MAT's stage and RIL rate); default: nothing
``spec()``               no        JSON that :func:`detector_from_spec` turns back into the same
                                   architecture (checkpoints store it beside the weights)
=======================  ========  ==================================================================

A detector is a module with a frozen config dataclass, registered under a name with
:func:`register`; adding one is one file::

    @register("tiny")
    class Tiny(Detector):
        config_class = TinyConfig
        ...

``forward`` stays each model's own (LAA-Net returns all three heads, MAT everything its losses and
figures need); nothing outside a model's own chapter calls it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import typing
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

REGISTRY: dict[str, type["Detector"]] = {}


class Detector(nn.Module):
    """Base class of every detector (see the module docstring for the contract).

    Subclasses set ``config_class`` (a dataclass) and call ``super().__init__(config)``.
    ``frozen_backbone_epochs`` is training state, not architecture: the trainer sets it from its
    recipe (LAA-Net freezes the backbone for its first 6 % of epochs) and :meth:`trainable` reads it.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = type(None)

    def __init__(self, config: Any = None):
        super().__init__()
        self.config = config
        self.frozen_backbone_epochs = 0

    # -- required ---------------------------------------------------------------------------------

    def fake_logit(self, images: Tensor) -> Tensor:
        """``(B,)`` logit of P(fake) for images ``(B, 3, H, W)`` in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} must implement fake_logit(images)")

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total loss, {part: detached value})`` of a training batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(batch)")

    # -- optional, with defaults ------------------------------------------------------------------

    @torch.no_grad()
    def predict_proba(self, images: Tensor) -> Tensor:
        """P(fake) per image, ``(B,)``: ``sigmoid(fake_logit(images))`` without gradients."""
        return torch.sigmoid(self.fake_logit(images))

    def attention_map(self, images: Tensor) -> Tensor | None:
        """The model's explicit attention ``(B, h, w)`` (non-negative), or ``None`` if it has none."""
        return None

    def trainable(self, epoch: int) -> tuple[str, ...]:
        """Names of the direct submodules whose parameters train at ``epoch`` (0-based)."""
        names = tuple(name for name, _ in self.named_children())
        if epoch < self.frozen_backbone_epochs:
            names = tuple(n for n in names if n != "backbone")
        return names

    def set_epoch(self, epoch: int) -> None:
        """Per-epoch state (none by default)."""

    def spec(self) -> dict[str, Any]:
        """``{"name": ..., "config": {...}}``: the architecture as JSON (weights travel apart)."""
        if REGISTRY.get(self.name) is not type(self):
            raise ValueError(f"{type(self).__name__} is not a registered detector "
                             f"(registered: {sorted(REGISTRY)})")
        return {"name": self.name, "config": dataclasses.asdict(self.config)}


def register(name: str) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator: make a :class:`Detector` subclass buildable by ``name``."""

    def decorate(cls: type[Detector]) -> type[Detector]:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"register({name!r}) needs a Detector subclass, got {cls!r}")
        if not dataclasses.is_dataclass(cls.config_class):
            raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
        if name in REGISTRY and REGISTRY[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"a detector named {name!r} is registered already ({REGISTRY[name].__name__})")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorate


ENTRY_POINTS = "dfattn.detectors"  # installed packages may register detectors under this group
_plugins_loaded = False


def _registered() -> dict[str, type[Detector]]:
    """The registry, with the built-in detectors imported (they register themselves) and, once,
    the modules that installed packages name under the ``dfattn.detectors`` entry-point group
    (so the command-line tools find their detectors too)."""
    global _plugins_loaded
    import dfattn.models.baseline  # noqa: F401
    import dfattn.models.laanet  # noqa: F401
    import dfattn.models.mat  # noqa: F401

    if not _plugins_loaded:
        _plugins_loaded = True
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            entry.load()
    return REGISTRY


def detector_class(name: str) -> type[Detector]:
    """The class registered as ``name``, or a ``ValueError`` listing the names."""
    registry = _registered()
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; the registered detectors are {sorted(registry)}")
    return registry[name]


def config_fields(name: str) -> set[str]:
    """The config field names of detector ``name``."""
    return {f.name for f in dataclasses.fields(detector_class(name).config_class)}


def _config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from :func:`dataclasses.asdict` output."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
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


def create_detector(name: str, **config: Any) -> Detector:
    """A detector by name from its config fields (the defaults for the others).

    Nested fields may be given as dicts, e.g. ``loss_weights={"heatmap": 10.0}`` for LAA-Net or
    ``agda={"choice": "mass"}`` for MAT; they update the defaults.
    """
    cls = detector_class(name)
    base = dataclasses.asdict(cls.config_class())
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        elif dataclasses.is_dataclass(value):
            base[key] = dataclasses.asdict(value)
        else:
            base[key] = value
    return cls(_config_from_dict(cls.config_class, base))


def detector_from_spec(spec: dict[str, Any], **overrides: Any) -> Detector:
    """Inverse of :meth:`Detector.spec` (``overrides``, e.g. ``pretrained=False``, replace fields
    the config has)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or \
            not isinstance(spec.get("config"), dict):
        raise ValueError(f"a detector spec is {{'name': str, 'config': dict}}, got {spec!r:.200}")
    known = config_fields(spec["name"])
    return create_detector(spec["name"], **{**spec["config"],
                                            **{k: v for k, v in overrides.items() if k in known}})


__all__ = ["REGISTRY", "Detector", "config_fields", "create_detector", "detector_class",
           "detector_from_spec", "register"]
