"""dfattn-import: the released LAA-Net, SBI and MAT checkpoints become dfattn checkpoints.

The release files themselves cannot be downloaded here. What the tests have instead is each
release's layout (``data/official_manifests/``: every key with its shape and dtype, in the order
the official code writes them, and the container entry that holds them). From it they build a
random state dict in the official container, save it with ``torch.save`` and import it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
from timm.layers import Conv2dSame
import torch
import torch.nn.functional as F

from dfattn.checkpoint import load_detector, save_checkpoint
from dfattn.cli import detect as detect_cli
from dfattn.cli import import_weights
from dfattn.data.synthetic import SyntheticFaces
from dfattn.explain import attribution_maps
from dfattn.models.backbone import Backbone, StaticPadConv2d, as_static_padding
from dfattn.models.official import (LAANET_PADDING, MAT_PADDING, _skeleton_layout, check_layout,
                                    convert, lukemelas_to_timm, official_config, release_layout,
                                    unwrap)
from dfattn.models.base import create_detector

MANIFESTS = Path(__file__).parent / "data" / "official_manifests"
FILES = {"laanet": "laanet_b4_sbi", "sbi": "sbi_b4", "mat": "mat_b4"}
INPUT_SIZE = {"laanet": 384, "sbi": 380, "mat": 380}


def manifest(variant: str) -> dict:
    return json.loads((MANIFESTS / f"{FILES[variant]}.json").read_text())


def random_state(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the release's layout: every key, shape and dtype of the manifest; random
    values scaled so that 32 MBConv blocks stay finite (weights ~ N(0, 1/fan_in), BN near the
    identity with positive running variances)."""
    g = torch.Generator().manual_seed(seed)
    keys = manifest(variant)["keys"]
    names = {k for k, _, _ in keys}
    state = {}
    for key, shape, dtype in keys:
        dtype = getattr(torch, dtype)
        module = key.rsplit(".", 1)[0]
        is_bn = f"{module}.running_var" in names
        if not dtype.is_floating_point:
            value = torch.randint(0, 1000, shape, generator=g, dtype=dtype)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
        elif is_bn and key.endswith(".weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(np.prod(shape[1:]))
        else:  # biases, running means, the RIL's centres and rate
            value = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        state[key] = value.to(dtype)
    if variant == "laanet":  # the official code registers one Inception module under two names
        for key in [k for k in state if k.startswith("inception_block.")]:
            state[key] = state["deconv_4.0." + key[len("inception_block."):]].clone()
    if variant == "mat":  # a fixed buffer: a 24 x 24 grid of ones with a 2-cell border of zeros
        state["attentions.mask"] = torch.zeros(1, 1, 24, 24)
        state["attentions.mask"][..., 2:-2, 2:-2] = 1.0
    return state


def container(variant: str, state: dict) -> dict:
    """The released file's top level, as each official training script saves it."""
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}
    if variant == "laanet":
        return {"epoch": 12, "state_dict": state, "optimizer": optimizer}
    if variant == "sbi":
        return {"model": state, "optimizer": optimizer, "epoch": 99}
    return {"logs": {"epoch": 29, "acc": 0.97}, "state_dict": state, "optimizer_state": optimizer,
            "scheduler_state": {"step_size": 5, "gamma": 0.5}}


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return {v: random_state(v) for v in FILES}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, states) -> dict[str, tuple[Path, Path]]:
    """``variant -> (released file, dfattn checkpoint)``, each release imported once by the tool."""
    folder = tmp_path_factory.mktemp("releases")
    out = {}
    for variant, state in states.items():
        src, dst = folder / f"{variant}_official.pth", folder / f"{variant}.safetensors"
        torch.save(container(variant, state), src)
        assert import_weights.main([variant, str(src), "--out", str(dst)]) == 0
        out[variant] = (src, dst)
    return out


@pytest.fixture(scope="module")
def loaded(imported) -> dict[str, tuple]:
    """``variant -> (detector, header)`` of each imported checkpoint, through ``load_detector``."""
    return {variant: load_detector(dst) for variant, (_, dst) in imported.items()}


def _expected_target(variant: str, key: str, value: torch.Tensor) -> torch.Tensor:
    """The release tensor as the converted model holds it (float32; SBI's two-class layer as one
    logit: row 1 minus row 0)."""
    if variant == "sbi" and key.startswith("net._fc."):
        value = (value[1].double() - value[0].double()).unsqueeze(0)
    return value.float() if value.is_floating_point() else value


