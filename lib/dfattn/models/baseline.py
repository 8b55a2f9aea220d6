"""The plain binary baseline: the same backbone as the detectors, one logit, binary cross-entropy.

Every ablation in this book needs a floor: what does the backbone learn from the same pseudo-fakes
without explicit attention? :class:`BinaryClassifier` is that floor. It is the backbone's last map
(the EfficientNet head convolution where there is one), global average pooling, dropout and one
linear layer to a single logit, trained with BCE on the label alone (it ignores the heatmap and
consistency targets that LAA-Net uses).

It keeps the :class:`~dfattn.models.base.Detector` contract with the defaults for everything
optional: no attention map, every part trains at every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.models.backbone import NORMALIZATIONS, StaticPadding, as_static_padding, create_backbone
from dfattn.models.base import Detector, register


@dataclass(frozen=True)
class BaselineConfig:
    """Backbone (timm name), ImageNet weights, and the dropout before the linear layer.

    ``normalization`` is the backbone's input normalisation (``"weights"``: its weights' mean/std;
    ``"half"``: mean = std = 0.5; ``"none"``: images in [0, 1] as they are, as the released SBI
    detector takes them); ``backbone_padding`` names convolutions of the timm backbone padded by
    fixed amounts, ``((path, (left, right, top, bottom)), ...)``.
    """

    backbone: str = "efficientnet_b4"
    pretrained: bool = False
    dropout: float = 0.2
    normalization: Literal["weights", "half", "none"] = "weights"
    backbone_padding: StaticPadding = ()

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"BaselineConfig.normalization must be one of {NORMALIZATIONS}, "
                             f"got {self.normalization!r}")
        object.__setattr__(self, "backbone_padding", as_static_padding(self.backbone_padding))


@register("baseline")
class BinaryClassifier(Detector):
    """Backbone -> global average pooling -> dropout -> ``Linear(C, 1)``: one logit of P(fake)."""

    config_class = BaselineConfig

    def __init__(self, config: BaselineConfig = BaselineConfig()):
        super().__init__(config)
        # EfficientNet family: the 1x1 head conv, as timm's own classifier uses
        self.backbone = create_backbone(config.backbone, config.pretrained, (4,), with_head="auto",
                                        normalization=config.normalization,
                                        static_padding=config.backbone_padding)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.backbone.info.channels[-1], 1)

    def fake_logit(self, images: Tensor) -> Tensor:
        """``(B,)`` logits of P(fake) for images ``(B, 3, H, W)`` in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BinaryClassifier expects images (B, 3, H, W), got {tuple(images.shape)}")
        top = self.backbone(images)[-1]  # (B, C, H/32, W/32)
        return self.fc(self.dropout(top.mean((-2, -1)))).squeeze(1)  # (B,)

    forward = fake_logit

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """BCE of the logit against ``batch["label"]`` (1 = fake)."""
        bce = F.binary_cross_entropy_with_logits(self.fake_logit(batch["image"]), batch["label"].float())
        return bce, {"cls": bce.detach()}
