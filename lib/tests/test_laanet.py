"""LAA-Net: shapes, gradients, the E-FPN gate, the losses on hand-computed values, variants,
the inference path, and a model that overfits a handful of pseudo-fakes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfattn.models.laanet import (
    HEATMAP_PRIOR,
    EFPN,
    LAANet,
    LAANetConfig,
    LAANetLossWeights,
    LAANetOutput,
    consistency_map,
    focal_loss,
    gated_fusion,
    laanet_loss,
    plain_fusion,
)
from dfattn.models.flops import count_flops, count_parameters

torch.set_num_threads(1)


def fake_batch(n: int, size: int) -> dict:
    """Targets shaped like the data pipeline's: a ring heatmap/consistency for fakes, zeros for reals."""
    h = size // 4
    heat = torch.zeros(n, 1, h, h)
    heat[1::2, 0, h // 4, h // 4] = 1.0
    heat[1::2, 0, h // 4 + 1, h // 4] = 0.6
    cons = heat.clone()
    return {"label": torch.arange(n) % 2, "heatmap": heat, "consistency": cons}


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18", "mobilenetv2_100"])
def test_output_shapes(backbone):
    model = LAANet(LAANetConfig(backbone=backbone)).eval()
    sizes = [(64, 64), (96, 128)] + ([(128, 128)] if backbone == "efficientnet_lite0" else [])
    for size in sizes:
        out = model(torch.rand(2, 3, *size))
        h, w = size[0] // 4, size[1] // 4
        assert out.cls.shape == (2,)
        assert out.heatmap.shape == (2, 1, h, w)
        assert out.embedding.shape == (2, 256, h, w)


def test_bad_input_raises_a_clear_error():
    model = LAANet(LAANetConfig(backbone="efficientnet_lite0")).eval()
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.rand(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64))


def test_b4_matches_the_reference_size():
    """B4 with the code's shared Inception conv: 27,128,786 parameters and 16.6 GFLOPs at 384 px
    (13.9 with the classification head only) as measured on the official model by the same counter;
    the paper's four separate 1x1 convs add 3 x (112*28 + 2*28) parameters."""
    with torch.device("meta"):  # shapes only: instant
        shared = LAANet(LAANetConfig(shared_inception_conv=True)).eval()
        paper = LAANet()
    assert count_parameters(shared) == 27_128_786
    assert count_parameters(paper) == 27_128_786 + 3 * (112 * 28 + 2 * 28)
    assert shared.backbone.info.channels == (56, 160, 448, 1792)
    assert shared.decoder.out_channels == 112
    x = torch.empty(1, 3, 384, 384, device="meta")
    total, parts = count_flops(shared, x)
    cls_only, cls_parts = count_flops(shared, x, lambda m, x: m(x, heads=("cls",)))
    assert round(total / 1e9, 1) == 16.6 and round(cls_only / 1e9, 1) == 13.9
    assert round(parts["backbone"] / 1e9, 1) == 8.8  # the official model's backbone share
    assert cls_parts["heatmap_head"] == cls_parts["consistency_head"] == 0
    _, fine = count_flops(shared, x, depth=3)  # the breakdown covers the whole model
    assert sum(fine.values()) == total and "decoder.stage4.0" in fine


def test_every_parameter_receives_a_gradient():
    model = LAANet(LAANetConfig(backbone="efficientnet_lite0"))
    batch = fake_batch(4, 64)
    loss, parts = laanet_loss(model(torch.rand(4, 3, 64, 64)), batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing[:5]
    assert set(parts) == {"cls", "heatmap", "consistency"}


def test_gate_formula_on_a_hand_made_example():
    y = torch.tensor([[[[0.0, 2.0]]]])  # (1, 1, 1, 2)
    x = torch.tensor([[[[4.0, 4.0]]]])
    fused = gated_fusion(y, x)
    expected_skip = torch.tensor([4 * 0.5, 4 * (1 - 1 / (1 + math.exp(-2)))])
    torch.testing.assert_close(fused[0, 0, 0], y[0, 0, 0])
    torch.testing.assert_close(fused[0, 1, 0], expected_skip)


def test_focal_loss_equals_hand_computed_values():
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)]).view(1, 1, 1, 3)  # p = .5, .75, .25
    target = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    pos = (1 - 0.5) ** 2 * math.log(0.5)
    neg = (1 - 0.5) ** 4 * 0.75**2 * math.log(0.25) + 1.0 * 0.25**2 * math.log(0.75)
    assert focal_loss(logits, target).item() == pytest.approx(-(pos + neg), rel=1e-5)
    assert focal_loss(logits, target, 0.72).item() == pytest.approx(-(0.72 * pos + neg), rel=1e-5)
    # no positive at all: normalised by 1, only the negative term
    zero = torch.zeros(1, 1, 1, 3)
    assert focal_loss(logits, zero).item() == pytest.approx(
        -(0.25 * math.log(0.5) + 0.75**2 * math.log(0.25) + 0.25**2 * math.log(0.75)), rel=1e-5)


def test_consistency_map_against_a_hand_computation():
    emb = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 1.0, 1.0]]).view(1, 2, 2, 2)  # D = 2
    target = torch.tensor([0.0, 0.2, 1.0, 0.3]).view(1, 1, 2, 2)  # anchor: pixel 2
    anchor = torch.tensor([2.0, 1.0])
    flat = emb.view(2, 4)
    expected = torch.sigmoid(anchor @ flat / math.sqrt(2)).view(1, 1, 2, 2)
    torch.testing.assert_close(consistency_map(emb, target), expected)
    # a real image (all-zero target) anchors at pixel (0, 0)
    real = consistency_map(emb, torch.zeros(1, 1, 2, 2))
    torch.testing.assert_close(real.flatten()[0], torch.sigmoid(torch.tensor(1.0 / math.sqrt(2))))


