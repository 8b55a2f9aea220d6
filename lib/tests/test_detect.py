"""dfattn-detect: every face scored, the picture's score, decisions at the operating point."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from dfattn.cli import detect as detect_cli
from dfattn.data.synthetic import SyntheticFaces


# -- every face, the image score, the decision ---------------------------------------------------


def _two_faces(tmp_path):
    """Two built-in faces side by side on one canvas (the left one larger), as a PNG."""
    faces = SyntheticFaces(2, 160, seed=5, first_identity=3_000_000)
    canvas = np.full((220, 400, 3), 90, np.uint8)
    canvas[20:200, 10:190] = cv2.resize(faces[0].image, (180, 180))
    canvas[40:180, 240:380] = cv2.resize(faces[1].image, (140, 140))
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return path


def test_detect_scores_every_face_and_forms_the_image_score(runs, tmp_path, capsys):
    path = _two_faces(tmp_path)
    out = tmp_path / "d"
    assert detect_cli.main([str(runs["laanet"]), str(path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "detections.csv")
    assert list(table["face"]) == [0, 1]  # a row per face, largest first
    left, right = table.iloc[0], table.iloc[1]
    assert left["x1"] < 200 and right["x0"] > 200  # each box around its own face
    assert (left["x1"] - left["x0"]) > (right["x1"] - right["x0"])
    printed = capsys.readouterr().out
    best = table["prob"].max()
    assert f"P(fake) = {best:.3f}; most fake of 2 faces" in printed
    overlay = cv2.imread(str(out / "two_overlay.png"))
    assert overlay.shape[:2] == (220, 400)

    out2 = tmp_path / "d2"
    assert detect_cli.main([str(runs["laanet"]), str(path), "--image-score", "largest", "--out", str(out2),
                            "--no-overlays"]) == 0
    assert f"P(fake) = {table['prob'].iloc[0]:.3f}; largest of 2 faces" in capsys.readouterr().out
    assert not list(out2.glob("*.png"))


def test_detect_decides_with_the_operating_point_or_a_given_threshold(runs, face_png, tmp_path, capsys):
    out = tmp_path / "d"
    assert detect_cli.main([str(runs["baseline"]), str(face_png), "--out", str(out), "--threshold", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "threshold P(fake) = 0.010 (given: --threshold)" in printed
    row = pd.read_csv(out / "detections.csv").iloc[0]
    assert row["decision"] == ("fake" if row["prob"] >= 0.01 else "real")
    assert detect_cli.main([str(runs["baseline"]), str(face_png), "--out", str(out), "--threshold",
                            f"{row['prob']:.6f}", "--uncertain", "0.1"]) == 0
    assert pd.read_csv(out / "detections.csv")["decision"].iloc[0] == "uncertain"
    assert "uncertain within 0.1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        detect_cli.main([str(runs["baseline"]), str(face_png), "--threshold", "1.5"])


def test_picture_scores_max_and_largest():
    rows = pd.DataFrame({"source": ["a", "a", "b"], "frame": ["", "", ""], "face": [0, 1, 0],
                         "logit": [-1.0, 2.0, 0.5]})
    top = detect_cli.picture_scores(rows, "max")
    assert list(top["logit"]) == [2.0, 0.5] and list(top["n_faces"]) == [2, 1]
    largest = detect_cli.picture_scores(rows, "largest")
    assert list(largest["logit"]) == [-1.0, 0.5] and list(largest["n_faces"]) == [2, 1]


def test_detect_with_a_cnn_face_detector_finds_both_faces(runs, tmp_path):
    pytest.importorskip("facenet_pytorch")
    out = tmp_path / "d"
    assert detect_cli.main([str(runs["baseline"]), str(_two_faces(tmp_path)), "--face-detector", "mtcnn",
                            "--out", str(out)]) == 0
    table = pd.read_csv(out / "detections.csv")
    assert list(table["face"]) == [0, 1] and table["x1"].iloc[0] < 200 < table["x0"].iloc[1]


def test_an_unknown_face_detector_is_a_usage_error(runs, face_png, capsys):
    with pytest.raises(SystemExit):
        detect_cli.main([str(runs["baseline"]), str(face_png), "--face-detector", "haar"])
    from dfattn.train import TrainConfig

    with pytest.raises(ValueError, match="unknown face detector"):
        TrainConfig(model="baseline", profile="smoke", face_detector="haar").resolved()


def test_the_overlay_maps_crop_pixels_back_onto_the_picture_exactly():
    from dfattn.data.folder import crop_face, face_square

    face = SyntheticFaces(1, 160, seed=5, first_identity=3_000_000)[0]
    for size in (64, 256):  # a shrinking and an enlarging crop
        _, crop_lm = crop_face(face.image, face.landmarks, size, 0.2)
        matrix = detect_cli._crop_to_image(face_square(face.landmarks, 0.2), size)
        back = crop_lm @ matrix[:, :2].T + matrix[:, 2]
        np.testing.assert_allclose(back, face.landmarks, atol=1e-3)
