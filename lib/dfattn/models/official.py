"""The officially released LAA-Net, SBI and MAT checkpoints as dfattn detectors.

The authors of LAA-Net (Nguyen et al., CVPR 2024), of Self-Blended Images (SBI; Shiohara and
Yamasaki, CVPR 2022) and of MAT (Zhao et al., CVPR 2021) released trained weights, which a user
downloads under the authors' licences. This module turns such a file into the matching dfattn
detector, without copying any of the official code: the architectures are our own
:class:`~dfattn.models.laanet.LAANet`, :class:`~dfattn.models.baseline.BinaryClassifier` and
:class:`~dfattn.models.mat.MAT`, built with the options that make them compute the released
function (:func:`official_config`), and the released tensors are renamed onto them
(:func:`convert`), strictly: every tensor of the file is used, checked and accounted for.

=========  =====================  =====================  =====================================
release    container entry        our detector           input (images in [0, 1] inside dfattn)
=========  =====================  =====================  =====================================
laanet     ``['state_dict']``     ``laanet`` (float64    384 px, RGB, ``(x - 0.5) / 0.5``;
           (float64 tensors)      on request)            P(fake) = sigmoid(cls logit)
sbi        ``['model']``          ``baseline``           380 px, RGB, no normalisation;
                                                         P(fake) = softmax(logits)[:, 1]
mat        ``['state_dict']``     ``mat`` (official      380 px, RGB, ``(x - 0.5) / 0.5``;
                                  variant)               P(fake) = softmax(logits)[:, 1]
=========  =====================  =====================  =====================================

Facts this module relies on (what the official code saves and loads; the release files
themselves were not available to check):

- **Containers.** LAA-Net saves ``{'epoch', 'state_dict', 'optimizer'}`` with the DataParallel
  wrapper removed; SBI ``{'model', 'optimizer', 'epoch'}`` whose keys carry the prefix ``net.`` of
  its detector wrapper; MAT ``{'logs', 'state_dict', 'optimizer_state', 'scheduler_state'}``
  whose backbone keys carry ``net.``. A bare state dict is accepted too, and a leading
  ``module.`` (DataParallel) is removed. Everything beside the weights (optimiser, scheduler,
  logs) is ignored. All three open with ``torch.load(weights_only=True)``: no arbitrary pickle.
- **Backbone.** All three use EfficientNet-B4 in the naming of the ``efficientnet_pytorch``
  package (``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_bn1``, ``_fc``). In timm
  terms that is ``tf_efficientnet_b4`` (TensorFlow "same" padding, BatchNorm eps 1e-3), not
  ``efficientnet_b4`` (symmetric padding, eps 1e-5): :func:`lukemelas_to_timm` renames the keys,
  splitting the flat block index by the stage sizes (2, 4, 4, 6, 6, 8, 2 for B4).
- **Padding.** The official EfficientNet code pads statically, for an input size fixed when the
  model is built. SBI builds it for its real 380 px input, which is TensorFlow "same" padding:
  nothing to change. LAA-Net builds it for 380 px but runs at 384 px, so the stride-2 5x5
  depthwise convolution of block 6 (timm ``blocks.2.0.conv_dw``) pads (2, 2, 2, 2) where "same"
  padding at its 96 px input would be (1, 2, 1, 2). MAT's vendored code (version 0.6.3) pads
  every convolution as if its input were 380 px, which changes three stride-2 convolutions
  (``blocks.2.0``, ``blocks.3.0``, ``blocks.5.0.conv_dw``: (1, 2, 1, 2), (0, 1, 0, 1),
  (1, 2, 1, 2)) and the feature maps (95, 47, 23, 11 px at strides 4, 8, 16, 32 instead of 95,
  48, 24, 12). Pads are (left, right, top, bottom): :data:`LAANET_PADDING`, :data:`MAT_PADDING`.
- **LAA-Net** (paper §3; the release is the E-FPN B4 model, and the SBI- and BI-trained files
  share one layout): decoder ``deconv_1`` (conv 3x3 1792 -> 448, BN, ReLU), ``deconv_2`` and
  ``deconv_3`` (conv, BN, ReLU, ConvTranspose 4/2/1, BN), ``deconv_4`` (Inception block,
  ConvTranspose, BN, then ReLU); the Inception block's four branches call one 1x1 ``pw_block``,
  and the block is registered twice, so ``inception_block.*`` repeats ``deconv_4.0.*`` (checked
  equal, loaded once). Heads ``hm``, ``cls`` and ``cstency`` have our layout index for index.
  The model was trained and tested in float64.
- **SBI**: the plain EfficientNet-B4 classifier with a two-class ``_fc``; P(fake) is
  softmax column 1. ``softmax(z)[1] = sigmoid(z_1 - z_0)``, so the two rows of ``_fc`` become one
  logit, ``(w_1 - w_0) . x + (b_1 - b_0)``, computed in float64.
- **MAT**: the released configuration (feature layer b2, attention layer b5, M = 4, mid dims 256,
  two classes) is :meth:`~dfattn.models.mat.MATConfig.official` with the texture block's
  convolutions biased. Its buffer ``attentions.mask`` is the fixed 24 x 24 border mask our model
  computes (checked); ``net._fc`` (the backbone's own classifier, unused by MAT's forward) and
  the RIL's ``auxiliary_loss.inner_margin`` (training-only; the config holds the margins) are
  ignored and reported; the RIL's feature centres and rate are carried over.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from dfattn.models.base import Detector, create_detector
from dfattn.models.laanet import OFFICIAL_BI_WEIGHTS
from dfattn.models.mat import MATConfig, border_mask

VARIANTS = ("laanet", "sbi", "mat")
BACKBONE = "tf_efficientnet_b4"
B4_STAGE_SIZES = (2, 4, 4, 6, 6, 8, 2)  # blocks per stage: ceil(1.8 * (1, 2, 2, 3, 3, 4, 1))

LAANET_PADDING = (("blocks.2.0.conv_dw", (2, 2, 2, 2)),)
MAT_PADDING = (
    ("blocks.2.0.conv_dw", (1, 2, 1, 2)),
    ("blocks.3.0.conv_dw", (0, 1, 0, 1)),
    ("blocks.5.0.conv_dw", (1, 2, 1, 2)),
)


@dataclass(frozen=True)
class Release:
    """What one released checkpoint is: where its weights sit, how it takes its input, how its
    outputs become P(fake)."""

    variant: str
    detector: str  # the registered dfattn detector it becomes
    container: str  # the top-level entry that holds the state dict
    image_size: int
    dtype: torch.dtype  # of its floating tensors
    preprocessing: dict[str, Any]
    p_fake: str
    description: str


RELEASES: dict[str, Release] = {
    "laanet": Release(
        "laanet", "laanet", "state_dict", 384, torch.float64,
        {"size": 384, "channels": "RGB", "scale": "x / 255",
         "normalise": "(x - 0.5) / 0.5, inside the model (normalization='half')",
         "crop": "official: a 5-px border cut from the stored face crop, then an affine warp to "
                 "384 x 384 (bilinear)",
         "flip_test": "official: the cls logits of x and of its horizontal flip are averaged "
                      "before the sigmoid (dfattn-detect --flip-tta)"},
        "sigmoid(cls logit)",
        "LAA-Net, EfficientNet-B4 + E-FPN (the SBI- and BI-trained releases share this layout)",
    ),
    "sbi": Release(
        "sbi", "baseline", "model", 380, torch.float32,
        {"size": 380, "channels": "RGB", "scale": "x / 255",
         "normalise": "none: the model takes x in [0, 1] (normalization='none')",
         "crop": "official: the RetinaFace box grown by 1/8 of its width and height on each side, "
                 "resized to 380 x 380"},
        "softmax(logits)[:, 1] = sigmoid(z_fake - z_real): one logit, the difference of the two",
        "Self-Blended Images, EfficientNet-B4 two-class classifier",
    ),
    "mat": Release(
        "mat", "mat", "state_dict", 380, torch.float32,
        {"size": 380, "channels": "RGB", "scale": "x / 255",
         "normalise": "(x - 0.5) / 0.5, inside the model (normalization='half')",
         "crop": "official: a centre crop of 380 x 380 from the stored face crop"},
        "softmax(logits)[:, 1] = sigmoid(z_fake - z_real)",
        "Multi-attentional deepfake detection, EfficientNet-B4 (feature layer b2, attention "
        "layer b5, M = 4)",
    ),
}


def release(variant: str) -> Release:
    if variant not in RELEASES:
        raise ValueError(f"unknown release {variant!r}; choose one of {VARIANTS}")
    return RELEASES[variant]


def official_config(variant: str, float64: bool = False) -> tuple[str, dict[str, Any]]:
    """``(detector name, config fields)`` of the dfattn detector that computes release ``variant``.

    ``float64`` (LAA-Net only, whose release is float64): parameters and computation in double
    precision.
    """
    rel = release(variant)
    if float64 and rel.dtype != torch.float64:
        raise ValueError(f"the {variant} release is {str(rel.dtype).removeprefix('torch.')}: "
                         f"float64 applies only to a float64 release (laanet)")
    if variant == "laanet":
        return "laanet", dict(
            backbone=BACKBONE, pretrained=False, fpn="efpn", head_channels=64, embedding_dim=256,
            dropout=0.4, shared_inception_conv=True, normalization="half",
            backbone_padding=LAANET_PADDING, precision="float64" if float64 else "float32",
            # training only: the weights the released file name suggests (heatmap 10)
            loss_weights=asdict(OFFICIAL_BI_WEIGHTS),
        )
    if variant == "sbi":  # dropout 0.4: EfficientNet-B4's own, before _fc (training only)
        return "baseline", dict(backbone=BACKBONE, pretrained=False, dropout=0.4, normalization="none")
    config = dict(  # MATConfig.official(...) with these fields
        backbone=BACKBONE, pretrained=False, texture_stage=1, attention_stage=3, num_attentions=4,
        hidden_dims=256, output="softmax", normalization="half", backbone_padding=MAT_PADDING,
        texture_bias=True, pretrain_epochs=0,  # the release is the second (MAT) stage
    )
    return "mat", asdict(MATConfig.official(**config))


def official_detector(variant: str, float64: bool = False) -> Detector:
    """A freshly initialised dfattn detector in the architecture of release ``variant``."""
    name, config = official_config(variant, float64)
    return create_detector(name, **config)


# ------------------------------------------------------------------------------------------------
# EfficientNet names: efficientnet_pytorch (lukemelas) <-> timm
# ------------------------------------------------------------------------------------------------

# Inside a block: stage 0 has depthwise-separable blocks (no expansion), the other stages
# inverted residuals. timm name -> efficientnet_pytorch name.
_STAGE0 = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
           "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}
_OTHER = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv",
          "bn3": "_bn2"}
_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
        "classifier": "_fc"}
_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(.+)\.([^.]+)$")
_FLAT_BLOCK = re.compile(r"_blocks\.(\d+)\.(.+)\.([^.]+)$")


def timm_to_lukemelas(key: str, stage_sizes: tuple[int, ...] = B4_STAGE_SIZES) -> str | None:
    """The efficientnet_pytorch name of a timm EfficientNet state-dict key (``None``: no such)."""
    match = _BLOCK.match(key)
    if match:
        stage, index, module, leaf = int(match[1]), int(match[2]), match[3], match[4]
        if stage >= len(stage_sizes) or index >= stage_sizes[stage]:
            return None
        name = (_STAGE0 if stage == 0 else _OTHER).get(module)
        flat = sum(stage_sizes[:stage]) + index
        return None if name is None else f"_blocks.{flat}.{name}.{leaf}"
    module, _, leaf = key.rpartition(".")
    return f"{_TOP[module]}.{leaf}" if module in _TOP else None


def lukemelas_to_timm(key: str, stage_sizes: tuple[int, ...] = B4_STAGE_SIZES) -> str | None:
    """The timm name of an efficientnet_pytorch EfficientNet state-dict key (``None``: no such)."""
    match = _FLAT_BLOCK.match(key)
    if match:
        flat, module, leaf = int(match[1]), match[2], match[3]
        if flat >= sum(stage_sizes):
            return None
        stage = next(s for s in range(len(stage_sizes)) if flat < sum(stage_sizes[: s + 1]))
        index = flat - sum(stage_sizes[:stage])
        inverse = {v: k for k, v in (_STAGE0 if stage == 0 else _OTHER).items()}
        return None if module not in inverse else f"blocks.{stage}.{index}.{inverse[module]}.{leaf}"
    module, _, leaf = key.rpartition(".")
    inverse = {v: k for k, v in _TOP.items()}
    return f"{inverse[module]}.{leaf}" if module in inverse else None


def _backbone_to_timm(key: str) -> str | None:
    """Our :class:`~dfattn.models.backbone.Backbone` key -> the timm full-model key."""
    if key.startswith("backbone.body."):
        return key[len("backbone.body."):]
    for ours, theirs in (("backbone.head.0.", "conv_head."), ("backbone.head.1.", "bn2.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return None


# Our key prefix -> the release's (longest prefix first is how they are matched). A prefix that
# does not end with "." is a whole key.
_HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "laanet": (
        ("decoder.stage1.", "deconv_1.0."),  # conv 1792 -> 448 (.0), BN (.1)
        ("decoder.stage2.0.", "deconv_2.0."),  # conv (.0.0), BN (.0.1)
        ("decoder.stage2.1.0.", "deconv_2.1."),  # ConvTranspose 4/2/1
        ("decoder.stage2.1.1.", "deconv_2.2."),  # BN
        ("decoder.stage3.0.", "deconv_3.0."),
        ("decoder.stage3.1.0.", "deconv_3.1."),
        ("decoder.stage3.1.1.", "deconv_3.2."),
        *((f"decoder.stage4.0.reduce.{i}.", "deconv_4.0.pw_block.") for i in range(4)),  # one module
        ("decoder.stage4.0.conv3.", "deconv_4.0.conv3_block."),
        ("decoder.stage4.0.conv5.", "deconv_4.0.conv5_block."),
        ("decoder.stage4.1.0.", "deconv_4.1."),
        ("decoder.stage4.1.1.", "deconv_4.2."),
        ("cls_head.", "cls."),
        ("heatmap_head.", "hm."),
        ("consistency_head.", "cstency."),
    ),
    "sbi": (("fc.", "net._fc."),),
    "mat": (
        ("attention.net.0.", "attentions.conv_extract."),  # 3x3 conv C_a -> C_a
        ("attention.net.1.", "attentions.bn1."),
        ("attention.net.3.", "attentions.conv2."),  # 1x1 conv C_a -> M, no bias
        ("attention.net.4.", "attentions.bn2."),
        ("texture.extract.", "texture_enhance.conv_extract."),
        ("texture.enhance.0.", "texture_enhance.conv0."),  # grouped 5x5
        ("texture.enhance.1.layers.0.0.", "texture_enhance.bn1."),  # dense layer 1: BN, ReLU, conv
        ("texture.enhance.1.layers.0.2.", "texture_enhance.conv1."),
        ("texture.enhance.1.layers.1.0.", "texture_enhance.bn2."),
        ("texture.enhance.1.layers.1.2.", "texture_enhance.conv2."),
        ("texture.enhance.1.layers.2.0.", "texture_enhance.bn3."),
        ("texture.enhance.1.layers.2.2.", "texture_enhance.conv3."),
        ("texture.enhance.1.transition.0.", "texture_enhance.bn4."),  # BN, ReLU, 1x1 conv
        ("texture.enhance.1.transition.2.", "texture_enhance.conv_last."),
        ("texture.enhance.2.", "texture_enhance.bn_last."),
        ("classifier.local.", "projection_local."),  # Linear(M C_t, 256), hard-swish, Linear
        ("classifier.glob.0.", "project_final."),  # Linear(1792, 256)
        ("classifier.fuse.", "ensemble_classifier_fc."),  # Linear(512, 256), hard-swish, Linear(256, 2)
        ("ril.centers", "auxiliary_loss.feature_centers"),  # (M, C_t)
        ("ril.alpha", "auxiliary_loss.alpha"),
    ),
}
_BACKBONE_PREFIX = {"laanet": "", "sbi": "net.", "mat": "net."}
# Ours, no counterpart in a release, kept as built: MAT's counters, and every backbone's input
# normalisation (set by the config to the release's preprocessing: "half" or "none").
_NORMALIZATION_STATE = ("backbone.mean", "backbone.std")
_OWN_STATE = {"mat": ("epoch", "ril.epoch", *_NORMALIZATION_STATE), "laanet": _NORMALIZATION_STATE,
              "sbi": _NORMALIZATION_STATE}


def _official_key(variant: str, key: str) -> str | None:
    """The release's key for our state-dict key ``key`` (``None``: no counterpart)."""
    timm_key = _backbone_to_timm(key)
    if timm_key is not None:
        name = timm_to_lukemelas(timm_key)
        return None if name is None else _BACKBONE_PREFIX[variant] + name
    for ours, theirs in sorted(_HEADS[variant], key=lambda pair: -len(pair[0])):
        if ours.endswith(".") and key.startswith(ours):
            return theirs + key[len(ours):]
        if key == ours:
            return theirs
    return None


