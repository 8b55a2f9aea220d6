"""TensorBoard logs: with ``tensorboard=True`` the trainer writes every metrics.csv column as a
scalar per epoch to <out>/tensorboard/ (also up to an exception), and training is unchanged; off,
nothing is written there."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dfattn.checkpoint import read_checkpoint
from dfattn.cli import train as train_cli
from dfattn.train import TrainConfig, Trainer, tensorboard_tag

TINY = dict(model="baseline", profile="smoke", image_size=64, n_train=8, n_val=4, n_test=4, batch_size=8,
            num_workers=0, progress=False, val_families=False, face_size=64, epochs=2)


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every event file in ``folder``."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _same(logged: float, written: float) -> bool:
    """A scalar equals its metrics.csv value (TensorBoard stores float32)."""
    if math.isnan(written):
        return math.isnan(logged)
    return logged == float(np.float32(written))


def _tensors(path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: weights, optimiser state and RNG states."""
    return read_checkpoint(path)[0]


def test_scalars_equal_metrics_csv_and_training_is_unchanged(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    Trainer(TrainConfig(**TINY, tensorboard=True), on).fit()
    Trainer(TrainConfig(**TINY), off).fit()

    assert not (off / "tensorboard").exists()
    metrics = pd.read_csv(on / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    scalars = _scalars(on / "tensorboard")
    columns = [c for c in metrics.columns if c != "epoch"]
    assert {"lr", "train_loss", "train_cls", "val_auc"} <= set(columns)
    assert set(scalars) == {tensorboard_tag(c) for c in columns}
    for column in columns:
        logged = scalars[tensorboard_tag(column)]
        assert [step for step, _ in logged] == list(metrics["epoch"]), column
        for (_, value), written in zip(logged, metrics[column]):
            assert _same(value, float(written)), (column, value, written)

    # the run with TensorBoard on trained exactly the same weights, optimiser state and RNG stream
    a, b = _tensors(on / "last.safetensors"), _tensors(off / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = [c for c in columns if c in ("train_img_per_s", "train_seconds")]
    pd.testing.assert_frame_equal(metrics.drop(columns=timing),
                                  pd.read_csv(off / "metrics.csv").drop(columns=timing))


def test_events_written_before_an_exception_stay_readable(tmp_path, monkeypatch):
    trainer = Trainer(TrainConfig(**TINY, tensorboard=True), tmp_path)
    train_epoch = trainer.train_epoch

    def fail_second(epoch):
        if epoch == 1:
            raise RuntimeError("out of memory (simulated)")
        return train_epoch(epoch)

    monkeypatch.setattr(trainer, "train_epoch", fail_second)
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.fit()
    assert trainer._tensorboard is None  # closed
    scalars = _scalars(tmp_path / "tensorboard")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 1 and [step for step, _ in scalars["train/loss"]] == [1]
    assert _same(scalars["train/loss"][0][1], float(metrics["train_loss"][0]))


def test_tags_and_the_command_line_switch():
    assert tensorboard_tag("train_loss") == "train/loss"
    assert tensorboard_tag("family_auc_face_swap") == "family/auc_face_swap"
    assert tensorboard_tag("val_auc") == "val/auc" and tensorboard_tag("lr") == "lr"
    p = train_cli.parser()
    assert train_cli.config_from_args(p.parse_args(["--out", "x", "--tensorboard"])).tensorboard is True
    assert train_cli.config_from_args(p.parse_args(["--out", "x"])).tensorboard is False
