"""The trainer: schedules, SAM, checkpoints, resume equality, backbone freeze, DDP on CPU (gloo)."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from dfattn.data.sources import SplitSizes, face_splits, split_by_identity
from dfattn.checkpoint import load_detector, read_checkpoint, save_checkpoint
from dfattn.models.base import Detector, create_detector, detector_from_spec
from dfattn.optim import SAM, lr_factor
from dfattn.train import TrainConfig, Trainer

TINY = dict(profile="smoke", image_size=64, n_train=8, n_val=4, n_test=4, batch_size=8, num_workers=0,
            progress=False, val_families=False, face_size=64)


class ToyDetector(Detector):
    """A detector without BatchNorm (per-process batch statistics would differ under DDP)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 5, stride=4)
        self.fc = nn.Linear(6, 1)

    def fake_logit(self, images):
        return self.fc(F.relu(self.conv(images)).mean((-2, -1))).squeeze(1)

    def loss(self, batch):
        bce = F.binary_cross_entropy_with_logits(self.fake_logit(batch["image"]), batch["label"])
        return bce, {"cls": bce.detach()}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- schedules and SAM ----------------------------------------------------------------------------


def test_warmup_linear_schedule_matches_the_official_shape():
    cfg = TrainConfig(model="laanet", profile="smoke", epochs=100, schedule="warmup_linear",
                      warmup_frac=0.25, peak_factor=4.0).resolved()
    f = lr_factor(cfg, steps_per_epoch=1)
    assert f(0) == 1.0
    assert f(25) == pytest.approx(4.0)  # peak at the end of the warm-up
    assert f(10) == pytest.approx(1 + 3 * 10 / 25)
    assert f(50) == pytest.approx(4 * 50 / 75)  # 1.33e-4 at base 5e-5 (the official config's warm-up)
    assert f(100) == 0.0


def test_step_schedule_halves_every_five_epochs():
    cfg = TrainConfig(model="mat", profile="smoke", epochs=20, schedule="step").resolved()
    f = lr_factor(cfg, steps_per_epoch=3)
    assert [f(t) for t in (0, 14, 15, 29, 30)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_sam_steps_with_the_gradient_at_the_perturbed_point():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    loss = lambda: (w ** 3).sum()  # noqa: E731  gradient 3 w^2
    loss().backward()
    g = torch.tensor([27.0, 48.0])
    sam.first_step()
    w_adv = torch.tensor([3.0, 4.0]) + 0.5 * g / g.norm()
    assert torch.allclose(w.detach(), w_adv)
    loss().backward()
    sam.second_step()
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * 3 * w_adv ** 2)


# -- data splits ----------------------------------------------------------------------------------


def test_split_by_identity_keeps_people_apart_and_caps_sizes():
    identities = np.repeat(np.arange(50), 2)  # 50 people, 2 pictures each
    parts = split_by_identity(identities, SplitSizes(train=60, val=10, test=10), seed=3)
    people = {s: set(identities[v]) for s, v in parts.items()}
    assert not (people["train"] & people["val"] or people["train"] & people["test"] or people["val"] & people["test"])
    assert len(parts["test"]) == 10 and len(parts["val"]) == 10 and len(parts["train"]) == 60
    small = split_by_identity(np.arange(20), SplitSizes(train=100, val=100, test=100))
    assert len(small["test"]) == 4 and len(small["val"]) == 4 and len(small["train"]) == 12


def test_synthetic_splits_do_not_depend_on_the_training_size():
    a = face_splits("synthetic", SplitSizes(10, 3, 3), face_size=64)
    b = face_splits("synthetic", SplitSizes(20, 3, 3), face_size=64)
    assert np.array_equal(a["val"][2].image, b["val"][2].image)
    assert a["val"][0].identity not in {a["train"][i].identity for i in range(10)}
    with pytest.raises(ValueError, match="unknown data spec"):
        face_splits("imagenet", SplitSizes(1, 1, 1))


def test_joined_specs_split_each_part_and_keep_their_people_apart():
    one = face_splits("synthetic", SplitSizes(6, 3, 3), face_size=64)
    both = face_splits("synthetic+synthetic", SplitSizes(8, 3, 3), face_size=64)
    # val and test: each part's own held-out people, one after the other
    assert len(both["val"]) == 2 * len(one["val"]) and len(both["test"]) == 2 * len(one["test"])
    assert np.array_equal(both["val"][len(one["val"])].image, one["val"][0].image)
    # the same faces from the second part are another person
    assert both["val"][len(one["val"])].identity != both["val"][0].identity
    # training: a sample of 8 from the 2 x 8 training faces, drawn from both parts
    assert len(both["train"]) == 8
    ids = {both["train"][i].identity for i in range(8)}
    assert any(i < 10**8 for i in ids) and any(i >= 10**8 for i in ids)
    held_out = {f.identity for split in ("val", "test") for f in (both[split][i] for i in range(len(both[split])))}
    assert not ids & held_out
    with pytest.raises(ValueError, match="needs a path"):
        face_splits("synthetic+folder:", SplitSizes(1, 1, 1))  # each part is checked


