"""Raw benchmark videos to tables through the command-line tools: miniature FF++ and Celeb-DF v2
layouts (generated videos of built-in faces) -> dfattn-preprocess -> dfattn-train on the real
FF++ training frames with SBI -> dfattn-evaluate on Celeb-DF's test videos at frame and video level."""

from __future__ import annotations

import pandas as pd
import pytest

from dfattn.cli import evaluate as evaluate_cli
from dfattn.cli import preprocess as preprocess_cli
from dfattn.cli import train as train_cli
from dfattn.data.preprocessed import PreprocessedFaces
from dfattn.checkpoint import read_checkpoint
from test_public import make_celebdf, make_ffpp


def test_benchmark_videos_to_video_level_tables(tmp_path):
    ffpp_raw, cdf_raw = make_ffpp(tmp_path / "ffpp"), make_celebdf(tmp_path / "cdf")
    pre = tmp_path / "pre"
    common = ["--frames", "4", "--size", "96", "--workers", "1", "--quiet"]
    assert preprocess_cli.main(["--dataset", "ffpp", "--root", str(ffpp_raw), "--out", str(pre / "ffpp"), *common]) == 0
    assert preprocess_cli.main(["--dataset", "celebdf", "--root", str(cdf_raw), "--out", str(pre / "cdf"),
                                "--split", "test", *common]) == 0
    train_reals = PreprocessedFaces(pre / "ffpp", split="train", label=0)
    assert len(train_reals) == 2 * 4  # the real videos 000 and 001, four frames each

    run = tmp_path / "run"
    assert train_cli.main(["--model", "laanet", "--data", f"preprocessed:{pre / 'ffpp'}", "--profile", "smoke",
                           "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--no-progress",
                           "--no-val-families", "--out", str(run)]) == 0
    _, header = read_checkpoint(run / "best.safetensors")
    assert header["train_config"]["data"].startswith("preprocessed:")

    out = tmp_path / "results"
    assert evaluate_cli.main([str(run / "best.safetensors"), "--data", f"preprocessed:{pre / 'cdf'}",
                              "--frames", "3", "--flip-tta", "--out", str(out)]) == 0
    frames = pd.read_csv(out / "laanet_run" / "frames.csv")  # the run's label: "laanet (run)"
    videos = pd.read_csv(out / "laanet_run" / "videos.csv")
    assert len(frames) == 3 * 3 and len(videos) == 3  # Celeb-DF's three listed test videos
    assert sorted(videos["label"]) == [0, 0, 1]  # two real (label 1 in the list file), one fake
    assert (videos["n_frames"] == 3).all()
    mean_logit = frames.groupby("video_id")["logit"].mean()
    assert mean_logit.loc[videos["video_id"]].to_numpy() == pytest.approx(videos["logit"].to_numpy())
    assert set(pd.read_csv(out / "video.csv", index_col=0).columns) >= {"auc", "ap", "eer", "acc", "balanced_acc"}
