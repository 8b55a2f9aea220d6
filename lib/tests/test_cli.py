"""The command-line tools end to end: dfattn-train -> dfattn-evaluate -> dfattn-detect."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfattn.cli import detect as detect_cli
from dfattn.cli import evaluate as evaluate_cli
from dfattn.cli import train as train_cli
from dfattn.data.synthetic import SyntheticFaces
from dfattn.checkpoint import read_checkpoint

REAL_FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real_faces"
SMALL = ["--profile", "smoke", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--batch-size", "8",
         "--num-workers", "0", "--no-progress", "--no-val-families"]


def test_train_evaluate_detect_on_the_built_in_data(tmp_path, capsys):
    run = tmp_path / "laanet"
    assert train_cli.main(["--model", "laanet", "--epochs", "1", "--face-size", "64", "--out", str(run),
                           "--model-set", 'loss_weights={"heatmap": 10}', *SMALL]) == 0
    _, header = read_checkpoint(run / "best.safetensors")
    assert header["detector"]["config"]["loss_weights"]["heatmap"] == 10
    assert header["train_config"]["epochs"] == 1 and len(pd.read_csv(run / "metrics.csv")) == 1

    out = tmp_path / "results"
    assert evaluate_cli.main([str(run / "best.safetensors"), "--out", str(out)]) == 0
    cross = pd.read_csv(out / "cross.csv", index_col=0)
    assert list(cross.index) == ["laanet"]
    assert {"face_swap", "region_swap", "mean", "sbi"} <= set(cross.columns)
    assert cross.loc["laanet"].between(0, 1).all()
    frame = pd.read_csv(out / "frame.csv", index_col=0)  # the pooled table, at the stored operating point
    assert {"auc", "tpr_at_fpr_1", "tpr_at_fpr_5", "ece", "threshold", "balanced_acc"} <= set(frame.columns)
    from dfattn.evaluate import OperatingPoint

    assert frame.loc["laanet", "threshold"] == pytest.approx(OperatingPoint.from_header(header).threshold)
    assert 0 <= frame.loc["laanet", "ece"] <= 1
    frames = pd.read_csv(out / "laanet" / "frames.csv")
    assert set(frames["kind"]) >= {"real", "face_swap", "sbi"} and frames["prob"].between(0, 1).all()

    # detect: an image with a face, an image without one, and a video; probabilities, not logits
    face = SyntheticFaces(2, 160, seed=5, first_identity=3_000_000)
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face[0].image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((120, 120, 3), 128, np.uint8))
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 160))
    for i in range(6):
        writer.write(cv2.cvtColor(face[i % 2].image, cv2.COLOR_RGB2BGR))
    writer.release()
    det = tmp_path / "det"
    code = detect_cli.main([str(run / "best.safetensors"), str(tmp_path / "face.png"), str(tmp_path / "blank.png"),
                            str(tmp_path / "clip.avi"), "--frames", "3", "--out", str(det)])
    assert code == 0
    table = pd.read_csv(det / "detections.csv")
    assert len(table) == 1 + 1 + 3
    blank = table[table["source"].str.endswith("blank.png")].iloc[0]
    assert np.isnan(blank["prob"]) and "no face" in blank["error"]
    scored = table.dropna(subset=["prob"])
    assert len(scored) == 4 and scored["prob"].between(0, 1).all()
    assert np.allclose(scored["prob"], 1 / (1 + np.exp(-scored["logit"])))
    assert (det / "face_overlay.png").exists() and len(list(det.glob("clip_f*_overlay.png"))) == 3
    assert set(scored["decision"]) <= {"real", "fake"} and (scored["face"] == 0).all()
    printed = capsys.readouterr().out
    assert re.search(r"clip.avi: (real|fake) \(P\(fake\) = [0-9.]+; mean logit of 3/3 frames", printed)
    assert "4 faces scored in 4 pictures, 1 skipped" in printed
    assert "dfattn-detect: threshold P(fake) = " in printed and "val pseudo-fakes" in printed


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    assert evaluate_cli.main([str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    assert train_cli.main(["--model", "resnet", "--out", str(tmp_path / "x"), *SMALL]) == 1
    assert "unknown model 'resnet'" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="the real face photos are not present")
def test_real_photos_train_and_evaluate_end_to_end(tmp_path):
    """Self-blended real photos for training; held-out real photos, their pseudo-fakes and the
    held-out families for evaluation, through the same commands."""
    run = tmp_path / "baseline_real"
    data = f"folder:{REAL_FACES.resolve()}"
    assert train_cli.main(["--model", "baseline", "--data", data, "--epochs", "1", "--out", str(run),
                           *SMALL]) == 0
    _, header = read_checkpoint(run / "best.safetensors")
    assert header["train_config"]["data"] == data
    out = tmp_path / "results"
    assert evaluate_cli.main([str(run / "best.safetensors"), "--out", str(out)]) == 0
    frames = pd.read_csv(out / "baseline_baseline_real" / "frames.csv")  # label "baseline (baseline_real)"
    reals = frames[frames["kind"] == "real"]
    assert len(reals) == 4 and (frames["kind"] == "sbi").sum() == 4
    assert frames["prob"].between(0, 1).all()
