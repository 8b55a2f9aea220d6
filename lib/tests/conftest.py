"""Fixtures shared by the tool tests: one-epoch smoke checkpoints of the built-in detectors and
a face image."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from dfattn.cli import train as train_cli
from dfattn.data.synthetic import SyntheticFaces

SMALL = ["--profile", "smoke", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--batch-size", "8",
         "--num-workers", "0", "--no-progress", "--no-val-families", "--face-size", "64"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-epoch smoke checkpoints of the three detectors (trained once per test session)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for model in ("baseline", "laanet", "mat"):
        assert train_cli.main(["--model", model, "--epochs", "1", "--out", str(root / model), *SMALL]) == 0
        out[model] = root / model / "best.safetensors"
    return out


@pytest.fixture(scope="session")
def face_png(tmp_path_factory) -> Path:
    """A built-in face (160 px) as a PNG."""
    path = tmp_path_factory.mktemp("faces") / "face.png"
    face = SyntheticFaces(1, 160, seed=5, first_identity=3_000_000)[0].image
    cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    return path