# ------------------------------------------------------------------------------------------------
# The layout of a release, derived from our model
# ------------------------------------------------------------------------------------------------


def _two_class_difference(tensor: Tensor) -> Tensor:
    """A two-class linear layer's ``(2, ...)`` weight or ``(2,)`` bias -> the one-logit layer's
    ``(1, ...)`` / ``(1,)``: row 1 minus row 0, in float64 (``softmax(z)[1] = sigmoid(z1 - z0)``)."""
    return (tensor[1].double() - tensor[0].double()).unsqueeze(0)


@dataclass
class Entry:
    """One tensor of a release: our keys it fills, the shape it must have, how it is turned into
    ours."""

    targets: list[str]
    shape: tuple[int, ...]
    floating: bool
    transform: Callable[[Tensor], Tensor] | None = None


@dataclass
class Layout:
    """Every key a release holds, derived from our official model's state dict.

    ``entries`` are loaded, ``duplicates`` (key -> the key it must equal) are checked and not
    loaded a second time, ``constants`` (key -> value) are checked against the fixed value our
    model computes, ``ignored`` (key -> (shape, why)) are read past, ``own`` are our keys without a
    counterpart (kept as the model was built).
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Tensor] = field(default_factory=dict)
    ignored: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    own: list[str] = field(default_factory=list)

    def expected(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every key of the release -> (shape, floating)."""
        out = {k: (e.shape, e.floating) for k, e in self.entries.items()}
        out.update({k: (self.entries[v].shape, self.entries[v].floating) for k, v in self.duplicates.items()})
        out.update({k: (tuple(v.shape), True) for k, v in self.constants.items()})
        out.update({k: (shape, True) for k, (shape, _) in self.ignored.items()})
        return out


