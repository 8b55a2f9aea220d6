"""MAT: shapes, hand-computed RIL values, AGDA invariants, gradients, and a model that learns."""

import math

import pytest
import torch

from dfattn.models.agda import AGDAConfig, attention_guided_augmentation, blur_batch, soft_threshold
from dfattn.models.mat import (
    MAT,
    MATConfig,
    RegionalIndependenceLoss,
    TextureEnhancement,
    bilinear_attention_pooling,
    create_mat,
)

SMALL = "efficientnet_lite0"  # stages: 16, 24, 40, 112, 320 channels; head 1280


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# Shapes and configuration
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, c_f", [("paper", 4 * 24), ("official", 24)])
def test_output_shapes(variant, c_f):
    torch.manual_seed(0)
    model = create_mat(variant, backbone=SMALL, num_attentions=3).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.logits.shape == (2, 2)
    assert out.attention.shape == (2, 3, 64 // 16, 96 // 16)  # SL_a = level 3, stride 16
    assert out.textural.shape == (2, 3, c_f)
    assert out.semantic.shape == (2, 3, 24)  # SL_t = level 1: 24 channels
    assert out.global_feature.shape == (2, 1280)
    assert (out.attention >= 0).all()
    # P and V are l2-normalised per head ("normalised average pooling").
    torch.testing.assert_close(out.textural.norm(dim=-1), torch.ones(2, 3))


def test_stage_selection_and_single_logit():
    model = MAT(MATConfig(backbone=SMALL, texture_stage=2, attention_stage=4, output="logit")).eval()
    assert model.channels == {"texture": 40, "attention": 320, "global": 1280, "textural": 160}
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        p = model.predict_proba(x)
    assert out.logits.shape == (3, 1) and out.attention.shape == (3, 4, 2, 2)
    torch.testing.assert_close(p, torch.sigmoid(out.logits[:, 0]))


def test_predict_proba_is_softmax_of_fake():
    model = create_mat(backbone=SMALL).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_proba(x), torch.softmax(model(x).logits, -1)[:, 1])


def test_bad_config_and_input_raise():
    with pytest.raises(ValueError, match="texture_stage"):
        MATConfig(texture_stage=3, attention_stage=1)
    with pytest.raises(ValueError, match="attention_head"):
        MATConfig(attention_head="mine")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        create_mat(backbone=SMALL)(torch.rand(3, 64, 64))


# ------------------------------------------------------------------------------------------------
# Texture enhancement and bilinear attention pooling
# ------------------------------------------------------------------------------------------------


def test_texture_residual_has_zero_local_mean():
    """T = f - up(avgpool(f)): on an 8x8 map pooled to 2x2 every 4x4 window of T averages to 0."""
    block = TextureEnhancement(5, 2, "paper")
    f = torch.randn(1, 5, 8, 8)
    t, d = block.residual(f, (2, 2))
    torch.testing.assert_close(d, f.view(1, 5, 2, 4, 2, 4).mean((3, 5)))
    torch.testing.assert_close(t.view(1, 5, 2, 4, 2, 4).mean((3, 5)), torch.zeros(1, 5, 2, 2))


def test_official_texture_heads_are_independent():
    """The grouped (per-head) dense block: changing head 0's attention changes only head 0's F."""
    torch.manual_seed(0)
    block = TextureEnhancement(4, 3, "official").eval()
    f, a = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 2, 2)
    a2 = a.clone()
    a2[:, 0] += 1.0
    with torch.no_grad():
        out, _ = block(f, a)
        out2, _ = block(f, a2)
    assert out.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(out[:, 1:], out2[:, 1:])
    assert not torch.allclose(out[:, 0], out2[:, 0])


def test_bilinear_attention_pooling_by_hand():
    f = torch.arange(12.0).view(1, 3, 2, 2)  # channel c at (h, w) = 4 c + 2 h + w
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, 0] = 2.0  # map 0: only (0, 0)
    a[0, 1, 0, 0], a[0, 1, 0, 1] = 1.0, 3.0  # map 1: (0, 0) and (0, 1), weights 1 : 3
    p = bilinear_attention_pooling(f, a, "l2")
    v0 = torch.tensor([0.0, 4.0, 8.0])
    v1 = 1 * v0 + 3 * torch.tensor([1.0, 5.0, 9.0])
    torch.testing.assert_close(p[0], torch.stack([v0 / v0.norm(), v1 / v1.norm()]))
    mean = bilinear_attention_pooling(f, a, "mean")
    torch.testing.assert_close(mean[0, 1], v1 / 4)
    # per-head features (B, M, C, H, W): head k pools its own map
    per_head = torch.stack([f, 2 * f], 1)
    torch.testing.assert_close(bilinear_attention_pooling(per_head, a, "mean")[0, 1], 2 * v1 / 4)


