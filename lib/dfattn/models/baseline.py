"""The plain binary baseline: the same backbone as the detectors, one logit, binary cross-entropy.

Every ablation in this book needs a floor: what does the backbone learn from the same pseudo-fakes
without explicit attention? :class:`BinaryClassifier` is that floor. It is the backbone's last map
(the EfficientNet head convolution where there is one), global average pooling, dropout and one
linear layer to a single logit, trained with BCE on the label alone (it ignores the heatmap and
consistency targets that LAA-Net uses).

It has the detectors' interface: ``fake_logit``, ``predict_proba``, ``loss(batch)``, ``set_epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.models.backbone import create_backbone


@dataclass(frozen=True)
class BaselineConfig:
    """Backbone (timm name), ImageNet weights, and the dropout before the linear layer."""

    backbone: str = "efficientnet_b4"
    pretrained: bool = False
    dropout: float = 0.2


class BinaryClassifier(nn.Module):
    """Backbone -> global average pooling -> dropout -> ``Linear(C, 1)``: one logit of P(fake)."""

    def __init__(self, config: BaselineConfig = BaselineConfig()):
        super().__init__()
        self.config = config
        try:  # EfficientNet family: the 1x1 head conv, as timm's own classifier uses
            self.backbone = create_backbone(config.backbone, config.pretrained, (4,), with_head=True)
        except ValueError:
            self.backbone = create_backbone(config.backbone, config.pretrained, (4,))
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.backbone.info.channels[-1], 1)
        self.register_buffer("mean", torch.tensor(self.backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.std).view(1, 3, 1, 1), persistent=False)

    def fake_logit(self, images: Tensor) -> Tensor:
        """``(B,)`` logits of P(fake) for images ``(B, 3, H, W)`` in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BinaryClassifier expects images (B, 3, H, W), got {tuple(images.shape)}")
        top = self.backbone((images - self.mean) / self.std)[-1]  # (B, C, H/32, W/32)
        return self.fc(self.dropout(top.mean((-2, -1)))).squeeze(1)  # (B,)

    forward = fake_logit

    @torch.no_grad()
    def predict_proba(self, images: Tensor) -> Tensor:
        return torch.sigmoid(self.fake_logit(images))

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """BCE of the logit against ``batch["label"]`` (1 = fake)."""
        bce = F.binary_cross_entropy_with_logits(self.fake_logit(batch["image"]), batch["label"].float())
        return bce, {"cls": bce.detach()}

    def set_epoch(self, epoch: int) -> None:
        """No per-epoch state."""
