"""Backbones: stage shapes, the EfficientNet head, and offline ImageNet weights."""

import pytest
import timm
import torch

from dfattn.models.backbone import _positional_map, create_backbone, imagenet_state_dict


@pytest.mark.parametrize(
    "name, channels",
    [("efficientnet_lite0", (24, 40, 112, 320)), ("resnet18", (64, 128, 256, 512))],
)
def test_stage_shapes(name, channels):
    net = create_backbone(name, out_indices=(1, 2, 3, 4))
    feats = net(torch.randn(2, 3, 96, 64))
    assert net.info.channels == channels and net.info.strides == (4, 8, 16, 32)
    for f, c, s in zip(feats, channels, net.info.strides):
        assert f.shape == (2, c, 96 // s, 64 // s)


def test_efficientnet_head_is_appended():
    net = create_backbone("efficientnet_lite0", out_indices=(2, 3, 4), with_head=True)
    feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [40, 112, 320, 1280]
    assert feats[-1].shape[-2:] == feats[-2].shape[-2:]


def test_head_needs_an_efficientnet():
    with pytest.raises(ValueError, match="no conv_head"):
        create_backbone("resnet18", with_head=True)


def test_positional_map_checks_shapes():
    src = {"a.weight": torch.zeros(2, 3), "a.num_batches_tracked": torch.tensor(0)}
    assert _positional_map(src, {"b.weight": torch.ones(2, 3)}, "x")["b.weight"].sum() == 0
    with pytest.raises(RuntimeError, match="does not fit"):
        _positional_map(src, {"b.weight": torch.ones(3, 2)}, "x")


def test_offline_lite0_weights_reach_body_and_head():
    """The offline Lite0 file loads into timm with every key matched, holds trained statistics (not
    BN's initial ones), and the backbone's body and head carry exactly those tensors."""
    weights = imagenet_state_dict("efficientnet_lite0")
    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(weights)
    assert not torch.allclose(weights["bn1.running_var"], torch.ones_like(weights["bn1.running_var"]))
    net = create_backbone("efficientnet_lite0", pretrained=True, out_indices=(4,), with_head=True)
    torch.testing.assert_close(net.head[0].weight, weights["conv_head.weight"])
    torch.testing.assert_close(net.body.conv_stem.weight, weights["conv_stem.weight"])