# ------------------------------------------------------------------------------------------------
# Regional independence loss
# ------------------------------------------------------------------------------------------------

V = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]])  # (B=2, M=2, C=2)
LABELS = torch.tensor([0, 1])  # real, fake


def test_paper_centre_update_only_in_training():
    ril = RegionalIndependenceLoss(2, 2, "paper", alpha=0.5)
    ril.eval()
    new = ril.update_centers(V, LABELS)
    torch.testing.assert_close(new, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))  # 0 + 0.5 mean_i V^i
    assert ril.centers.abs().sum() == 0  # eval: state untouched
    ril.train()
    ril.update_centers(V, LABELS)
    ril.update_centers(V, LABELS)  # c = 0.5 + 0.5 (1 - 0.5) = 0.75 on (0, 0)
    torch.testing.assert_close(ril.centers, torch.tensor([[0.75, 0.0], [0.0, 0.0]]))


def test_official_centre_update_uses_real_samples():
    ril = RegionalIndependenceLoss(2, 2, "official", alpha=0.5).train()
    ril.update_centers(V, LABELS)  # only sample 0, divided by B = 2: 0.5 * V^0 / 2
    torch.testing.assert_close(ril.centers, torch.tensor([[0.25, 0.0], [0.0, 0.25]]))


def test_paper_ril_by_hand():
    ril = RegionalIndependenceLoss(2, 2, "paper", alpha=0.5, inner_margins=(0.05, 0.1), inter_margin=0.5)
    terms = ril.eval()(V, LABELS)  # c' = [[0.5, 0], [0, 0]]
    # squared distances: real (0.25, 1) - 0.05; fake (0.25, 1) - 0.1; mean over samples
    assert terms.intra.item() == pytest.approx(((0.20 + 0.95) + (0.15 + 0.90)) / 2)
    # ||c'_0 - c'_1||^2 = 0.25 < 0.5: 0.25 for each ordered pair
    assert terms.inter.item() == pytest.approx(2 * 0.25)
    assert ril.__class__(2, 2, "paper", alpha=0.5)(V, LABELS).inter.item() == 0  # m_out 0.2 < 0.25


def test_official_ril_signed_margins_by_hand():
    ril = RegionalIndependenceLoss(2, 2, "official", alpha=0.5, inner_margins=(0.2, -0.8), inter_margin=0.8)
    v = torch.stack([V[0], torch.tensor([[0.25, 0.0], [0.0, 0.5]])])  # the fake lies near c'
    terms = ril.eval()(v, LABELS)  # c' = [[0.25, 0], [0, 0.25]] (real sample only)
    real = math.sqrt(2 * 0.75**2) - 0.2  # pulled within 0.2
    fake = 0.8 - 0.25  # pushed at least 0.8 away: ||v^1 - c'||_F = 0.25
    assert terms.intra.item() == pytest.approx((real + fake) / 2)
    assert terms.inter.item() == pytest.approx((0.8 - math.sqrt(2 * 0.25**2)) / (2 * 0.5))


def test_ril_inter_term_has_a_gradient():
    """The centres are buffers, but the loss uses c' = c + alpha mean(V - c): the inter term pushes V."""
    v = V.clone().requires_grad_()
    RegionalIndependenceLoss(2, 2, "paper", alpha=0.5, inter_margin=0.5)(v, LABELS).inter.backward()
    assert v.grad.abs().sum() > 0


def test_epoch_api_decays_alpha_and_is_saved():
    model = create_mat(backbone=SMALL, pretrain_epochs=2)
    assert model.stage(1).name == "backbone" and model.stage(2).name == "mat"
    assert model.stage(4).epoch == 2
    model.set_epoch(5)  # 3 epochs into the MAT stage
    assert model.ril.alpha.item() == pytest.approx(0.05 * 0.9**3)
    model.ril.centers.fill_(0.5)
    fresh = create_mat(backbone=SMALL, pretrain_epochs=2)
    fresh.load_state_dict(model.state_dict())
    assert int(fresh.epoch) == 5 and fresh.stage().name == "mat"
    assert fresh.ril.alpha.item() == pytest.approx(0.05 * 0.9**3)
    torch.testing.assert_close(fresh.ril.centers, model.ril.centers)


