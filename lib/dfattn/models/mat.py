"""Multi-attentional Deepfake Detection (MAT; Zhao et al., CVPR 2021), paper and official-code variants.

MAT treats deepfake detection as *fine-grained* classification: the evidence is subtle and local,
so the network looks at several regions at once (``M`` attention maps) and reads shallow *texture*
there, beside a deep global feature. The blocks, in the order of the paper (section numbers of arXiv 2103.02406):

=====================================  ==========================================================
paper                                  here
=====================================  ==========================================================
§3.1 backbone, layers SL_t and SL_a    :class:`MAT` (``texture_stage``, ``attention_stage``)
§3.2 attention module                 :class:`AttentionModule`
§3.2 textural feature enhancement      :class:`TextureEnhancement`
§3.2 bilinear attention pooling (BAP)  :func:`bilinear_attention_pooling`
§3.2 deep global feature G             :meth:`MAT.forward` (BAP of the summed map)
§3.3 regional independence loss (RIL)  :class:`RegionalIndependenceLoss`
§3.4 AGDA                              :mod:`dfattn.models.agda`
=====================================  ==========================================================

The released code departs from the paper in several places (the book's chapter 2b keeps the table).
Every such choice is a
field of :class:`MATConfig`; the defaults follow the paper and :meth:`MATConfig.official` gives the
code's settings. Tensor names: ``B`` batch, ``M`` attention maps, ``C_t`` channels of the texture
layer SL_t (32 for B4), ``C_a`` of the attention layer SL_a (160), ``C_g`` of the final map (1792),
``C_F`` of the enhanced texture (``4 C_t`` paper, ``C_t`` per head official).

Backbone taps are timm feature levels (``features_only``): level ``i`` ends at stride ``2**(i+1)``.
For EfficientNets level 1 is the end of stage 2 ("b2", 32 channels in B4), level 2 of stage 3,
level 3 of stage 5 ("b5", 160 channels) and level 4 of stage 7. The paper's best taps
(SL_t = L2, SL_a = L5) are levels 1 and 3, the defaults. (Stage 4, "L4" of the paper's ablation,
is not a timm feature level.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.models.agda import AGDAConfig, attention_guided_augmentation
from dfattn.models.backbone import NORMALIZATIONS, StaticPadding, as_static_padding, create_backbone
from dfattn.models.base import Detector, register

Variant = Literal["paper", "official"]
VARIANTS = ("paper", "official")


@dataclass(frozen=True)
class MATConfig:
    """Every MAT hyper-parameter. Defaults: the paper; :meth:`official`: the released code.

    Args:
        backbone: timm model (EfficientNet family: the global feature needs its ``conv_head``).
            The paper's weights are AdvProp B4, ``tf_efficientnet_b4.ap_in1k`` in timm;
            ``efficientnet_b4`` is the faster PyTorch-padded variant.
        pretrained: ImageNet weights (see :mod:`dfattn.models.backbone`).
        drop_path_rate: stochastic depth of the backbone (official: 0.2; paper: not stated).
        texture_stage: timm feature level of SL_t (1 = end of stage 2, the paper's L2).
        attention_stage: timm feature level of SL_a (3 = end of stage 5, the paper's L5).
        num_attentions: ``M``, the number of attention maps (paper: 4 is best).
        attention_head: ``"paper"``: 1x1 conv, BN, ReLU; ``"official"``: 3x3 conv, BN, ReLU, 1x1 conv,
            BN, ELU + 1, times a mask that zeroes a border of 2/24 of the map.
        texture_block: ``"paper"``: residual against local average pooling, then one shared
            3-layer dense block (``C_F = 4 C_t``); ``"official"``: a 3x3 conv first, the residual
            modulated by ``tanh`` of each attention map, one grouped dense block per head
            (``C_F = C_t``); ``"none"``: no enhancement, the shallow features themselves are pooled
            (the ablation "without textural enhancement").
        classifier: ``"paper"``: one linear layer on ``[P, G]``; ``"official"``: two small MLPs
            (``hidden_dims``, hard-swish) fused by a third.
        hidden_dims: width of the official classifier.
        head_dropout: probability of dropping a whole attention head in training (official 0.25).
        global_dropout: dropout on the global feature G in training (official 0.5).
        output: ``"softmax"``: two logits with cross-entropy (paper); ``"logit"``: one logit with
            binary cross-entropy.
        ril: ``"paper"``: per-head squared distances, centres from all samples, ordered pairs of
            centres; ``"official"``: one Frobenius distance over all heads, centres from real
            samples only, signed margins, the inter term divided by ``M alpha``.
        alpha: initial moving-average rate of the feature centres.
        alpha_decay: factor applied to ``alpha`` every epoch.
        inner_margins: ``(m_in(real), m_in(fake))``; paper (0.05, 0.1), official (0.2, -0.8), where a
            negative margin pushes samples *away* from the centres.
        inter_margin: ``m_out`` between centres; paper 0.2, official 0.8.
        standardise_semantic: standardise D per sample and channel over space before pooling the
            semantic features V (official).
        ce_weight, ril_weight: ``lambda_1, lambda_2`` of the total loss (paper 1, 1; official 1, 0.5).
        agda_weight: weight of the cross-entropy on the AGDA images (a second forward pass; 0
            disables AGDA).
        match_weight: weight of the official "match" loss (the semantic features of the heads that
            AGDA did not touch should not move; not in the paper).
        agda: :class:`~dfattn.models.agda.AGDAConfig`.
        pretrain_epochs: the official two-stage schedule: train a plain classifier (backbone,
            global average pooling, one linear layer) for this many epochs, then the full MAT
            (official 20; 0 = paper, MAT from the start).
        normalization: the input normalisation of the backbone: ``"weights"`` (the mean/std of
            its weights), ``"half"`` (mean = std = 0.5, inputs in [-1, 1], as the released code)
            or ``"none"``.
        backbone_padding: convolutions of the timm backbone padded by fixed amounts,
            ``((path, (left, right, top, bottom)), ...)``: the released code's EfficientNet pads
            every convolution as if its input were 380 px (:mod:`dfattn.models.official`).
        texture_bias: the official texture block's dense-layer and transition convolutions with
            a bias, as the released checkpoint has them (``False``: without, as before).
        ril_inter_scale: ``"official"``: the paper variant's inter-centre term divided by
            ``M alpha`` as the released code divides its own. The term reaches the features only
            through the centre update ``c' = c + alpha mean(V - c)``, so its gradient scales with
            ``alpha`` (about 3 % of the intra term's at alpha 0.05); the division undoes that.
            ``"none"``: the paper's sum as it stands. The official variant is always divided.
    """

    backbone: str = "efficientnet_b4"
    pretrained: bool = False
    drop_path_rate: float = 0.0
    texture_stage: int = 1
    attention_stage: int = 3
    num_attentions: int = 4
    attention_head: Variant = "paper"
    texture_block: Variant = "paper"
    classifier: Variant = "paper"
    hidden_dims: int = 256
    head_dropout: float = 0.0
    global_dropout: float = 0.0
    output: Literal["softmax", "logit"] = "softmax"
    ril: Variant = "paper"
    alpha: float = 0.05
    alpha_decay: float = 0.9
    inner_margins: tuple[float, float] = (0.05, 0.1)
    inter_margin: float = 0.2
    standardise_semantic: bool = False
    ce_weight: float = 1.0
    ril_weight: float = 1.0
    agda_weight: float = 1.0
    match_weight: float = 0.0
    agda: AGDAConfig = field(default_factory=AGDAConfig)
    pretrain_epochs: int = 0
    normalization: Literal["weights", "half", "none"] = "weights"
    backbone_padding: StaticPadding = ()
    texture_bias: bool = False
    ril_inter_scale: Literal["none", "official"] = "none"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"MATConfig.normalization must be one of {NORMALIZATIONS}, "
                             f"got {self.normalization!r}")
        object.__setattr__(self, "backbone_padding", as_static_padding(self.backbone_padding))
        if self.texture_block not in (*VARIANTS, "none"):
            raise ValueError(f"MATConfig.texture_block must be one of {(*VARIANTS, 'none')}, "
                             f"got {self.texture_block!r}")
        for name in ("attention_head", "classifier", "ril"):
            if getattr(self, name) not in VARIANTS:
                raise ValueError(f"MATConfig.{name} must be one of {VARIANTS}, got {getattr(self, name)!r}")
        if self.output not in ("softmax", "logit"):
            raise ValueError(f"MATConfig.output must be 'softmax' or 'logit', got {self.output!r}")
        if not 0 <= self.texture_stage <= self.attention_stage <= 4:
            raise ValueError("MATConfig needs 0 <= texture_stage <= attention_stage <= 4 (timm feature "
                             f"levels), got {self.texture_stage} and {self.attention_stage}")
        if self.num_attentions < 1:
            raise ValueError(f"MATConfig.num_attentions must be >= 1, got {self.num_attentions}")
        if not (0 < self.alpha <= 1 and 0 < self.alpha_decay <= 1):
            raise ValueError(f"MATConfig needs alpha, alpha_decay in (0, 1], got {self.alpha}, {self.alpha_decay}")

    @classmethod
    def official(cls, **overrides) -> "MATConfig":
        """The released code's experiment: every departure from the paper set to the code's value."""
        values = dict(
            drop_path_rate=0.2, attention_head="official", texture_block="official",
            classifier="official", head_dropout=0.25, global_dropout=0.5, ril="official",
            inner_margins=(0.2, -0.8), inter_margin=0.8, standardise_semantic=True, ril_weight=0.5,
            match_weight=0.1, agda=AGDAConfig.official(), pretrain_epochs=20,
        )
        return cls(**{**values, **overrides})

    def replace(self, **overrides) -> "MATConfig":
        return replace(self, **overrides)


# ------------------------------------------------------------------------------------------------
# §3.2 Attention module
# ------------------------------------------------------------------------------------------------


def border_mask(size: tuple[int, int], device=None) -> Tensor:
    """Official: a 24 x 24 grid of ones with a 2-cell border of zeros, resized (nearest) to ``size``."""
    mask = torch.zeros(1, 1, 24, 24, device=device)
    mask[..., 2:-2, 2:-2] = 1.0
    return F.interpolate(mask, size=size, mode="nearest")  # (1, 1, h, w)


class AttentionModule(nn.Module):
    """``A = f_att(f_SLa)``: ``M`` non-negative spatial attention maps (paper §3.2).

    Paper: 1x1 conv, BN, ReLU. Official: 3x3 conv, BN, ReLU, 1x1 conv (no bias), BN, ELU + 1 (strictly
    positive), times :func:`border_mask`.
    """

    def __init__(self, in_channels: int, num_maps: int, variant: Variant = "paper"):
        super().__init__()
        self.variant = variant
        if variant == "paper":
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, num_maps, 1, bias=False), nn.BatchNorm2d(num_maps), nn.ReLU()
            )
        else:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True), nn.Conv2d(in_channels, num_maps, 1, bias=False),
                nn.BatchNorm2d(num_maps), nn.ELU(),
            )

    def forward(self, f_a: Tensor) -> Tensor:
        a = self.net(f_a)  # (B, C_a, H_a, W_a) -> (B, M, H_a, W_a)
        if self.variant == "official":
            a = (a + 1.0) * border_mask(a.shape[-2:], a.device)
        return a


# ------------------------------------------------------------------------------------------------
# §3.2 Textural feature enhancement
# ------------------------------------------------------------------------------------------------


def _cat_per_group(tensors: list[Tensor], groups: int) -> Tensor:
    """Concatenate ``(B, G * c_i, H, W)`` maps channel-wise *within* each of ``G`` groups, so that a
    grouped convolution afterwards sees only its own head's channels."""
    b, _, h, w = tensors[0].shape
    return torch.cat([t.view(b, groups, -1, h, w) for t in tensors], 2).view(b, -1, h, w)


class DenseBlock(nn.Module):
    """Densely connected convolutions (Huang et al.): layer ``j`` sees the block input and all earlier
    outputs; each layer is BN, ReLU, 3x3 conv with ``growth`` new channels; a BN, ReLU, 1x1
    transition maps the ``in + layers * growth`` channels to ``out_channels``. With ``groups = M``
    every head has its own weights (official texture block); ``bias``: the convolutions have biases
    (the released checkpoint's do)."""

    def __init__(self, channels: int, growth: int, out_channels: int, layers: int = 3, groups: int = 1,
                 bias: bool = False):
        super().__init__()
        self.groups = groups
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + j * growth), nn.ReLU(inplace=True),
                nn.Conv2d(channels + j * growth, growth, 3, padding=1, bias=bias, groups=groups),
            )
            for j in range(layers)
        )
        total = channels + layers * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(total), nn.ReLU(inplace=True),
            nn.Conv2d(total, out_channels, 1, bias=bias, groups=groups),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(_cat_per_group(features, self.groups)))  # + growth channels
        return self.transition(_cat_per_group(features, self.groups))


