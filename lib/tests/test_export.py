"""ONNX export: each built-in detector's inference path, run by onnxruntime on CPU, gives PyTorch's
logits (at most 1e-4 apart) at batch sizes other than the export's; flip TTA matches
evaluate.fake_logit; dfattn-export keeps existing files and names a bad checkpoint."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from dfattn.checkpoint import load_detector, save_checkpoint
from dfattn.cli import export as export_cli
from dfattn.evaluate import fake_logit
from dfattn.export import TOLERANCE, check_images, export_onnx, onnx_logit, onnx_session
from dfattn.models.base import create_detector

SIZE = 64  # the input size of the other tests' small runs
# timm's own test EfficientNet: the blocks of B4 (squeeze-excitation, SiLU) and a conv_head in 90
# modules to Lite0's 273, so each export takes a third of the time. Larger backbones export the
# same way, and every export is checked against PyTorch before it is written.
BACKBONE = "test_efficientnet"


def _checkpoint(name: str, path) -> None:
    """A small detector (random weights) whose BatchNorm statistics were moved by two
    training-mode passes, so that eval mode is not an identity normalisation; saved with the
    header fields dfattn-train writes and load_for_use reads."""
    torch.manual_seed(0)
    model = create_detector(name, backbone=BACKBONE, pretrained=False).train()
    with torch.no_grad():
        for _ in range(2):
            model.fake_logit(torch.rand(4, 3, SIZE, SIZE))
    save_checkpoint(path, model.eval(), {"train_config": {"image_size": SIZE}, "epoch": 0})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for name in ("baseline", "laanet", "mat"):
        out[name] = root / f"{name}.safetensors"
        _checkpoint(name, out[name])
    return out


def _images(n: int, seed: int) -> torch.Tensor:
    return check_images(n, SIZE, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["baseline", "laanet", "mat"])
def test_onnx_logits_match_pytorch_at_any_batch_size(name, checkpoints, tmp_path):
    model, _ = load_detector(checkpoints[name])
    buffers = set(dict(model.named_buffers()))
    report = export_onnx(model, tmp_path / f"{name}.onnx", SIZE)
    assert set(dict(model.named_buffers())) == buffers  # the model itself is left as it was
    assert report.max_abs_diff <= TOLERANCE

    graph = onnx.load(str(report.path))
    onnx.checker.check_model(graph)
    (image,), (logit,) = graph.graph.input, graph.graph.output
    assert image.name == "image" and logit.name == "logit"
    in_dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in logit.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, SIZE, SIZE]  # a symbolic batch axis
    assert len(out_dims) == 1 and isinstance(out_dims[0], str)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["input_size"] == str(SIZE) and meta["detector"] == name and meta["flip_tta"] == "false"
    assert meta["dfattn_version"] and "inside the graph" in meta["normalization"]
    assert json.loads(meta["detector_spec"]) == json.loads(json.dumps(model.spec()))

    session = onnx_session(report.path)
    worst = 0.0
    for n in (1, 3):  # the export's example batch is 2
        x = _images(n, seed=n)
        with torch.no_grad():
            expected = model.fake_logit(x).numpy()
        got = onnx_logit(session, x)
        assert got.shape == (n,) and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - expected).max()))
        if n == 3:  # the comparison means something: the logits differ between images
            assert np.ptp(expected) > 1e-4
    print(f"{name}: max |onnxruntime - PyTorch| logit = {worst:.3g}")
    assert worst <= 1e-4


def test_cli_flip_tta_matches_evaluate_and_keeps_existing_files(checkpoints, tmp_path, capsys):
    out = tmp_path / "flip.onnx"
    out.write_bytes(b"an earlier file")
    argv = [str(checkpoints["baseline"]), "--out", str(out), "--flip-tta"]
    assert export_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    assert out.read_bytes() == b"an earlier file"

    assert export_cli.main([*argv, "--force"]) == 0
    assert "difference| to PyTorch" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["flip_tta"] == "true" and meta["checkpoint"] == checkpoints["baseline"].name

    model, _ = load_detector(checkpoints["baseline"])
    session = onnx_session(out)
    for n in (1, 3):
        x = _images(n, seed=10 + n)
        x[..., : SIZE // 2] *= 0.25  # a dark left half: the mirror image scores otherwise
        with torch.no_grad():
            expected = fake_logit(model, x, flip_tta=True).numpy()
            plain = model.fake_logit(x).numpy()
        got = onnx_logit(session, x)
        print(f"baseline, flip TTA, batch {n}: max |onnxruntime - PyTorch| logit = "
              f"{np.abs(got - expected).max():.3g} (flip TTA changes the logit by up to "
              f"{np.abs(expected - plain).max():.3g})")
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(got - plain).max() > 10 * np.abs(got - expected).max()  # the flip is in the graph


def test_cli_names_a_bad_checkpoint_and_a_bad_request(checkpoints, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    missing = tmp_path / "missing.safetensors"
    assert export_cli.main([str(missing), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "no such checkpoint" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert export_cli.main([str(junk), "--out", str(out)]) == 1
    assert str(junk) in capsys.readouterr().err
    assert export_cli.main([str(checkpoints["mat"]), "--out", str(tmp_path), "--force"]) == 1
    assert "a folder" in capsys.readouterr().err
    assert export_cli.main([str(checkpoints["mat"]), "--out", str(out), "--opset", "13"]) == 1
    assert "opset 13" in capsys.readouterr().err
    assert not out.exists()