# ------------------------------------------------------------------------------------------------
# AGDA
# ------------------------------------------------------------------------------------------------


def _block_attention(b: int = 3, m: int = 4) -> torch.Tensor:
    a = torch.zeros(b, m, 8, 8)
    a[:, :, 1:3, 1:3] = 1.0 + torch.rand(b, m, 2, 2)  # attention only on the top-left
    return a


@pytest.mark.parametrize("config", [AGDAConfig(), AGDAConfig.official()], ids=["paper", "official"])
def test_agda_changes_pixels_only_where_attention_is(config):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = attention_guided_augmentation(images, _block_attention(), config, torch.Generator().manual_seed(0))
    zero = (out.weight == 0).expand_as(images)
    assert zero.float().mean() > 0.5
    assert torch.equal(out.image[zero], images[zero])  # bit for bit where A* = 0
    high = (out.weight > 0.8).expand_as(images)
    assert high.any()
    assert (out.image[high] - images[high]).abs().mean() > 0.1  # blurred noise differs a lot
    assert out.weight.max() <= 1 and out.weight.min() >= 0 and out.image.min() >= 0
    assert out.head.shape == (3,) and ((0 <= out.head) & (out.head < 4)).all()


def test_agda_is_deterministic_under_a_generator():
    images, a = torch.rand(4, 3, 48, 48), torch.rand(4, 4, 6, 6)
    config = AGDAConfig.official()
    first = attention_guided_augmentation(images, a, config, torch.Generator().manual_seed(7))
    second = attention_guided_augmentation(images, a, config, torch.Generator().manual_seed(7))
    other = attention_guided_augmentation(images, a, config, torch.Generator().manual_seed(8))
    assert torch.equal(first.image, second.image) and torch.equal(first.head, second.head)
    assert not torch.equal(first.image, other.image)


def test_agda_mass_choice_prefers_heavy_maps():
    a = torch.zeros(200, 3, 4, 4)
    a[:, 2] = 1e4  # sqrt(1 + 1.6e5) = 400 against 1 and 1
    heads = attention_guided_augmentation(torch.rand(200, 3, 8, 8), a, AGDAConfig(choice="mass"),
                                          torch.Generator().manual_seed(0)).head
    assert (heads == 2).float().mean() > 0.97
    uniform = attention_guided_augmentation(torch.rand(200, 3, 8, 8), a, AGDAConfig(),
                                            torch.Generator().manual_seed(0)).head
    assert 0.2 < (uniform == 2).float().mean() < 0.5


def test_blur_batch_and_soft_threshold():
    flat = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(blur_batch(flat, 7.0, 43), flat)  # kernel larger than the image
    delta = torch.zeros(1, 1, 21, 21)
    delta[..., 10, 10] = 1.0
    blurred = blur_batch(delta, 1.5, 11)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(blurred, blurred.flip(-1).transpose(-1, -2))  # isotropic
    w = torch.tensor([0.0, 0.5, 1.0])
    out = soft_threshold(w, torch.tensor(0.5), torch.tensor(4.0))
    assert out[0] == 0 and out[2].item() == pytest.approx(1.0) and out[1].item() == pytest.approx(
        (0.5 - torch.sigmoid(torch.tensor(-2.0)).item()) / (1 - 2 * torch.sigmoid(torch.tensor(-2.0)).item()))