def release_layout(variant: str, model: Detector) -> Layout:
    """The keys, shapes and kinds of release ``variant``, for our official model ``model`` (its
    state dict, mapped back to the release's names)."""
    layout = Layout()
    own = set(_OWN_STATE.get(variant, ()))
    for key, value in model.state_dict().items():
        if key in own:
            layout.own.append(key)
            continue
        source = _official_key(variant, key)
        if source is None:
            raise RuntimeError(f"dfattn.models.official: no release key for {key!r} of the "
                               f"{variant} model (the mapping is incomplete)")
        shape, transform = tuple(value.shape), None
        if variant == "sbi" and source.startswith("net._fc."):
            shape, transform = (2, *shape[1:]), _two_class_difference
        entry = layout.entries.get(source)
        if entry is None:
            layout.entries[source] = Entry([key], shape, value.is_floating_point(), transform)
        else:  # one release tensor for several of our keys (the shared Inception convolution)
            entry.targets.append(key)
    if variant == "laanet":  # the Inception block registered a second time
        for source in [k for k in layout.entries if k.startswith("deconv_4.0.")]:
            layout.duplicates["inception_block." + source[len("deconv_4.0."):]] = source
    if variant == "mat":
        layout.constants["attentions.mask"] = border_mask((24, 24))  # (1, 1, 24, 24)
        c_g = model.channels["global"]
        why_fc = "the backbone's own classifier, which MAT's forward does not use"
        layout.ignored["net._fc.weight"] = ((2, c_g), why_fc)
        layout.ignored["net._fc.bias"] = ((2,), why_fc)
        layout.ignored["auxiliary_loss.inner_margin"] = (
            (2,), "training only: the RIL's margins, which the config holds")
    return layout