# -- detectors and checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["laanet", "mat", "baseline"])
def test_detector_config_round_trip_rebuilds_the_same_model(name, tmp_path):
    model = create_detector(name, backbone="efficientnet_lite0", pretrained=False).eval()
    spec = json.loads(json.dumps(model.spec()))
    assert detector_from_spec(spec).config == model.config
    save_checkpoint(tmp_path / "m.safetensors", model, {"epoch": 0})
    loaded, header = load_detector(tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded.fake_logit(x), model.fake_logit(x), atol=1e-6)
    assert torch.allclose(model.predict_proba(x), torch.sigmoid(model.fake_logit(x)))
    assert header["epoch"] == 0


def test_read_checkpoint_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="without a dfattn header"):
        read_checkpoint(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        read_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoints_of_format_1_written_before_the_detector_contract_still_load(tmp_path):
    """The header layout of format 1 (written before models/base.py existed), built by hand: it
    loads into the same detector; another format version is refused, naming both versions."""
    import dataclasses

    from safetensors.torch import save_file

    model = create_detector("baseline", backbone="efficientnet_lite0", pretrained=False)
    header = {"format": "dfattn-checkpoint/1", "train_config": {"image_size": 64}, "epoch": 0,
              "detector": {"name": "baseline", "config": dataclasses.asdict(model.config)}}
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dfattn": json.dumps(header)})
    loaded, _ = load_detector(tmp_path / "old.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    header["format"] = "dfattn-checkpoint/0"
    save_file(tensors, str(tmp_path / "older.safetensors"), metadata={"dfattn": json.dumps(header)})
    with pytest.raises(ValueError, match=r"older.safetensors: checkpoint format 'dfattn-checkpoint/0', "
                                         r"expected 'dfattn-checkpoint/1'"):
        load_detector(tmp_path / "older.safetensors")


# -- the loop -------------------------------------------------------------------------------------


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    """Interrupted after epoch 1 and resumed by a new Trainer == one uninterrupted run (exactly)."""
    cfg = TrainConfig(model="baseline", epochs=2, **TINY)
    straight = Trainer(cfg, tmp_path / "a")
    straight.fit()
    first = Trainer(cfg, tmp_path / "b")
    first.fit(stop_after=1)
    assert first.epoch == 1
    torch.manual_seed(123)  # a different global RNG state: the checkpoint must restore it
    resumed = Trainer(cfg, tmp_path / "b")
    assert resumed.epoch == 1
    resumed.fit()
    a, b = _state(straight.model), _state(resumed.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert len(resumed.history) == 2
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 3
    with pytest.raises(ValueError, match="lr"):
        Trainer(TrainConfig(model="baseline", epochs=2, lr=0.5, **TINY), tmp_path / "b")


def test_frozen_backbone_epochs_leave_the_backbone_weights_alone(tmp_path):
    cfg = TrainConfig(model="baseline", epochs=2, freeze_frac=0.5, **TINY)
    trainer = Trainer(cfg, tmp_path)
    before = _state(trainer.model)
    trainer.fit(stop_after=1)
    after = _state(trainer.model)
    params = dict(trainer.model.named_parameters())
    backbone = [k for k in params if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    trainer.fit()  # epoch 2: unfrozen
    assert any(not torch.equal(after[k], trainer.model.state_dict()[k]) for k in backbone)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        Trainer(TrainConfig(**config), out_dir, model=ToyDetector()).fit()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    config = dict(model="baseline", epochs=2, lr=1e-2, channels_last=False, **TINY)
    single = Trainer(TrainConfig(**config), tmp_path / "one", model=ToyDetector())
    single.fit()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), config), nprocs=2,
                       start_method="spawn")
    tensors, header = read_checkpoint(tmp_path / "two" / "last.safetensors")
    assert header["epoch"] == 1
    for name, value in single.model.state_dict().items():
        assert torch.allclose(tensors[f"model.{name}"], value, atol=1e-5), name
    moved = single.model.state_dict()["conv.weight"] - ToyDetector().state_dict()["conv.weight"]
    assert moved.abs().max() > 1e-3  # the comparison is not vacuous: training moved the weights


def test_compiled_training_equals_eager_and_keeps_checkpoint_keys(tmp_path, monkeypatch):
    """``compile=True`` compiles each child of the detector in place (here through dynamo with a
    counting backend that runs the captured graphs as they are, so no C++ toolchain is needed):
    graphs are captured, training ends with the eager run's weights, and the checkpoint has the
    eager model's keys (no ``_orig_mod.`` prefix), so it loads into an uncompiled detector."""
    from torch._dynamo.testing import CompileCounter

    import dfattn.train as train_module

    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setitem(train_module.COMPILE_OPTIONS, "backend", counter)
    config = dict(TINY, model="baseline", epochs=1, pretrained=False, backbone="efficientnet_lite0")
    eager = Trainer(TrainConfig(**config), tmp_path / "eager")
    eager.fit()
    compiled = Trainer(TrainConfig(**config, compile=True), tmp_path / "compiled")
    compiled.fit()
    assert counter.frame_count > 0  # the backbone and the classifier ran as captured graphs
    a, b = _state(eager.model), _state(compiled.model)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
    loaded, _ = load_detector(tmp_path / "compiled" / "best.safetensors")
    assert set(loaded.state_dict()) == set(a)
    torch._dynamo.reset()
