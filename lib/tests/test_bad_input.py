"""The tools as a careless user meets them: bad input, interruptions and busy folders.

Each case asserts the exit code and the one-line message (or the counted skip), never a traceback.
"""

from __future__ import annotations

import json
import os
import zlib
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dfattn.checkpoint import FolderLock, atomic_path, read_checkpoint
from dfattn.cli import detect as detect_cli
from dfattn.cli import evaluate as evaluate_cli
from dfattn.cli import train as train_cli
from dfattn.data.folder import list_images, read_image
from dfattn.data.labelled import LabelledFolder
from dfattn.data.synthetic import SyntheticFaces

from conftest import SMALL  # and the fixtures runs (one-epoch smoke checkpoints) and face_png


def _raw(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()["dfattn"]


def _write(path: Path, tensors: dict[str, torch.Tensor], header: str | dict) -> Path:
    save_file(tensors, str(path), metadata={"dfattn": header if isinstance(header, str) else json.dumps(header)})
    return path


def _huge_png(path: Path, side: int = 40000) -> Path:
    """A 40000 x 40000 one-bit PNG of about 190 KB: above OpenCV's pixel limit."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = zlib.compress((b"\x00" + b"\x00" * (side // 8)) * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


# -- data loss -------------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_refuses(tmp_path, capsys):
    busy = FolderLock(tmp_path / "run")  # another run holds the folder
    try:
        assert train_cli.main(["--model", "baseline", "--epochs", "1", "--out", str(tmp_path / "run"), *SMALL]) == 1
    finally:
        busy.release()
    err = capsys.readouterr().err
    assert "another run is writing to this folder" in err and f"pid {os.getpid()}" in err
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_temporary_files_are_unique_per_writer(tmp_path):
    with atomic_path(tmp_path / "x.safetensors") as a, atomic_path(tmp_path / "x.safetensors") as b:
        assert a != b and str(os.getpid()) in a.name
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x.safetensors").read_text() in ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]  # no temporary left


def test_detect_keeps_what_it_scored_when_interrupted(runs, face_png, tmp_path, monkeypatch):
    calls = {"n": 0}
    score = detect_cli._score

    def interrupt_second(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return score(*args, **kw)

    monkeypatch.setattr(detect_cli, "_score", interrupt_second)
    code = detect_cli.main([str(runs["baseline"]), str(face_png), str(face_png), "--out", str(tmp_path / "d")])
    assert code == 130
    table = pd.read_csv(tmp_path / "d" / "detections.csv")
    assert len(table) == 1 and 0 <= table["prob"].iloc[0] <= 1


def test_overlays_of_inputs_that_share_a_stem_do_not_overwrite_each_other(runs, face_png, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "face.png").write_bytes(face_png.read_bytes())
    out = tmp_path / "d"
    assert detect_cli.main([str(runs["laanet"]), str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a__face_png_overlay.png", "b__face_png_overlay.png"]


# -- one-line errors instead of tracebacks -----------------------------------------------------------


def test_detect_skips_a_missing_video_and_an_image_above_the_pixel_limit(runs, face_png, tmp_path, capsys):
    huge = _huge_png(tmp_path / "huge.png")
    with pytest.raises(ValueError, match="huge.png: cannot decode image"):
        read_image(huge)
    code = detect_cli.main([str(runs["baseline"]), str(tmp_path / "gone.mp4"), str(huge), str(face_png),
                            "--out", str(tmp_path / "d")])
    assert code == 0
    table = pd.read_csv(tmp_path / "d" / "detections.csv")
    assert table["error"].fillna("").str.contains("no such file").sum() == 1
    assert table["error"].fillna("").str.contains("cannot decode image").sum() == 1
    assert "1 faces scored in 1 pictures, 2 skipped" in capsys.readouterr().out


def test_a_labelled_folder_skips_and_counts_an_image_above_the_pixel_limit(tmp_path):
    face = SyntheticFaces(1, 64, seed=1)[0].image
    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
        cv2.imwrite(str(tmp_path / label / "ok.png"), face)
    _huge_png(tmp_path / "fake" / "huge.png")
    items = LabelledFolder(tmp_path, 32, skip_bad=True)
    assert len(items) == 2 and [p for p, _ in items.skipped] == ["fake/huge.png"]


def _damaged(runs: dict[str, Path], tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoints damaged in each way the issue names, with a phrase the message must hold."""
    tensors, header = _raw(runs["laanet"])
    meta = json.loads(header)
    mat_tensors, _ = _raw(runs["mat"])
    first = next(k for k in tensors if k.startswith("model.") and tensors[k].ndim > 1)
    cases = {
        "missing_keys": ({k: v for k, v in tensors.items() if "heatmap_head" not in k}, header, "missing"),
        "wrong_shape": ({**tensors, first: tensors[first][:1]}, header, "of another shape"),
        "mat_weights": (mat_tensors, header, "do not fit the 'laanet' detector"),
        "no_train_config": (tensors, {k: v for k, v in meta.items() if k != "train_config"}, "train_config"),
        "bad_image_size": (tensors, {**meta, "train_config": {**meta["train_config"], "image_size": "big"}},
                           "image_size"),
        "bad_json": (tensors, "{not json", "not valid JSON"),
        "unknown_model": (tensors, {**meta, "detector": {"name": "resnet", "config": {}}}, "unknown model 'resnet'"),
    }
    return {name: (_write(tmp_path / f"{name}.safetensors", t, h), phrase) for name, (t, h, phrase) in cases.items()}


def test_damaged_checkpoints_give_one_line_naming_the_file(runs, face_png, tmp_path, capsys):
    for name, (path, phrase) in _damaged(runs, tmp_path).items():
        for tool in (detect_cli.main, evaluate_cli.main):
            argv = [str(path), str(face_png), "--out", str(tmp_path / "d")] if tool is detect_cli.main \
                else [str(path), "--out", str(tmp_path / "e")]
            assert tool(argv) == 1, name
            err = capsys.readouterr().err
            assert str(path) in err and phrase in err and "Traceback" not in err, (name, err)
            assert len(err.strip().splitlines()) <= 2, (name, err)


def test_evaluate_writes_the_good_runs_table_when_another_is_broken(runs, tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"junk")
    out = tmp_path / "e"
    assert evaluate_cli.main([str(runs["baseline"]), str(broken), "--out", str(out)]) == 1
    assert list(pd.read_csv(out / "cross.csv", index_col=0).index) == ["baseline"]
    assert "broken.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("argv, phrase", [
    (["--device", "cuda:0"], "CUDA"),
    (["--backbone", "efficientnet_b99"], "unknown backbone 'efficientnet_b99'"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--epochs", "-3"], "epochs must be at least 1"),
    (["--image-size", "7"], "image_size must be at least 32"),
    (["--model", "resnet"], "unknown model 'resnet'"),
])
def test_train_refuses_bad_settings_in_one_line(argv, phrase, tmp_path, capsys):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert train_cli.main(["--model", "baseline", "--out", str(tmp_path / "run"), *SMALL, *argv]) == 1
    err = capsys.readouterr().err
    assert phrase in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_out_pointing_at_a_file_and_a_missing_gpu(runs, face_png, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert train_cli.main(["--model", "baseline", "--out", str(tmp_path / "file"), *SMALL]) == 1
    assert "is a file" in capsys.readouterr().err
    assert detect_cli.main([str(runs["baseline"]), str(face_png), "--out", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert evaluate_cli.main([str(runs["baseline"]), "--out", str(tmp_path / "e"), "--device", "cuda"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("tool, argv", [
    ("detect", ["--margin", "-1"]),
    ("detect", ["--margin", "20"]),
    ("detect", ["--frames", "0"]),
    ("evaluate", ["--n-test", "0"]),
    ("evaluate", ["--batch-size", "0"]),
])
def test_out_of_range_options_are_usage_errors(tool, argv, runs, face_png, tmp_path, capsys):
    main = {"detect": detect_cli.main, "evaluate": evaluate_cli.main}[tool]
    inputs = [str(face_png)] if tool == "detect" else []
    with pytest.raises(SystemExit) as exit_:
        main([str(runs["baseline"]), *inputs, "--out", str(tmp_path / "o"), *argv])
    assert exit_.value.code == 2 and argv[0] in capsys.readouterr().err


# -- silently wrong no more ---------------------------------------------------------------------------


def test_runs_are_labelled_by_their_header_and_never_collapse(runs, tmp_path):
    same = [tmp_path / d / "baseline" for d in ("x", "y")]
    for folder in same:
        folder.mkdir(parents=True)
        (folder / "best.safetensors").write_bytes(runs["baseline"].read_bytes())
    misnamed = tmp_path / "z" / "laanet"
    misnamed.mkdir(parents=True)
    (misnamed / "best.safetensors").write_bytes(runs["mat"].read_bytes())
    out = tmp_path / "e"
    assert evaluate_cli.main([*(str(f / "best.safetensors") for f in same), str(misnamed / "best.safetensors"),
                              "--out", str(out)]) == 0
    assert list(pd.read_csv(out / "cross.csv", index_col=0).index) == ["baseline", "baseline #2", "mat (laanet)"]
    assert len({(out / d / "frames.csv").read_bytes() for d in ("baseline", "baseline_2")}) >= 1
    assert (out / "baseline" / "frames.csv").exists() and (out / "baseline_2" / "frames.csv").exists()


def test_a_reused_evaluate_out_keeps_no_stale_tables(runs, tmp_path):
    out = tmp_path / "e"
    assert evaluate_cli.main([str(runs["baseline"]), str(runs["mat"]), "--out", str(out)]) == 0
    assert (out / "mat" / "frames.csv").exists()
    assert evaluate_cli.main([str(runs["baseline"]), "--out", str(out)]) == 0
    assert not (out / "mat").exists() or not any((out / "mat").iterdir())
    assert list(pd.read_csv(out / "cross.csv", index_col=0).index) == ["baseline"]


def test_labelled_evaluation_skips_counts_and_reports_unreadable_images(runs, tmp_path):
    faces = SyntheticFaces(4, 64, seed=2)
    for k, label in enumerate(("real", "real", "fake", "fake")):
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / label / f"{k}.png"), faces[k].image)
    (tmp_path / "data" / "fake" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "e"
    assert evaluate_cli.main([str(runs["baseline"]), "--data", f"labelled:{tmp_path / 'data'}", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "frame.csv", index_col=0)
    assert frame.loc["baseline", "skipped"] == 1 and frame.loc["baseline", "n"] == 4
    assert frame.loc["baseline", "scored"] == 4 and 0 <= frame.loc["baseline", "no_face"] <= 4


def test_symlinked_sub_folders_are_followed_once(tmp_path):
    (tmp_path / "real").mkdir()
    cv2.imwrite(str(tmp_path / "real" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (root / "linked_again").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "loop").symlink_to(root, target_is_directory=True)  # a loop back up
    found = list_images(root)
    assert len(found) == 1 and found[0].name == "a.png"


def test_a_finished_run_asked_for_fewer_epochs_is_left_as_it_is(tmp_path):
    run = tmp_path / "run"
    assert train_cli.main(["--model", "baseline", "--epochs", "2", "--out", str(run), *SMALL]) == 0
    before = (run / "config.json").read_bytes(), (run / "best.safetensors").read_bytes()
    assert train_cli.main(["--model", "baseline", "--epochs", "1", "--out", str(run), *SMALL]) == 0
    assert ((run / "config.json").read_bytes(), (run / "best.safetensors").read_bytes()) == before
    assert json.loads(before[0])["epochs"] == 2


def test_a_garbled_video_is_reported_as_damaged_not_as_faceless(runs, face_png, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 160))
    frame = cv2.imread(str(face_png))
    for _ in range(20):
        writer.write(frame)
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 10])  # the header still announces 20 frames; about 2 decode
    out = tmp_path / "d"
    assert detect_cli.main([str(runs["baseline"]), str(video), "--out", str(out)]) == 1
    error = pd.read_csv(out / "detections.csv")["error"].iloc[0]
    assert "frames decode" in error and "damaged" in error


def test_a_run_folder_given_as_the_checkpoint_says_which_file_to_give(runs, face_png, tmp_path, capsys):
    assert detect_cli.main([str(runs["baseline"].parent), str(face_png), "--out", str(tmp_path / "d")]) == 1
    assert "give best.safetensors inside it" in capsys.readouterr().err
    with pytest.raises(ValueError, match="give best.safetensors inside it"):
        read_checkpoint(runs["baseline"].parent)


def test_non_finite_outputs_are_reported_as_such(runs, face_png, tmp_path):
    tensors, header = _raw(runs["baseline"])
    tensors = {k: (torch.full_like(v, float("nan")) if k == "model.fc.weight" else v) for k, v in tensors.items()}
    path = _write(tmp_path / "nan.safetensors", tensors, header)
    assert detect_cli.main([str(path), str(face_png), "--out", str(tmp_path / "d")]) == 1
    error = pd.read_csv(tmp_path / "d" / "detections.csv")["error"].iloc[0]
    assert "not finite" in error


def test_a_damaged_last_checkpoint_stops_a_resume_in_one_line(runs, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(["--model", "baseline", "--epochs", "1", "--out", str(run), *SMALL]) == 0
    tensors, header = _raw(run / "last.safetensors")
    _write(run / "last.safetensors", {k: v for k, v in tensors.items() if "fc" not in k}, header)
    assert train_cli.main(["--model", "baseline", "--epochs", "2", "--out", str(run), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "cannot resume from this checkpoint" in err and len(err.strip().splitlines()) == 1
