"""LAA-Net: Localized Artifact Attention Network (Nguyen et al., CVPR 2024).

LAA-Net adds *explicit* attention to a binary deepfake classifier: besides the real/fake logit it
predicts where the blending artefacts are, as a heatmap of "vulnerable points" on the blending
boundary and as a self-consistency map, both at a quarter of the input resolution. Three parts:

1. **Backbone** (paper §3.1): an ImageNet EfficientNet (B4 at 384 px in the paper; any timm CNN
   here). We read the maps at strides 8, 16 and 32 and the 1x1 head convolution at stride 32.
2. **E-FPN** (paper §3.3, "enhanced FPN"): a decoder from stride 32 to stride 4 that fuses each
   lower-level map ``x`` with the decoder map ``y`` of the same size as

   .. math:: \\mathrm{fuse}(y, x) = [\\, y \\;\\|\\; (1 - \\sigma(y)) \\odot x \\,]

   (channel concatenation): low-level detail passes where the high-level path is weak, which the
   paper calls limiting redundancy. ``fpn="fpn"`` concatenates without the gate (plain FPN);
   ``fpn="none"`` uses no lower-level maps at all (the ablations of chapter 5).
3. **Heads** (paper §3.2) on the fused stride-4 map: classification (one logit), heatmap (one
   channel, CenterNet prior on its bias) and self-consistency (a 256-d embedding per pixel,
   compared with the embedding at the anchor point).

Losses (paper §3.4): the CornerNet/CenterNet modified focal loss on the heatmap, BCE on the
consistency map, BCE on the label, weighted (:class:`LAANetLossWeights`).

Paper vs official code (the book keeps the table, chapter 2a); the paper is the default, the code
an option:

- the last decoder block is an Inception block of four branches; the code's branches share *one*
  1x1 convolution (``shared_inception_conv=True``);
- input normalisation: the backbone's own ImageNet mean/std (``normalization="imagenet"``) or the
  code's mean = std = 0.5 of AdvProp weights (``"half"``);
- heatmap focal loss: plain (``label_smoothing=1``) or the code's positive term times 0.72;
- loss weights: the paper's values are not in our notes; the defaults are the official SBI
  config's (heatmap 100, consistency 100, classification 1); the released checkpoint's name
  suggests heatmap 10 (:data:`OFFICIAL_BI_WEIGHTS`).

The model takes images in [0, 1] (its backbone normalises them) and returns raw logits. It keeps
the :class:`~dfattn.models.base.Detector` contract: :meth:`LAANet.fake_logit` is the inference path
(the classification head only), :meth:`LAANet.attention_map` the heatmap head's probabilities, and
the backbone stays frozen for ``frozen_backbone_epochs`` (the trainer's recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.models.backbone import StaticPadding, as_static_padding, create_backbone
from dfattn.models.base import Detector, register

FPNKind = Literal["efpn", "fpn", "none"]
HEADS = ("cls", "heatmap", "consistency")
HEATMAP_PRIOR = -2.19  # CenterNet: sigmoid(-2.19) = 0.1, so the untrained heatmap is mostly "no"
_BACKBONE_NORMALIZATION = {"imagenet": "weights", "half": "half", "none": "none"}


@dataclass(frozen=True)
class LAANetLossWeights:
    """``L = heatmap * L_hm + consistency * L_c + cls * L_cls`` (defaults: official SBI config)."""

    heatmap: float = 100.0
    consistency: float = 100.0
    cls: float = 1.0
    label_smoothing: float = 1.0  # the code's 0.72 as an option


OFFICIAL_SBI_WEIGHTS = LAANetLossWeights(100.0, 100.0, 1.0, 0.72)
OFFICIAL_BI_WEIGHTS = LAANetLossWeights(10.0, 100.0, 1.0, 0.72)  # also the released checkpoint's name


@dataclass(frozen=True)
class LAANetConfig:
    """Architecture of :class:`LAANet`.

    Attributes:
        backbone: timm model name (``efficientnet_b4`` in the paper).
        pretrained: start from ImageNet weights (see :mod:`dfattn.models.backbone`).
        fpn: ``"efpn"`` (gated fusion, the paper), ``"fpn"`` (plain concatenation) or ``"none"``.
        head_channels: hidden width of each head (64).
        embedding_dim: per-pixel embedding of the consistency head (256).
        dropout: element-wise dropout on the backbone maps before the decoder (0.4, code).
        shared_inception_conv: the official code's Inception block with one shared 1x1 conv.
        normalization: ``"imagenet"`` (the backbone's mean/std), ``"half"`` (mean = std = 0.5) or
            ``"none"`` (images in [0, 1] as they are).
        loss_weights: the weights of :meth:`LAANet.loss` (heads with weight 0 are not computed in
            training: the ablations "heatmap only", "consistency only", "neither").
        backbone_padding: convolutions of the timm backbone padded by fixed amounts,
            ``((path, (left, right, top, bottom)), ...)`` (:class:`~dfattn.models.backbone.StaticPadConv2d`;
            the released checkpoint's backbone pads as if its input were 380 px,
            :mod:`dfattn.models.official`).
        precision: ``"float32"``, or ``"float64"``: parameters, buffers and computation in double
            precision (the released model was trained and tested in float64).
    """

    backbone: str = "efficientnet_b4"
    pretrained: bool = False
    fpn: FPNKind = "efpn"
    head_channels: int = 64
    embedding_dim: int = 256
    dropout: float = 0.4
    shared_inception_conv: bool = False
    normalization: Literal["imagenet", "half", "none"] = "imagenet"
    loss_weights: LAANetLossWeights = LAANetLossWeights()
    backbone_padding: StaticPadding = ()
    precision: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        if self.fpn not in ("efpn", "fpn", "none"):
            raise ValueError(f"fpn must be 'efpn', 'fpn' or 'none', got {self.fpn!r}")
        if self.normalization not in ("imagenet", "half", "none"):
            raise ValueError(f"normalization must be 'imagenet', 'half' or 'none', got {self.normalization!r}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {self.precision!r}")
        object.__setattr__(self, "backbone_padding", as_static_padding(self.backbone_padding))


class LAANetOutput(NamedTuple):
    """Raw outputs; heads that were not asked for are ``None``.

    cls: ``(B,)`` logits; heatmap: ``(B, 1, H/4, W/4)`` logits; embedding: ``(B, D, H/4, W/4)``.
    """

    cls: Tensor
    heatmap: Tensor | None
    embedding: Tensor | None


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def upsample2x(channels: int, relu: bool = False) -> nn.Sequential:
    """ConvTranspose(k4, s2, p1) + BN (+ ReLU): the decoder's only way up (no interpolation)."""
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Inception(nn.Module):
    """The last decoder block: four branches of ``c/4`` channels, concatenated (``c -> c``).

    1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1. With ``shared=True`` the four 1x1
    convolutions are one module (the official code's quirk).
    """

    def __init__(self, channels: int, shared: bool = False):
        super().__init__()
        if channels % 4:
            raise ValueError(f"Inception needs channels divisible by 4, got {channels}")
        c = channels // 4
        make = lambda: conv_bn_relu(channels, c, 1)  # noqa: E731
        first = make()
        self.reduce = nn.ModuleList([first] * 4 if shared else [first] + [make() for _ in range(3)])
        self.conv3 = conv_bn_relu(c, c, 3)
        self.conv5 = conv_bn_relu(c, c, 5)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        a, b, c, d = self.reduce
        return torch.cat([a(x), self.conv3(b(x)), self.conv5(c(x)), d(self.pool(x))], dim=1)


def gated_fusion(y: Tensor, x: Tensor) -> Tensor:
    """E-FPN's fusion: ``[y, (1 - sigmoid(y)) * x]`` along channels (``y`` and ``x`` same shape)."""
    return torch.cat([y, (1.0 - torch.sigmoid(y)) * x], dim=1)


def plain_fusion(y: Tensor, x: Tensor) -> Tensor:
    """Plain FPN baseline: ``[relu(y), x]`` (the code's ``tfpn``), no gate."""
    return torch.cat([F.relu(y), x], dim=1)


class EFPN(nn.Module):
    """Decoder from stride 32 to stride 4 with gated (E-FPN), plain (FPN) or no lateral fusion.

    Channels follow the backbone: for B4, ``c_top, c32, c16, c8 = 1792, 448, 160, 56`` and the
    output has ``2 * c8 = 112`` channels (E-FPN/FPN) or ``c8`` (none): each fusion doubles the
    decoder's channels by concatenating the lateral map of the same width (paper §3.3, Fig. 3).
    """

    def __init__(self, c_top: int, c32: int, c16: int, c8: int, kind: FPNKind = "efpn",
                 shared_inception_conv: bool = False):
        super().__init__()
        self.kind = kind
        skip = kind != "none"
        w = 2 if skip else 1  # a fused map has the decoder's channels plus the skip's
        self.stage1 = conv_bn_relu(c_top, c32)  # stride 32, no upsampling
        self.stage2 = nn.Sequential(conv_bn_relu(w * c32, c16), upsample2x(c16))  # -> stride 16
        self.stage3 = nn.Sequential(conv_bn_relu(w * c16, c8), upsample2x(c8))  # -> stride 8
        self.stage4 = nn.Sequential(  # -> stride 4
            Inception(w * c8, shared_inception_conv), upsample2x(w * c8, relu=True)
        )
        self.out_channels = w * c8
        self.fuse = {"efpn": gated_fusion, "fpn": plain_fusion, "none": None}[kind]

    def _merge(self, y: Tensor, x: Tensor, gates: list[Tensor] | None) -> Tensor:
        if self.fuse is None:
            return y
        if gates is not None:
            gates.append(1.0 - torch.sigmoid(y) if self.kind == "efpn" else torch.ones_like(y))
        return self.fuse(y, x)

    def forward(self, top: Tensor, x32: Tensor, x16: Tensor, x8: Tensor,
                gates: list[Tensor] | None = None) -> Tensor:
        y = self._merge(self.stage1(top), x32, gates)  # (B, 2 c32, H/32, W/32)
        y = self._merge(self.stage2(y), x16, gates)  # (B, 2 c16, H/16, W/16)
        y = self._merge(self.stage3(y), x8, gates)  # (B, 2 c8, H/8, W/8)
        return self.stage4(y)  # (B, 2 c8, H/4, W/4)


@register("laanet")
class LAANet(Detector):
    """LAA-Net: backbone, E-FPN and the classification, heatmap and self-consistency heads.

    Input: images ``(B, 3, H, W)`` in [0, 1] with ``H`` and ``W`` divisible by 32; the backbone
    normalises them (its weights' ImageNet statistics, or 0.5/0.5 with ``normalization="half"``).
    Output: :class:`LAANetOutput` of raw logits.

    Training calls :meth:`loss` (``model(images)`` with the weighted heads, :func:`laanet_loss`);
    inference calls :meth:`fake_logit` / :meth:`predict_proba` (classification head only). On CPU, convert the model
    with ``model.to(memory_format=torch.channels_last)``: the B4 model then trains and predicts
    20-40 % faster on 2 cores (``benchmarks/bench_laanet.py``).
    """

    config_class = LAANetConfig

    def __init__(self, config: LAANetConfig = LAANetConfig()):
        super().__init__(config)
        # EfficientNet family: the 1x1 head conv is the decoder's top input; other CNNs: the last stage
        self.backbone = create_backbone(config.backbone, config.pretrained, (2, 3, 4), with_head="auto",
                                        normalization=_BACKBONE_NORMALIZATION[config.normalization],
                                        static_padding=config.backbone_padding)
        c8, c16, c32 = self.backbone.info.channels[:3]
        c_top = self.backbone.info.channels[-1]  # the head conv, else the last stage again
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = EFPN(c_top, c32, c16, c8, config.fpn, config.shared_inception_conv)
        cin, hc = self.decoder.out_channels, config.head_channels
        stem = lambda: [nn.Conv2d(cin, hc, 3, padding=1), nn.BatchNorm2d(hc), nn.ReLU(inplace=True)]  # noqa: E731
        self.cls_head = nn.Sequential(*stem(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hc, 1))
        self.heatmap_head = nn.Sequential(*stem(), nn.Conv2d(hc, 1, 1))
        nn.init.constant_(self.heatmap_head[-1].bias, HEATMAP_PRIOR)
        self.consistency_head = nn.Sequential(*stem(), nn.Conv2d(hc, config.embedding_dim, 1))
        nn.init.kaiming_normal_(self.consistency_head[-1].weight, nonlinearity="relu")
        nn.init.zeros_(self.consistency_head[-1].bias)
        if config.precision == "float64":  # float32 images meet float64 buffers: computed in float64
            self.double()

    def features(self, images: Tensor, gates: list[Tensor] | None = None) -> Tensor:
        """The fused stride-4 map ``(B, C, H/4, W/4)`` from images in [0, 1].

        ``gates``: if a list is given, the E-FPN gates ``1 - sigmoid(y)`` (strides 32, 16, 8) are
        appended to it, for inspection.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LAANet expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2] % 32 or images.shape[-1] % 32:
            raise ValueError(
                f"LAANet needs H and W divisible by 32 (the decoder upsamples stride 32 by exact "
                f"factors of 2), got {tuple(images.shape[-2:])}"
            )
        maps = self.backbone(images)  # strides 8, 16, 32 (and 32 for the head conv, if any)
        x8, x16, x32, top = maps if len(maps) == 4 else (*maps, maps[-1])
        x8, x16, x32, top = (self.dropout(t) for t in (x8, x16, x32, top))
        return self.decoder(top, x32, x16, x8, gates)

    def forward(self, images: Tensor, heads: Sequence[str] = HEADS) -> LAANetOutput:
        """Run the heads in ``heads`` (all three for training) on images in [0, 1]."""
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}; choose from {HEADS}")
        fused = self.features(images)
        return LAANetOutput(
            cls=self.cls_head(fused).squeeze(1),
            heatmap=self.heatmap_head(fused) if "heatmap" in heads else None,
            embedding=self.consistency_head(fused) if "consistency" in heads else None,
        )

    def fake_logit(self, images: Tensor) -> Tensor:
        """The logit of P(fake), ``(B,)``: the inference path, classification head only."""
        return self(images, heads=("cls",)).cls

    def attention_map(self, images: Tensor) -> Tensor:
        """``(B, H/4, W/4)``: the heatmap head's probability of a vulnerable point (paper §3.2)."""
        return torch.sigmoid(self(images, heads=("heatmap",)).heatmap).squeeze(1)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of a batch (``image``, ``label``, ``heatmap``, ``consistency``): paper §3.4,
        weighted by ``config.loss_weights``; only the heads with a non-zero weight run."""
        w = self.config.loss_weights
        heads = ("cls",) + (("heatmap",) if w.heatmap else ()) + (("consistency",) if w.consistency else ())
        return laanet_loss(self(batch["image"], heads=heads), batch, w)


# --------------------------------------------------------------------------------------------
# Self-consistency (paper §3.2) and losses (paper §3.4)
# --------------------------------------------------------------------------------------------


def consistency_logits(embedding: Tensor, target: Tensor) -> Tensor:
    """Logits of the predicted consistency: ``<e_anchor, e_p> / sqrt(D)`` for every pixel ``p``.

    The anchor of each image is the argmax of its *target* consistency map (the first maximum in
    raster order: a vulnerable point for a fake, pixel (0, 0) for a real image's all-zero target),
    so this branch exists for training only.

    Args:
        embedding: ``(B, D, h, w)``; target: ``(B, 1, h, w)``.

    Returns:
        ``(B, 1, h, w)`` logits.
    """
    b, d, h, w = embedding.shape
    flat = embedding.flatten(2)  # (B, D, h w)
    anchor = target.flatten(1).argmax(dim=1)  # (B,)
    e_anchor = flat[torch.arange(b, device=flat.device), :, anchor]  # (B, D)
    similarity = torch.einsum("bd,bdp->bp", e_anchor, flat) / math.sqrt(d)  # (B, h w)
    return similarity.view(b, 1, h, w)


def consistency_map(embedding: Tensor, target: Tensor) -> Tensor:
    """Predicted consistency ``sigmoid(<e_anchor, e_p> / sqrt(D))`` in (0, 1), ``(B, 1, h, w)``."""
    return torch.sigmoid(consistency_logits(embedding, target))


def focal_loss(logits: Tensor, target: Tensor, label_smoothing: float = 1.0,
               eps: float = 1e-4) -> Tensor:
    """CornerNet/CenterNet's modified focal loss on a heatmap (paper Eq. for L_hm).

    With ``p = clamp(sigmoid(logits), eps, 1 - eps)`` and positives where ``target == 1``:

    .. math:: L = -\\frac{1}{N_{pos}} \\sum \\begin{cases} s (1-p)^2 \\log p & y = 1 \\\\
              (1-y)^4 p^2 \\log(1-p) & \\text{otherwise} \\end{cases}

    ``N_pos`` counts the positives of the whole batch (at least 1). ``label_smoothing`` is the
    factor ``s`` of the positive term (1 in CenterNet; 0.72 in LAA-Net's code).
    """
    p = torch.sigmoid(logits.float()).clamp(eps, 1 - eps)  # float32 even under autocast
    pos = target.eq(1).float()
    pos_term = label_smoothing * (1 - p).pow(2) * torch.log(p) * pos
    neg_term = (1 - target).pow(4) * p.pow(2) * torch.log(1 - p) * (1 - pos)
    return -(pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1.0)




def laanet_loss(output: LAANetOutput, batch: dict[str, Tensor],
                weights: LAANetLossWeights = LAANetLossWeights()) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts for a batch with ``label``, ``heatmap`` and ``consistency``.

    Heads absent from ``output`` (or with weight 0) contribute nothing.
    """
    parts: dict[str, Tensor] = {
        "cls": F.binary_cross_entropy_with_logits(output.cls, batch["label"].float())
    }
    if output.heatmap is not None and weights.heatmap:
        parts["heatmap"] = focal_loss(output.heatmap, batch["heatmap"], weights.label_smoothing)
    if output.embedding is not None and weights.consistency:
        target = batch["consistency"]
        logits = consistency_logits(output.embedding, target).float()  # BCE in fp32 under AMP
        parts["consistency"] = F.binary_cross_entropy_with_logits(logits, target.float())
    scale = {"cls": weights.cls, "heatmap": weights.heatmap, "consistency": weights.consistency}
    total = sum(scale[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}


__all__ = [
    "EFPN",
    "HEADS",
    "Inception",
    "LAANet",
    "LAANetConfig",
    "LAANetLossWeights",
    "LAANetOutput",
    "OFFICIAL_BI_WEIGHTS",
    "OFFICIAL_SBI_WEIGHTS",
    "consistency_logits",
    "consistency_map",
    "focal_loss",
    "gated_fusion",
    "laanet_loss",
    "plain_fusion",
]