class TextureEnhancement(nn.Module):
    """Textural feature enhancement (paper §3.2).

    Shallow features ``f_SLt`` carry texture but also low-frequency content. Local average pooling
    down to the attention grid gives ``D``; the residual ``T = f_SLt - up(D)`` keeps the
    high-frequency part, which a densely connected block enhances into the textural feature map F.
    ``D`` itself is reused by the regional independence loss (semantic features V).

    Paper: F = DenseBlock(T), shared by all heads, ``C_F = 4 C_t`` channels. Official (``Texture_Enhance_v2``):
    a 3x3 conv before pooling; ``T`` is multiplied by ``tanh`` of each (detached, up-sampled)
    attention map, giving ``M`` copies, and each head has its own dense block (a grouped 5x5 conv,
    three 3x3 dense layers, a 1x1 transition to ``C_t``, BN, ReLU); ``bias``: its dense-layer and
    transition convolutions have biases, as in the released checkpoint.
    """

    def __init__(self, channels: int, num_maps: int, variant: Variant = "paper", bias: bool = False):
        super().__init__()
        self.variant = variant
        self.num_maps = num_maps
        c, m = channels, num_maps
        if variant == "none":  # ablation: f_SLt pooled as it is
            self.extract, self.enhance, self.out_channels = nn.Identity(), nn.Identity(), c
        elif variant == "paper":
            self.extract = nn.Identity()
            self.enhance = DenseBlock(c, growth=c, out_channels=4 * c)
            self.out_channels = 4 * c
        else:
            self.extract = nn.Conv2d(c, c, 3, padding=1)
            self.enhance = nn.Sequential(
                nn.Conv2d(m * c, m * c, 5, padding=2, groups=m),
                DenseBlock(m * c, growth=m * c, out_channels=m * c, groups=m, bias=bias),
                nn.BatchNorm2d(m * c), nn.ReLU(inplace=True),
            )
            self.out_channels = c

    def residual(self, f_t: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``(T, D)``: the texture residual at SL_t resolution and the local averages on ``grid``."""
        f_t = self.extract(f_t)
        d = F.adaptive_avg_pool2d(f_t, grid)  # (B, C_t, H_a, W_a)
        if f_t.shape[-2:] == d.shape[-2:]:  # SL_t as coarse as SL_a: no residual (as the code)
            return f_t, d
        return f_t - F.interpolate(d, size=f_t.shape[-2:], mode="nearest"), d  # (B, C_t, H_t, W_t)

    def forward(self, f_t: Tensor, attention: Tensor) -> tuple[Tensor, Tensor]:
        """``(F, D)``: F is ``(B, C_F, H_t, W_t)`` (paper, shared) or ``(B, M, C_F, H_t, W_t)``
        (official, per head); D is ``(B, C_t, H_a, W_a)``."""
        if self.variant == "none":
            return f_t, F.adaptive_avg_pool2d(f_t, attention.shape[-2:])
        t, d = self.residual(f_t, attention.shape[-2:])
        if self.variant == "paper":
            return self.enhance(t), d
        b, c, h, w = t.shape
        gate = torch.tanh(F.interpolate(attention.detach(), size=(h, w), mode="bilinear",
                                        align_corners=True))  # (B, M, H_t, W_t)
        t = (t.unsqueeze(1) * gate.unsqueeze(2)).view(b, self.num_maps * c, h, w)  # (B, M C_t, H_t, W_t)
        return self.enhance(t).view(b, self.num_maps, c, h, w), d


# ------------------------------------------------------------------------------------------------
# §3.2 Bilinear attention pooling
# ------------------------------------------------------------------------------------------------


def bilinear_attention_pooling(
    features: Tensor, attention: Tensor, normalise: Literal["l2", "mean"] = "l2", eps: float = 1e-8
) -> Tensor:
    """BAP: ``P_k = sum_{h,w} A_k(h, w) F(:, h, w)`` for every map ``k`` (paper §3.2).

    Args:
        features: ``(B, C, H, W)`` shared by all maps, or ``(B, M, C, H, W)`` one per map.
        attention: ``(B, M, h, w)``, resized bilinearly (align corners) to ``(H, W)``.
        normalise: ``"l2"``: the paper's *normalised average pooling*: each ``P_k`` is divided by its
            L2 norm over channels, so it does not scale with the attention's intensity;
            ``"mean"``: divide by ``sum A_k`` instead, an attention-weighted mean (used for G).

    Returns:
        ``(B, M, C)``.
    """
    if attention.shape[-2:] != features.shape[-2:]:
        attention = F.interpolate(attention, size=features.shape[-2:], mode="bilinear", align_corners=True)
    if normalise == "mean":
        attention = attention + eps
        attention = attention / attention.sum((-2, -1), keepdim=True)
    if features.ndim == 4:
        pooled = torch.einsum("bmhw,bchw->bmc", attention, features)
    else:
        pooled = torch.einsum("bmhw,bmchw->bmc", attention, features)
    return F.normalize(pooled, dim=-1) if normalise == "l2" else pooled


# ------------------------------------------------------------------------------------------------
# §3.3 Regional independence loss
# ------------------------------------------------------------------------------------------------


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt`` with a zero (not infinite) gradient at 0 (coinciding centres at initialisation)."""
    return x.clamp_min(1e-12).sqrt()


@dataclass
class RILTerms:
    """The two terms of the regional independence loss and their sum."""

    intra: Tensor
    inter: Tensor

    @property
    def total(self) -> Tensor:
        return self.intra + self.inter


def _mean_over_processes(x: Tensor) -> Tensor:
    """``x`` averaged over the processes of a distributed run (each holds an equal shard of the
    global batch, so this is the global batch's mean); ``x`` itself in a single process. Under
    DDP the centres must move with every process's samples, not with rank 0's alone (DDP's buffer
    broadcast would otherwise keep only rank 0's update)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


class RegionalIndependenceLoss(nn.Module):
    """Regional independence loss (paper §3.3): keep each attention head on *its own*
    region by pulling every sample's semantic feature ``V_k`` towards a feature centre ``c_k`` of
    head ``k`` (intra term) and pushing the centres apart (inter term).

    Paper::

        c' = c + alpha mean_i (V^i - c)                                     (centre update)
        L = mean_i sum_k max(||V_k^i - c'_k||^2 - m_in(y_i), 0)              (intra)
            + sum_{j != k} max(m_out - ||c'_j - c'_k||^2, 0)                 (inter, ordered pairs)

    (The paper sums over the batch; we take the mean, so the weight does not depend on the batch
    size.) Official (``Auxiliary_Loss_v2``): the centre update uses only real samples (the fake rows
    contribute zero but still count in the mean), the intra term is
    ``mean_i max(sign(m) ||V^i - c'||_F - m, 0)`` with the Frobenius norm over all heads at once and a
    signed margin (negative: push away), and the inter term is
    ``sum_{j < k} max(m_out - ||c'_j - c'_k||, 0) / (M alpha)``.

    The loss is computed against the *updated* centres ``c'``, which depend on the batch through
    ``alpha``: that is what gives the inter term a gradient (as in the code). The centres are a
    buffer: saved with the model, starting at zero, and written (detached) only in training mode;
    under DDP the update is averaged over the processes (the global batch's mean).
    ``alpha = alpha_0 decay^epoch`` follows :meth:`set_epoch`.
    """

    centers: Tensor
    alpha: Tensor
    epoch: Tensor

    def __init__(
        self,
        num_maps: int,
        channels: int,
        variant: Variant = "paper",
        alpha: float = 0.05,
        alpha_decay: float = 0.9,
        inner_margins: tuple[float, float] = (0.05, 0.1),
        inter_margin: float = 0.2,
        inter_scale: str = "none",
    ):
        super().__init__()
        if inter_scale not in ("none", "official"):
            raise ValueError(f"inter_scale must be 'none' or 'official', got {inter_scale!r}")
        self.variant = variant
        self.inter_scale = inter_scale
        self.alpha0, self.alpha_decay = alpha, alpha_decay
        self.inter_margin = inter_margin
        self.register_buffer("inner_margins", torch.tensor(inner_margins, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("centers", torch.zeros(num_maps, channels))  # (M, C_t)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("epoch", torch.tensor(0))

    def set_epoch(self, epoch: int) -> None:
        """Decay the moving-average rate: ``alpha = alpha_0 decay^epoch``."""
        self.epoch.fill_(int(epoch))
        self.alpha.fill_(self.alpha0 * self.alpha_decay ** int(epoch))

    def update_centers(self, semantic: Tensor, labels: Tensor) -> Tensor:
        """``c' = c + alpha mean_i w_i (V^i - c)`` with ``w_i = 1`` (paper) or ``[y_i = real]``
        (official); differentiable in ``V``. In training mode ``c'`` (detached) becomes the new state.

        Args:
            semantic: ``(B, M, C_t)`` semantic features V.
            labels: ``(B,)`` 0 real, 1 fake.
        """
        delta = semantic - self.centers  # (B, M, C_t)
        if self.variant == "official":
            delta = delta * (labels == 0).to(delta.dtype).view(-1, 1, 1)
        step = delta.mean(0)  # (M, C_t)
        new = self.centers + self.alpha * step
        if self.training:
            self.centers.copy_(self.centers + self.alpha * _mean_over_processes(step.detach()))
        return new

    def forward(self, semantic: Tensor, labels: Tensor) -> RILTerms:
        if semantic.ndim != 3 or semantic.shape[1:] != self.centers.shape:
            raise ValueError(f"RIL expects semantic features (B, {self.centers.shape[0]}, "
                             f"{self.centers.shape[1]}), got {tuple(semantic.shape)}")
        labels = labels.view(-1).long()
        centers = self.update_centers(semantic, labels)  # (M, C_t)
        margin = self.inner_margins[labels]  # (B,)
        pairwise = (centers[:, None] - centers[None]).pow(2).sum(-1)  # (M, M) squared distances
        off_diagonal = ~torch.eye(len(centers), dtype=torch.bool, device=centers.device)
        if self.variant == "paper":
            distance = (semantic - centers).pow(2).sum(-1)  # (B, M) squared, per head
            intra = F.relu(distance - margin[:, None]).sum(1).mean()
            inter = F.relu(self.inter_margin - pairwise[off_diagonal]).sum()
            if self.inter_scale == "official":  # undo the alpha its gradient carries (ril_inter_scale)
                inter = inter / (len(centers) * self.alpha)
        else:
            distance = _safe_sqrt((semantic - centers).pow(2).sum((1, 2)))  # (B,) Frobenius over heads
            intra = F.relu(torch.sign(margin) * distance - margin).mean()
            between = _safe_sqrt(pairwise[torch.triu(off_diagonal)])  # (M (M - 1) / 2,)
            inter = F.relu(self.inter_margin - between).sum() / (len(centers) * self.alpha)
        return RILTerms(intra, inter)


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@dataclass
class MATOutput:
    """Everything one forward pass of :class:`MAT` produces."""

    logits: Tensor  # (B, 2) softmax or (B, 1) logit
    attention: Tensor  # (B, M, H_a, W_a): the attention maps (before head dropout)
    textural: Tensor  # (B, M, C_F): the textural feature matrix P
    semantic: Tensor  # (B, M, C_t): V, BAP of the pooled map D (for the RIL)
    global_feature: Tensor  # (B, C_g): G


@dataclass
class MATLosses:
    """The loss terms of one training step (weighted sum in ``total``; unused terms are 0)."""

    total: Tensor
    ce: Tensor
    ril: Tensor
    ril_intra: Tensor
    ril_inter: Tensor
    agda: Tensor
    match: Tensor

    def as_dict(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Stage:
    """What is trained at one epoch (the released code's two-stage schedule: the backbone alone as a
    plain classifier for ``pretrain_epochs``, then the whole MAT; the paper trains MAT throughout).

    ``name`` is ``"backbone"`` (plain classifier: backbone + global average pooling + one linear layer)
    or ``"mat"``; ``epoch`` counts from the start of the stage (the RIL's ``alpha`` decays with it);
    ``loss_weights`` maps each of ``ce, ril, agda, match`` to its weight (0: inactive);
    ``modules`` names the submodules of :class:`MAT` whose parameters are trained.
    """

    name: Literal["backbone", "mat"]
    epoch: int
    loss_weights: dict[str, float]
    modules: tuple[str, ...]


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over two logits, or binary cross-entropy for one; labels 0 real, 1 fake."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels.long())


def fake_logit(logits: Tensor) -> Tensor:
    """The logit of ``P(fake)``, ``(B,)``, from two logits (their difference) or one (itself)."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits[:, 1] - logits[:, 0]


@register("mat")
class MAT(Detector):
    """Multi-attentional deepfake detector (Zhao et al., CVPR 2021).

    Input: images ``(B, 3, H, W)`` in ``[0, 1]`` (normalised inside with the backbone's mean/std).
    Forward (paper §3, Fig. 2)::

        f_t, f_a, f_g = backbone(x)           # SL_t, SL_a, final 1x1 head
        A = attention(f_a)                    # (B, M, H_a, W_a)
        F, D = texture(f_t, A)                # enhanced texture; local averages on the A grid
        P = BAP(F, A), l2-normalised          # (B, M, C_F) textural feature matrix
        G = BAP(f_g, sum_k A_k), weighted mean  # (B, C_g) deep global feature
        logits = classifier([P, G])
        V = BAP(D, A), l2-normalised          # (B, M, C_t) for the RIL

    Training: :meth:`training_step` (CE + RIL + AGDA pass, per :meth:`stage`); the epoch is set with
    :meth:`set_epoch`; :meth:`trainable` follows :meth:`stage`. Inference: :meth:`fake_logit`;
    :meth:`attention_map` is the mean of the ``M`` maps.
    """

    epoch: Tensor
    config_class = MATConfig

    def __init__(self, config: MATConfig = MATConfig()):
        super().__init__(config)
        c = config
        self.levels = sorted({c.texture_stage, c.attention_stage, 4})
        self.backbone = create_backbone(c.backbone, pretrained=c.pretrained, out_indices=self.levels,
                                        with_head=True, drop_path_rate=c.drop_path_rate,
                                        normalization=c.normalization, static_padding=c.backbone_padding)
        channels = self.backbone.info.channels
        c_t = channels[self.levels.index(c.texture_stage)]
        c_a = channels[self.levels.index(c.attention_stage)]
        c_g = channels[-1]
        m, out = c.num_attentions, 2 if c.output == "softmax" else 1
        self.register_buffer("epoch", torch.tensor(0))

        self.attention = AttentionModule(c_a, m, c.attention_head)
        self.texture = TextureEnhancement(c_t, m, c.texture_block, c.texture_bias)
        c_f = self.texture.out_channels
        if c.classifier == "paper":
            self.classifier = nn.Linear(m * c_f + c_g, out)
        else:
            self.classifier = OfficialClassifier(m * c_f, c_g, c.hidden_dims, out)
        self.global_dropout = nn.Dropout(c.global_dropout)
        self.ril = RegionalIndependenceLoss(m, c_t, c.ril, c.alpha, c.alpha_decay, c.inner_margins,
                                            c.inter_margin, inter_scale=c.ril_inter_scale)
        # Stage 1 of the official schedule: the backbone as a plain classifier.
        self.plain_head = nn.Linear(c_g, out) if c.pretrain_epochs > 0 else None
        self.channels = {"texture": c_t, "attention": c_a, "global": c_g, "textural": c_f}

    # -- backbone ----------------------------------------------------------------------------------

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f_t, f_a, f_g)``: the SL_t, SL_a and final feature maps of images ``x`` in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MAT expects images (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        feats = self.backbone(x)  # [levels..., head]
        level = self.levels.index
        return feats[level(self.config.texture_stage)], feats[level(self.config.attention_stage)], feats[-1]

    # -- forward -----------------------------------------------------------------------------------

    def _head_keep(self, b: int, device) -> Tensor | None:
        """Official head dropout: keep each (sample, head) with ``1 - p``, survivors scaled by ``1/(1-p)``."""
        p = self.config.head_dropout
        if not self.training or p == 0:
            return None
        keep = torch.rand(b, self.config.num_attentions, device=device) >= p
        return keep.float() / (1 - p)  # (B, M)

    def forward(self, x: Tensor) -> MATOutput:
        f_t, f_a, f_g = self.taps(x)
        a = self.attention(f_a)  # (B, M, H_a, W_a)
        textured, d = self.texture(f_t, a)  # (B, C_F, H_t, W_t) | (B, M, C_F, H_t, W_t); (B, C_t, H_a, W_a)
        p = bilinear_attention_pooling(textured, a, "l2")  # (B, M, C_F)
        keep = self._head_keep(x.shape[0], x.device)
        a_sum = a if keep is None else a * keep[..., None, None]
        a_sum = a_sum.sum(1, keepdim=True)  # (B, 1, H_a, W_a)
        g = bilinear_attention_pooling(f_g, a_sum, "mean").squeeze(1)  # (B, C_g)
        if keep is not None:
            p = p * keep[..., None]
        if self.config.standardise_semantic:
            d = (d - d.mean((-2, -1), keepdim=True)) / (d.std((-2, -1), keepdim=True) + 1e-8)
        v = bilinear_attention_pooling(d, a, "l2")  # (B, M, C_t)
        logits = self.classifier(torch.cat([p.flatten(1), self.global_dropout(g)], 1))
        return MATOutput(logits, a, p, v, g)

    def plain_logits(self, x: Tensor) -> Tensor:
        """Stage-1 classifier of the official schedule: global average pooling of the final map."""
        if self.plain_head is None:
            raise RuntimeError("MAT.plain_logits needs MATConfig.pretrain_epochs > 0")
        return self.plain_head(self.taps(x)[2].mean((-2, -1)))

    def logits(self, x: Tensor) -> Tensor:
        """The logits of the classifier active at the current epoch."""
        return self.plain_logits(x) if self.stage().name == "backbone" else self(x).logits

    def fake_logit(self, x: Tensor) -> Tensor:
        """The logit of ``P(fake)``, ``(B,)``: ``z_fake - z_real`` for two softmax logits (their
        softmax is the sigmoid of that difference), the logit itself for one."""
        return fake_logit(self.logits(x))

    def attention_map(self, x: Tensor, reduce: Literal["mean", "max"] = "mean") -> Tensor:
        """``(B, H_a, W_a)``: the ``M`` attention maps reduced over heads: ``"mean"`` (proportional
        to ``sum_k A_k``, the map that pools the global feature ``G``, paper §3.2) or ``"max"``
        (the strongest head at each position)."""
        if reduce not in ("mean", "max"):
            raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
        attention = self(x).attention  # (B, M, H_a, W_a)
        return attention.mean(1) if reduce == "mean" else attention.amax(1)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The trainer's interface: :meth:`training_step` on ``batch["image"]``, ``batch["label"]``
        (AGDA draws from the global torch RNG, which the trainer's checkpoints save)."""
        losses, _ = self.training_step(batch["image"], batch["label"])
        parts = {k: v.detach() for k, v in losses.__dict__.items() if k != "total"}
        return losses.total, parts

    # -- schedule ----------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (0-based): the stage, and the RIL's ``alpha`` decayed from the start
        of the MAT stage (the code resets alpha there)."""
        self.epoch.fill_(int(epoch))
        self.ril.set_epoch(max(0, int(epoch) - self.config.pretrain_epochs))

    def stage(self, epoch: int | None = None) -> Stage:
        """Which losses and parameters are active at ``epoch`` (default: the current one)."""
        c = self.config
        epoch = int(self.epoch) if epoch is None else int(epoch)
        if epoch < c.pretrain_epochs:
            return Stage("backbone", epoch, {"ce": 1.0, "ril": 0.0, "agda": 0.0, "match": 0.0},
                         ("backbone", "plain_head"))
        weights = {"ce": c.ce_weight, "ril": c.ril_weight, "agda": c.agda_weight,
                   "match": c.match_weight if c.agda_weight > 0 else 0.0}
        return Stage("mat", epoch - c.pretrain_epochs, weights,
                     ("backbone", "attention", "texture", "classifier"))

    def trainable(self, epoch: int) -> tuple[str, ...]:
        """The submodules trained at ``epoch``: :attr:`Stage.modules` of :meth:`stage` (less the
        backbone while the trainer keeps it frozen)."""
        names = self.stage(epoch).modules
        if epoch < self.frozen_backbone_epochs:
            names = tuple(n for n in names if n != "backbone")
        return names

    # -- training ----------------------------------------------------------------------------------

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
                      ) -> tuple[MATLosses, MATOutput | None]:
        """The losses of one batch at the current stage (the caller calls ``backward`` and steps).

        MAT stage: ``L = l1 CE + l2 RIL`` on the clean images, plus, with AGDA, a second forward pass on
        the AGDA images made from the clean attention maps (``agda_weight`` CE, and ``match_weight``
        times the mean distance between the clean and augmented semantic features of the heads AGDA
        did not use). The RIL updates the centres (in training mode).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            labels: ``(B,)`` 0 real, 1 fake.
            generator: randomness of AGDA.
        """
        stage = self.stage()
        w = stage.loss_weights
        zero = images.new_zeros(())
        if stage.name == "backbone":
            ce = classification_loss(self.plain_logits(images), labels)
            return MATLosses(ce, ce, zero, zero, zero, zero, zero), None
        out = self(images)
        ce = classification_loss(out.logits, labels)
        ril = self.ril(out.semantic, labels) if w["ril"] > 0 else RILTerms(zero, zero)
        total = w["ce"] * ce + w["ril"] * ril.total
        agda_ce = match = zero
        if w["agda"] > 0:
            aug = attention_guided_augmentation(images, out.attention.detach(), self.config.agda, generator)
            out_aug = self(aug.image)
            agda_ce = classification_loss(out_aug.logits, labels)
            total = total + w["agda"] * agda_ce
            if w["match"] > 0:
                untouched = torch.ones_like(out.semantic[..., 0], dtype=torch.bool)  # (B, M)
                untouched[torch.arange(len(images), device=images.device), aug.head] = False
                moved = _safe_sqrt((out_aug.semantic - out.semantic).pow(2).sum(-1))  # (B, M)
                match = moved[untouched].mean()
                total = total + w["match"] * match
        return MATLosses(total, ce, ril.total, ril.intra, ril.inter, agda_ce, match), out


class OfficialClassifier(nn.Module):
    """The released code's head: ``P`` (flattened) and ``G`` through a hard-swish MLP each, fused by a
    third (the paper, §3.2, feeds ``[P, G]`` to one linear layer)."""

    def __init__(self, local_dims: int, global_dims: int, hidden: int, out: int):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(local_dims, hidden), nn.Hardswish(),
                                   nn.Linear(hidden, hidden), nn.Hardswish())
        self.glob = nn.Sequential(nn.Linear(global_dims, hidden), nn.Hardswish())
        self.fuse = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Hardswish(), nn.Linear(hidden, out))
        self.local_dims = local_dims

    def forward(self, features: Tensor) -> Tensor:
        p, g = features[:, : self.local_dims], features[:, self.local_dims :]
        return self.fuse(torch.cat([self.local(p), self.glob(g)], 1))


def create_mat(variant: Variant = "paper", **overrides) -> MAT:
    """A :class:`MAT` with the paper's (``variant="paper"``) or the released code's settings
    (``"official"``); ``overrides`` are :class:`MATConfig` fields (``backbone``, ``pretrained``, ...)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    config = MATConfig.official(**overrides) if variant == "official" else MATConfig(**overrides)
    return MAT(config)