# ------------------------------------------------------------------------------------------------
# Reading and converting
# ------------------------------------------------------------------------------------------------


def load_release(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" + (" (a folder)" if path.is_dir() else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors have no common type
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
                         f"(tensors and plain containers only, no arbitrary pickle): {first}") from None


def unwrap(variant: str, obj: Any, source: str = "checkpoint") -> tuple[dict[str, Tensor], list[str]]:
    """The state dict inside a release's container, with a leading ``module.`` removed, and the
    names of the top-level entries left aside (optimiser, scheduler, logs)."""
    entry = release(variant).container
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: holds a {type(obj).__name__}, not a checkpoint dict")
    if entry in obj and isinstance(obj[entry], Mapping):
        state, aside = obj[entry], [str(k) for k in obj if k != entry]
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        state, aside = obj, []  # a bare state dict
    else:
        raise ValueError(f"{source}: no {entry!r} entry holding the weights and not a bare state "
                         f"dict (top-level entries: {', '.join(map(str, list(obj)[:8]))})")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = str(key)
        name = name[len("module."):] if name.startswith("module.") else name
        if not isinstance(value, Tensor):
            raise ValueError(f"{source}: {entry}[{key!r}] is a {type(value).__name__}, not a tensor")
        if name in out:
            raise ValueError(f"{source}: {key!r} appears with and without the 'module.' prefix")
        out[name] = value
    return out, aside


