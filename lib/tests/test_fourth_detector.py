"""Adding a detector is one file: a fourth detector, defined and registered here and nowhere else,
goes through dfattn-train, dfattn-evaluate, dfattn-detect (with its overlay) and explain's own-map
path unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfattn.checkpoint import load_detector, read_checkpoint
from dfattn.cli import detect as detect_cli
from dfattn.cli import evaluate as evaluate_cli
from dfattn.cli import train as train_cli
from dfattn.data.synthetic import SyntheticFaces
from dfattn.explain import attribution_maps
from dfattn.models.base import Detector, register


@dataclass(frozen=True)
class TinyConfig:
    width: int = 8  # channels of both convolutions


class TinyAttention(Detector):
    """Two convolutions, a one-channel sigmoid attention map, attention-weighted pooling, a logit."""

    def __init__(self, config=None):
        config = config or TinyConfig()
        super().__init__(config)
        self.features = nn.Sequential(nn.Conv2d(3, config.width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(config.width, config.width, 3, stride=2, padding=1))
        self.attention = nn.Conv2d(config.width, 1, 1)
        self.fc = nn.Linear(config.width, 1)

    def _maps(self, images: Tensor) -> tuple[Tensor, Tensor]:
        f = F.relu(self.features(images))  # (B, C, H/4, W/4)
        return f, torch.sigmoid(self.attention(f))  # (B, 1, H/4, W/4)

    def fake_logit(self, images: Tensor) -> Tensor:
        f, a = self._maps(images)
        pooled = (f * a).sum((-2, -1)) / a.sum((-2, -1)).clamp_min(1e-6)  # (B, C)
        return self.fc(pooled).squeeze(1)

    def attention_map(self, images: Tensor) -> Tensor:
        return self._maps(images)[1].squeeze(1)  # (B, H/4, W/4)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        bce = F.binary_cross_entropy_with_logits(self.fake_logit(batch["image"]), batch["label"].float())
        return bce, {"cls": bce.detach()}


TinyAttention.config_class = TinyConfig
register("tiny_attention")(TinyAttention)  # the decorator, applied by hand


SMALL = ["--profile", "smoke", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--batch-size", "8",
         "--num-workers", "0", "--no-progress", "--no-val-families", "--face-size", "64"]


def test_a_fourth_detector_runs_through_every_tool(tmp_path, capsys):
    run = tmp_path / "tiny"
    assert train_cli.main(["--model", "tiny_attention", "--epochs", "2", "--out", str(run),
                           "--model-set", "width=6", *SMALL]) == 0
    _, header = read_checkpoint(run / "best.safetensors")
    assert header["detector"] == {"name": "tiny_attention", "config": {"width": 6}}
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    model, _ = load_detector(run / "best.safetensors")
    assert isinstance(model, TinyAttention) and model.fc.in_features == 6

    out = tmp_path / "results"
    assert evaluate_cli.main([str(run / "best.safetensors"), "--out", str(out)]) == 0
    cross = pd.read_csv(out / "cross.csv", index_col=0)
    label = "tiny_attention (tiny)"  # the header's detector, and the run folder
    assert list(cross.index) == [label] and cross.loc[label].between(0, 1).all()

    face = SyntheticFaces(1, 160, seed=5, first_identity=3_000_000)[0].image
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    det = tmp_path / "det"
    assert detect_cli.main([str(run / "best.safetensors"), str(tmp_path / "face.png"), "--flip-tta",
                            "--out", str(det)]) == 0
    table = pd.read_csv(det / "detections.csv")
    assert len(table) == 1 and 0 <= table["prob"].iloc[0] <= 1
    overlay = cv2.imread(str(det / "face_overlay.png"))  # the whole picture, the map in the face's crop
    assert overlay is not None and overlay.shape[:2] == face.shape[:2]

    x = torch.rand(2, 3, 64, 64)
    maps = attribution_maps(model, x, "own")
    assert maps.shape == (2, 64, 64) and (maps >= 0).all() and (maps <= 1).all()
    with torch.no_grad():  # the own map is the model's attention, upsampled
        small = model.attention_map(x)
    np.testing.assert_allclose(maps[:, ::4, ::4].mean().item(), small.mean().item(), atol=0.05)


def test_the_default_trainable_parts_follow_the_frozen_backbone():
    class WithBackbone(TinyAttention):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 3, 1)

    model = WithBackbone()
    model.frozen_backbone_epochs = 1
    assert "backbone" not in model.trainable(0) and "backbone" in model.trainable(1)
    assert set(model.trainable(1)) == {name for name, _ in model.named_children()}