# ------------------------------------------------------------------------------------------------
# Training: gradients, stages, learning
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_every_trained_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    model = create_mat(variant, backbone=SMALL)
    model.set_epoch(model.config.pretrain_epochs)  # the MAT stage, AGDA on
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    losses, _ = model.train().training_step(x, y, torch.Generator().manual_seed(0))
    losses.total.backward()
    assert losses.agda > 0 and losses.ril > 0 and (losses.match > 0) == (variant == "official")
    parts = model.trainable(int(model.epoch))
    assert set(parts) == {"backbone", "attention", "texture", "classifier"}
    trained = [p for n in parts for p in getattr(model, n).parameters()]
    assert len(trained) == len([p for n, p in model.named_parameters() if not n.startswith("plain_head")])
    missing = [n for n, p in model.named_parameters() if p in set(trained) and
               (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


def test_backbone_stage_trains_only_the_plain_classifier():
    model = create_mat("official", backbone=SMALL, pretrain_epochs=1).train()
    losses, out = model.training_step(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))
    losses.total.backward()
    assert out is None and losses.ril == 0 and losses.agda == 0
    assert model.plain_head.weight.grad is not None and model.backbone.head[0].weight.grad is not None
    assert all(p.grad is None for p in model.attention.parameters())
    assert model.ril.centers.abs().sum() == 0  # no centre update before the MAT stage
    assert model.trainable(0) == ("backbone", "plain_head")
    model.frozen_backbone_epochs = 1  # the trainer's freeze applies in either stage
    assert model.trainable(0) == ("plain_head",)


def test_overfits_a_handful_of_pseudo_fakes():
    """Four synthetic faces and their self-blended fakes: CE + RIL falls by 90% in 40 steps."""
    from dfattn.data.datasets import PseudoFakePairs, collate_pairs
    from dfattn.data.synthetic import SyntheticFaces

    torch.manual_seed(0)
    pairs = PseudoFakePairs(SyntheticFaces(4, 128, seed=1), image_size=64, train=False)
    batch = collate_pairs([pairs[i] for i in range(len(pairs))])
    model = create_mat(backbone=SMALL, agda_weight=0.0).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        losses, _ = model.training_step(batch["image"], batch["label"])
        optimiser.zero_grad()
        losses.total.backward()
        optimiser.step()
        history.append(losses.as_dict())
    assert history[-1]["total"] < 0.1 * history[0]["total"]
    assert history[-1]["ce"] < 0.05 and history[-1]["ril"] < 0.2 * history[0]["ril"]
    # Batch statistics (train-mode BN): after 40 steps the running averages still lag behind.
    with torch.no_grad():
        p = model.predict_proba(batch["image"])
    assert ((p > 0.5).float() == batch["label"]).all()


def test_the_official_inter_scaling_divides_the_paper_inter_term_by_m_alpha():
    from dfattn.models.mat import RegionalIndependenceLoss

    g = torch.Generator().manual_seed(0)
    semantic, labels = 0.01 * torch.randn(6, 4, 5, generator=g), torch.tensor([0, 1] * 3)
    plain = RegionalIndependenceLoss(4, 5).train()(semantic, labels)
    scaled = RegionalIndependenceLoss(4, 5, inter_scale="official").train()(semantic, labels)
    assert plain.inter > 0
    torch.testing.assert_close(scaled.inter, plain.inter / (4 * 0.05))
    torch.testing.assert_close(scaled.intra, plain.intra)
    with pytest.raises(ValueError, match="inter_scale"):
        RegionalIndependenceLoss(4, 5, inter_scale="double")


def test_agda_blur_scales_with_the_input_when_given_a_reference_size():
    fixed = AGDAConfig()
    assert fixed.blur_at(128) == fixed.blur_at(380) == (7.0, fixed.kernel)  # the default: pixels
    scaled = AGDAConfig(reference_size=380)
    assert scaled.blur_at(380) == (7.0, fixed.kernel)
    sigma, kernel = scaled.blur_at(190)
    assert sigma == pytest.approx(3.5) and kernel == 2 * math.ceil(10.5) + 1
    official = AGDAConfig.official(reference_size=380)
    assert official.blur_at(380) == (7.0, 11) and official.blur_at(190)[1] % 2 == 1
    # the same smooth pattern at two sizes loses the same share of its detail when the blur scales
    from dfattn.models.agda import agda_degrade

    F = torch.nn.functional
    yy, xx = torch.meshgrid(torch.arange(380.0), torch.arange(380.0), indexing="ij")
    x = (0.5 + 0.5 * torch.sin(2 * math.pi * xx / 60) * torch.cos(2 * math.pi * yy / 80)).expand(1, 3, 380, 380)

    def mismatch(config):
        big = F.interpolate(agda_degrade(x.contiguous(), config), size=(190, 190), mode="area")
        return float((big - agda_degrade(F.interpolate(x, size=(190, 190), mode="area"), config)).abs().mean())

    assert mismatch(scaled) < 0.2 * mismatch(fixed)
    with pytest.raises(ValueError, match="reference_size"):
        AGDAConfig(reference_size=0)