def test_fpn_variants_switch_the_architecture():
    c = dict(c_top=32, c32=16, c16=8, c8=4)
    maps = [torch.randn(1, 32, 2, 2), torch.randn(1, 16, 2, 2), torch.randn(1, 8, 4, 4), torch.randn(1, 4, 8, 8)]
    outs, gates = {}, {}
    for kind in ("efpn", "fpn", "none"):
        torch.manual_seed(0)
        dec = EFPN(**c, kind=kind).eval()
        g: list = []
        outs[kind] = dec(*maps, gates=g)
        gates[kind] = g
    assert outs["efpn"].shape == (1, 8, 16, 16) and outs["none"].shape == (1, 4, 16, 16)
    assert len(gates["none"]) == 0 and len(gates["efpn"]) == 3
    assert all((0 < g).all() and (g < 1).all() for g in gates["efpn"])  # 1 - sigmoid in (0, 1)
    assert all((g == 1).all() for g in gates["fpn"])  # plain FPN passes the skip unchanged
    assert not torch.allclose(outs["efpn"], outs["fpn"])
    # "none" ignores the lower-level maps entirely
    dec = EFPN(**c, kind="none").eval()
    a = dec(maps[0], *[torch.randn_like(m) for m in maps[1:]])
    torch.testing.assert_close(a, dec(*maps))


def test_the_config_selects_the_fusion():
    lite = dict(backbone="efficientnet_lite0")
    efpn, fpn, none = (LAANet(LAANetConfig(fpn=k, **lite)) for k in ("efpn", "fpn", "none"))
    assert efpn.decoder.fuse is gated_fusion and fpn.decoder.fuse is plain_fusion
    assert none.decoder.fuse is None
    c8 = efpn.backbone.info.channels[0]
    assert efpn.decoder.out_channels == fpn.decoder.out_channels == 2 * c8
    assert none.decoder.out_channels == c8
    assert count_parameters(efpn) == count_parameters(fpn)  # the gate has no parameters
    with pytest.raises(ValueError, match="fpn must be"):
        LAANetConfig(fpn="bifpn")


def test_loss_weights_combine_the_parts():
    torch.manual_seed(0)
    n, h = 4, 16
    out = LAANetOutput(torch.randn(n), torch.randn(n, 1, h, h), torch.randn(n, 8, h, h))
    batch = fake_batch(n, 4 * h)
    w = LAANetLossWeights(heatmap=10.0, consistency=3.0, cls=2.0)
    total, parts = laanet_loss(out, batch, w)
    assert total.item() == pytest.approx(10 * parts["heatmap"] + 3 * parts["consistency"] + 2 * parts["cls"])
    expected_c = F.binary_cross_entropy(consistency_map(out.embedding, batch["consistency"]), batch["consistency"])
    assert parts["consistency"].item() == pytest.approx(expected_c.item(), rel=1e-5)
    # a zero weight, or a head that did not run, drops the part
    _, parts = laanet_loss(out._replace(embedding=None), batch, LAANetLossWeights(heatmap=0.0))
    assert set(parts) == {"cls"}


def test_heatmap_head_starts_at_the_centernet_prior():
    model = LAANet(LAANetConfig(backbone="efficientnet_lite0"))
    assert model.heatmap_head[-1].bias.item() == pytest.approx(HEATMAP_PRIOR)


def test_inference_path_runs_only_the_classifier():
    model = LAANet(LAANetConfig(backbone="efficientnet_lite0")).eval()
    called = set()
    for name in ("cls_head", "heatmap_head", "consistency_head"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: called.add(name))
    p = model.predict_proba(torch.rand(3, 3, 64, 64))
    assert called == {"cls_head"}
    assert p.shape == (3,) and ((0 < p) & (p < 1)).all()
    full, _ = count_flops(model, torch.rand(1, 3, 64, 64))
    cls_only, _ = count_flops(model, torch.rand(1, 3, 64, 64), lambda m, x: m(x, heads=("cls",)))
    assert cls_only < full
    with pytest.raises(ValueError, match="unknown heads"):
        model(torch.rand(1, 3, 64, 64), heads=("mask",))


def test_model_overfits_a_handful_of_pseudo_fakes():
    from dfattn.data.datasets import PseudoFakePairs, collate_pairs
    from dfattn.data.synthetic import SyntheticFaces

    torch.manual_seed(0)
    pairs = PseudoFakePairs(SyntheticFaces(4, 128, seed=1), 64, train=False)
    batch = collate_pairs([pairs[i] for i in range(4)])  # 4 real + 4 self-blended
    model = LAANet(LAANetConfig(backbone="efficientnet_lite0", dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights = LAANetLossWeights(heatmap=1.0, consistency=1.0)
    losses, parts = [], []
    for _ in range(40):
        loss, part = laanet_loss(model(batch["image"]), batch, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        parts.append({k: v.item() for k, v in part.items()})
    assert np.mean(losses[-3:]) < 0.1 * np.mean(losses[:3]), losses[::5]
    for head, factor in (("cls", 0.1), ("heatmap", 0.1), ("consistency", 0.3)):  # every head learns
        assert parts[-1][head] < factor * parts[0][head], (head, parts[0], parts[-1])
    model.eval()
    p = model.predict_proba(batch["image"])
    assert (p[batch["label"] == 1].min() > p[batch["label"] == 0].max()), p