def _some(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _skeleton_layout(variant: str, float64: bool = False) -> Layout:
    """:func:`release_layout` of the official model built on the meta device (no memory, no
    random numbers)."""
    name, config = official_config(variant, float64)
    with torch.device("meta"):
        skeleton = create_detector(name, **config)
    return release_layout(variant, skeleton)


def check_layout(variant: str, state: Mapping[str, Tensor], layout: Layout, source: str) -> None:
    """A ``ValueError`` naming every missing, unexpected, misshapen or mistyped key of ``state``,
    every duplicate that differs from its original and every constant that differs from ours."""
    expected = layout.expected()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} (expected {expected[k][0]})" for k in expected
                 if k in state and tuple(state[k].shape) != expected[k][0]]
    mistyped = [f"{k} ({str(state[k].dtype).removeprefix('torch.')}, expected "
                f"{'floating point' if expected[k][1] else 'an integer'})" for k in expected
                if k in state and state[k].is_floating_point() != expected[k][1]]
    problems = [f"{len(keys)} {what}: {_some(keys)}" for what, keys in
                (("missing", missing), ("unexpected", extra), ("of the wrong shape", misshapen),
                 ("of the wrong kind", mistyped)) if keys]
    if problems:
        hint = ""
        if len(missing) + len(extra) > 10:  # perhaps another release: say which, if one fits
            fits = [other for other in VARIANTS if other != variant
                    and set(_skeleton_layout(other).expected()) == set(state)]
            hint = (f" (its keys are those of the {fits[0]} release)" if fits else
                    f" (is this a {variant} release? The releases are {', '.join(VARIANTS)})")
        raise ValueError(f"{source}: does not have the layout of the {variant} release{hint}: "
                         + "; ".join(problems))
    differ = [f"{k} (differs from {v})" for k, v in layout.duplicates.items()
              if not torch.equal(state[k], state[v])]
    differ += [f"{k} (differs from the fixed value the model computes)" for k, v in layout.constants.items()
               if not torch.equal(state[k].to(v.dtype), v)]
    if differ:
        raise ValueError(f"{source}: tensors that the official code ties to others do not match: "
                         f"{_some(differ)}")