@pytest.mark.parametrize("variant", list(FILES))
def test_every_key_is_used_checked_and_the_checkpoint_loads(variant, imported, loaded, states):
    src, _ = imported[variant]
    model, header = loaded[variant]
    info = header["imported"]
    assert info["release"] == variant and info["source"] == src.name
    assert info["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert info["input_size"] == header["train_config"]["image_size"] == INPUT_SIZE[variant]
    assert info["preprocessing"]["size"] == INPUT_SIZE[variant] and info["dtype"] == "float32"
    assert info["source_dtype"] == ("float64" if variant == "laanet" else "float32")

    # every key of the manifest is loaded, checked against another, or ignored for a stated reason
    layout = release_layout(variant, model)
    accounted = set(layout.entries) | set(layout.duplicates) | set(layout.constants) | set(layout.ignored)
    assert accounted == {k for k, _, _ in manifest(variant)["keys"]}
    assert set(layout.ignored) == ({"net._fc.weight", "net._fc.bias", "auxiliary_loss.inner_margin"}
                                   if variant == "mat" else set())
    ours, release = model.state_dict(), states[variant]
    filled = set()
    for key, entry in layout.entries.items():
        for target in entry.targets:
            assert torch.equal(ours[target], _expected_target(variant, key, release[key])), (key, target)
            filled.add(target)
    assert filled | set(layout.own) == set(ours)  # and every entry of ours comes from the release
    assert all(t.dtype in (torch.float32, torch.int64) for t in ours.values())
    # the official variant is rebuilt from the header alone, options included
    assert model.config == create_detector(header["detector"]["name"], **header["detector"]["config"]).config


def test_the_official_variants(loaded):
    laanet, _ = loaded["laanet"]
    assert laanet.config.backbone == "tf_efficientnet_b4" and laanet.config.shared_inception_conv
    assert laanet.config.normalization == "half" and laanet.config.backbone_padding == LAANET_PADDING
    reduce = laanet.decoder.stage4[0].reduce  # one pw_block for the four Inception branches
    assert all(r is reduce[0] for r in reduce)
    mat, _ = loaded["mat"]
    c = mat.config
    assert (c.texture_stage, c.attention_stage, c.num_attentions, c.hidden_dims) == (1, 3, 4, 256)
    assert (c.attention_head, c.texture_block, c.classifier, c.output) == ("official",) * 3 + ("softmax",)
    assert c.texture_bias and c.pretrain_epochs == 0 and c.backbone_padding == MAT_PADDING
    assert mat.channels == {"texture": 32, "attention": 160, "global": 1792, "textural": 32}
    sbi, _ = loaded["sbi"]
    assert sbi.config.normalization == "none" and sbi.fc.out_features == 1
    assert torch.equal(sbi.backbone.mean, torch.zeros(1, 3, 1, 1))  # x in [0, 1] as it is
    assert torch.equal(sbi.backbone.std, torch.ones(1, 3, 1, 1))


def _faults(state: dict) -> dict[str, tuple[dict, str]]:
    """A missing, an unexpected and a misshapen key, each with the name the error must give."""
    keys = list(state)
    missing = dict(state)
    del missing[keys[40]]
    extra = {**state, "decoder_extra.weight": torch.zeros(3)}
    misshapen = dict(state)
    misshapen[keys[7]] = torch.zeros(5)
    return {"missing": (missing, keys[40]), "unexpected": (extra, "decoder_extra.weight"),
            "of the wrong shape": (misshapen, keys[7])}


@pytest.mark.parametrize("variant", list(FILES))
def test_a_missing_extra_or_misshapen_key_is_an_error_naming_it(variant, states):
    for what, (state, key) in _faults(states[variant]).items():
        with pytest.raises(ValueError) as err:
            convert(variant, container(variant, state), source="release.pth")
        message = str(err.value)
        assert "release.pth" in message and key in message and f"1 {what}" in message, message


def test_ties_and_constants_are_checked(states):
    state = dict(states["laanet"])
    state["inception_block.pw_block.0.weight"] = state["inception_block.pw_block.0.weight"] + 1
    with pytest.raises(ValueError, match="inception_block.pw_block.0.weight .differs from deconv_4.0"):
        convert("laanet", {"state_dict": state}, source="laa.pth")
    state = {**states["mat"], "attentions.mask": torch.ones(1, 1, 24, 24)}
    with pytest.raises(ValueError, match="attentions.mask"):
        convert("mat", {"state_dict": state}, source="mat.pth")
    with pytest.raises(ValueError, match="its keys are those of the mat release"):  # the wrong one named
        convert("sbi", {"model": states["mat"]}, source="mat.pth")


def test_containers_bare_state_dicts_and_module_prefixes(states):
    state = states["sbi"]
    for obj in ({"model": state, "optimizer": {}}, state, {f"module.{k}": v for k, v in state.items()},
                {"model": {f"module.{k}": v for k, v in state.items()}}):
        unwrapped, _ = unwrap("sbi", obj)
        assert list(unwrapped) == list(state)
    _, aside = unwrap("mat", container("mat", states["mat"]))
    assert aside == ["logs", "optimizer_state", "scheduler_state"]
    check_layout("sbi", unwrap("sbi", state)[0], _skeleton_layout("sbi"), "bare.pth")  # no error
    with pytest.raises(ValueError, match="no 'model' entry"):
        unwrap("sbi", {"state_dict": {"a": 1}}, "x.pth")


def test_laanet_float64_is_float32_by_default_and_float64_on_request(tmp_path, states):
    """(float32 by default: the imported checkpoints of the other tests hold float32 only.)"""
    source = {"state_dict": states["laanet"]}
    double, report = convert("laanet", source, float64=True)
    assert report.source_dtype == "float64"
    assert {p.dtype for p in double.parameters()} == {torch.float64} and report.dtype == "float64"
    head = double.cls_head[5].weight
    assert torch.equal(head, states["laanet"]["cls.5.weight"])  # bit for bit
    save_checkpoint(tmp_path / "laa64.safetensors", double, {})
    reloaded, _ = load_detector(tmp_path / "laa64.safetensors")  # rebuilt in float64 from the spec
    assert reloaded.config.precision == "float64" and reloaded.cls_head[5].weight.dtype == torch.float64
    assert torch.equal(reloaded.cls_head[5].weight, head)
    with torch.no_grad():  # float32 images in, computed in float64 (small input: not the point here)
        assert reloaded.fake_logit(torch.rand(1, 3, 64, 64)).dtype == torch.float64
    with pytest.raises(ValueError, match="float64"):  # the SBI and MAT releases are float32
        official_config("sbi", float64=True)
    half = {"state_dict": {k: v.float() if v.is_floating_point() else v for k, v in states["laanet"].items()}}
    with pytest.raises(ValueError, match="float32"):
        convert("laanet", half, float64=True, source="laa32.pth")


def test_sbi_fake_probability_is_softmax_column_1_of_the_plain_timm_model(loaded, states):
    """Known answer: timm's ``tf_efficientnet_b4`` with two classes, loaded *by position* with the
    release tensors (the official order is timm's order), gives softmax[:, 1] = our P(fake)."""
    release = states["sbi"]
    reference = timm.create_model("tf_efficientnet_b4", pretrained=False, num_classes=2).eval()
    template = reference.state_dict()
    assert len(template) == len(release)
    by_position = {}
    for (theirs, value), ours in zip(release.items(), template):
        assert lukemelas_to_timm(theirs[len("net."):]) == ours  # the rule agrees with the order
        by_position[ours] = value
    reference.load_state_dict(by_position, strict=True)
    model, _ = loaded["sbi"]
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = reference(x)  # (2, 2): x in [0, 1], no normalisation
        expected = logits.softmax(1)[:, 1]
        ours = model.fake_logit(x)
    assert torch.allclose(ours, logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(torch.sigmoid(ours), expected, atol=1e-5)


def test_padding_overrides_give_the_released_feature_map_sizes(loaded):
    # MAT at 380 px: 95 / 47 / 23 / 11 at strides 4 / 8 / 16 / 32 (TF "same" padding: 48 / 24 / 12)
    mat, _ = loaded["mat"]
    body = mat.backbone.body
    assert [body.blocks[s][0].conv_dw.pad for s in (2, 3, 5)] == [(1, 2, 1, 2), (0, 1, 0, 1), (1, 2, 1, 2)]
    sizes = {}
    hooks = [body.blocks[s].register_forward_hook(lambda m, i, o, s=s: sizes.__setitem__(s, o.shape[-1]))
             for s in (1, 2, 4, 6)]  # the last block of each stride: 4, 8, 16, 32
    with torch.no_grad():
        f_t, f_a, f_g = mat.taps(torch.rand(1, 3, 380, 380))
    for hook in hooks:
        hook.remove()
    assert [sizes[s] for s in (1, 2, 4, 6)] == [95, 47, 23, 11]
    assert (f_t.shape[-1], f_a.shape[-1], f_g.shape[-1]) == (95, 23, 11)  # b2, b5, final
    # LAA-Net at 384 px: blocks.2.0.conv_dw (k5, s2, 96 px in) pads (2, 2, 2, 2), not "same" (1, 2, 1, 2)
    laanet, _ = loaded["laanet"]
    conv = laanet.backbone.body.blocks[2][0].conv_dw
    assert isinstance(conv, StaticPadConv2d) and conv.pad == (2, 2, 2, 2)
    same = Conv2dSame(192, 192, 5, stride=2, groups=192, bias=False)  # timm's tf_ padding
    x = torch.randn(1, 192, 96, 96)
    with torch.no_grad():
        same.weight.copy_(conv.weight)
        ours, tf_same = conv(x), same(x)
        by_hand = F.conv2d(F.pad(x, (2, 2, 2, 2)), conv.weight, None, 2, 0, 1, 192)
        tf_by_hand = F.conv2d(F.pad(x, (1, 2, 1, 2)), conv.weight, None, 2, 0, 1, 192)
    assert ours.shape[-2:] == tf_same.shape[-2:] == (48, 48)
    assert torch.equal(ours, by_hand) and torch.allclose(tf_same, tf_by_hand, atol=1e-6)
    assert not torch.allclose(ours, tf_same, atol=1e-3)
    assert laanet.backbone.body.blocks[1][0].conv_dw.__class__ is Conv2dSame  # the others: timm's


def test_the_converted_laanet_runs_through_dfattn_detect(imported, tmp_path):
    face = SyntheticFaces(1, 200, seed=5, first_identity=3_000_000)[0].image
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    out = tmp_path / "det"
    assert detect_cli.main([str(imported["laanet"][1]), str(tmp_path / "face.png"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "detections.csv")
    assert len(table) == 1 and np.isfinite(table["logit"]).all() and table["prob"].between(0, 1).all()


@pytest.mark.parametrize("variant", ["laanet", "mat"])
def test_the_converted_models_own_maps_go_through_explain(variant, loaded):
    model, _ = loaded[variant]
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))  # small: not the point
    heat = attribution_maps(model, x, "own")  # LAA-Net's heatmap head, MAT's attention maps
    assert heat.shape[0] == 1 and torch.isfinite(heat).all() and (heat >= 0).all()


def test_the_tool_refuses_unreadable_files_and_existing_outputs(tmp_path, capsys):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint at all")
    assert import_weights.main(["sbi", str(bad), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "broken.pth" in err and "weights_only=True" in err
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"net": Path("a")}}, pickled)  # an object that only arbitrary pickle restores
    assert import_weights.main(["sbi", str(pickled), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "pickled.pth" in capsys.readouterr().err
    existing = tmp_path / "model.safetensors"
    existing.write_bytes(b"keep me")
    assert import_weights.main(["sbi", str(bad), "--out", str(existing)]) == 1
    assert "--force" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert import_weights.main(["sbi", str(bad), "--out", str(existing), "--force"]) == 1
    assert "broken.pth" in capsys.readouterr().err  # past the check, to the unreadable file
    assert import_weights.main(["sbi", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "y")]) == 1
    assert "absent.pth" in capsys.readouterr().err
    assert import_weights.main(["mat", str(bad), "--out", str(tmp_path / "z"), "--float64"]) == 1
    assert "float64" in capsys.readouterr().err


def test_static_padding_and_normalisation_options_are_checked():
    assert as_static_padding([["blocks.2.0.conv_dw", [2, 2, 2, 2]]]) == LAANET_PADDING  # JSON round trip
    for bad in ([("blocks.2.0.conv_dw", (1, 2))], [("a", (0, 0, 0, -1))], [("a", (0,) * 4), ("a", (1,) * 4)], 3):
        with pytest.raises(ValueError):
            as_static_padding(bad)
    with pytest.raises(ValueError, match="no module 'blocks.9.0.conv_dw'"):
        Backbone("efficientnet_lite0", static_padding=(("blocks.9.0.conv_dw", (1, 1, 1, 1)),))
    with pytest.raises(ValueError, match="not a convolution"):
        Backbone("efficientnet_lite0", static_padding=(("blocks.1.0.bn1", (1, 1, 1, 1)),))
    with pytest.raises(ValueError, match="normalization"):
        Backbone("efficientnet_lite0", normalization="imagenet")
    plain = Backbone("efficientnet_lite0", normalization="none")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(plain.normalize(x), x)