@dataclass
class ImportReport:
    """What :func:`convert` did with each tensor of a release."""

    variant: str
    used: int  # release tensors loaded
    targets: int  # our state-dict entries they filled
    duplicates: list[str]  # release keys checked equal to another and not loaded twice
    constants: list[str]  # release keys checked equal to what our model computes
    ignored: dict[str, str]  # release key -> why it is not used
    own: list[str]  # our keys without a counterpart, kept as built
    aside: list[str]  # top-level container entries left aside (optimiser, logs, ...)
    source_dtype: str
    dtype: str

    def lines(self) -> list[str]:
        out = [f"{self.used} tensors loaded into {self.targets} entries of the model "
               f"({self.source_dtype} -> {self.dtype})"]
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicates checked equal and loaded once: "
                       f"{_some(self.duplicates, 3)}")
        if self.constants:
            out.append(f"checked against the model's fixed values: {', '.join(self.constants)}")
        out += [f"ignored {k}: {why}" for k, why in self.ignored.items()]
        if self.own:
            out.append(f"kept as built (no counterpart in the release): {', '.join(self.own)}")
        if self.aside:
            out.append(f"container entries left aside: {', '.join(self.aside)}")
        return out


def convert(variant: str, checkpoint: Any, float64: bool = False, source: str = "checkpoint"
            ) -> tuple[Detector, ImportReport]:
    """The dfattn detector (eval mode) holding the weights of release ``variant``.

    Args:
        variant: ``"laanet"``, ``"sbi"`` or ``"mat"``.
        checkpoint: what :func:`load_release` read (the official container or a bare state dict).
        float64: keep a float64 release (LAA-Net) in float64; by default every floating tensor
            becomes float32.
        source: the file's name, for the errors.

    Raises:
        ValueError: naming ``source`` and the key(s): a missing, unexpected, misshapen or mistyped
            key, a duplicate or constant that differs, or ``float64`` for a release that is not
            float64.
    """
    state, aside = unwrap(variant, checkpoint, source)
    name, config = official_config(variant, float64)
    layout = _skeleton_layout(variant, float64)
    check_layout(variant, state, layout, source)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    if float64 and dtypes != ["float64"]:
        raise ValueError(f"{source}: float64 keeps a float64 release's precision, but its tensors "
                         f"are {', '.join(dtypes)}")
    model = create_detector(name, **config)
    target = model.state_dict()
    for key, entry in layout.entries.items():
        value = state[key] if entry.transform is None else entry.transform(state[key])
        for ours in entry.targets:
            like = target[ours]
            target[ours] = value.to(like.dtype).reshape(like.shape).clone()
    model.load_state_dict(target, strict=True)
    report = ImportReport(
        variant, len(layout.entries), sum(len(e.targets) for e in layout.entries.values()),
        sorted(layout.duplicates), sorted(layout.constants),
        {k: why for k, (_, why) in layout.ignored.items()}, layout.own, aside,
        "/".join(dtypes), "float64" if float64 else "float32")
    return model.eval(), report


def import_release(variant: str, path: str | Path, float64: bool = False) -> tuple[Detector, ImportReport]:
    """:func:`convert` of the file ``path`` (read with ``weights_only=True``)."""
    return convert(variant, load_release(path), float64, str(path))


__all__ = ["B4_STAGE_SIZES", "BACKBONE", "ImportReport", "LAANET_PADDING", "Layout", "MAT_PADDING",
           "RELEASES", "Release", "VARIANTS", "check_layout", "convert", "import_release",
           "load_release", "lukemelas_to_timm", "official_config", "official_detector", "release",
           "release_layout", "timm_to_lukemelas", "unwrap"]
