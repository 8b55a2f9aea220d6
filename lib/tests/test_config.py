"""Profiles: one scale table; the environment is read only by ``profile_from_env`` (a parameter, then
the environment, then auto); seeding reproduces."""

import dataclasses

import numpy as np
import pytest
import torch

from dfattn import config
from dfattn.config import (PROFILES, AblationScale, DemoScale, TrainScale, get_profile, profile_from_env,
                           resolve_profile_name, seed_everything)
from dfattn.train import TrainConfig


def test_parameter_beats_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    assert profile_from_env("smoke").name == "smoke"


def test_environment_beats_auto(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    assert profile_from_env(None).name == "smoke"
    assert profile_from_env("").name == "smoke"


def test_auto_follows_cuda(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    monkeypatch.setattr(config, "_cuda_available", lambda: False)
    assert profile_from_env().name == "cpu" and resolve_profile_name() == "cpu"
    monkeypatch.setattr(config, "_cuda_available", lambda: True)
    assert profile_from_env("auto").name == "gpu"


def test_library_functions_do_not_read_the_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    monkeypatch.setenv(config.PRETRAINED_ENV, "0")
    monkeypatch.setattr(config, "_cuda_available", lambda: False)
    assert resolve_profile_name(None) == "cpu"
    assert get_profile().name == "cpu" and get_profile("gpu").train.pretrained is True
    assert TrainConfig(model="mat", profile="gpu").resolved().pretrained is True


def test_train_config_without_a_profile_takes_the_environments(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    monkeypatch.setenv(config.PRETRAINED_ENV, "0")
    resolved = TrainConfig(model="mat").resolved()
    assert resolved.profile == "gpu" and resolved.pretrained is False
    # a Profile object (a notebook's PROFILE) is taken as it is
    assert TrainConfig(model="mat", profile=profile_from_env()).resolved() == resolved


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "laptop")
    with pytest.raises(ValueError, match="unknown profile 'laptop' from DFATTN_PROFILE"):
        profile_from_env()
    with pytest.raises(ValueError, match="unknown profile 'laptop' from parameter"):
        get_profile("laptop")


def test_profiles_are_frozen_and_overridable():
    smoke = PROFILES["smoke"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.train.epochs = 3  # type: ignore[misc]
    changed = get_profile("smoke", epochs=3, backbone=None)
    assert changed.train.epochs == 3 and changed.train.backbone == smoke.train.backbone
    assert smoke.train.epochs == 1 and changed.ablation == smoke.ablation


def test_training_scale_names_train_config_fields():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {f.name for f in dataclasses.fields(TrainScale)} <= fields
    for profile in PROFILES.values():
        assert isinstance(profile.ablation, AblationScale) and isinstance(profile.demo, DemoScale)
        resolved = TrainConfig(model="laanet", profile=profile.name).resolved()
        recipe = {"epochs"} if profile.name == "cpu" else set()  # cpu LAA-Net: 10 epochs (PROFILE_RECIPES)
        for key, value in dataclasses.asdict(profile.train).items():
            if key not in recipe:
                assert getattr(resolved, key) == value, (profile.name, key)


def test_profiles_scale_up():
    s, c, g = (PROFILES[n].train for n in ("smoke", "cpu", "gpu"))
    assert s.image_size < c.image_size < g.image_size
    assert g.image_size == 384 and PROFILES["gpu"].heatmap_size == 96 and g.backbone == "efficientnet_b4"
    assert s.n_train < c.n_train < g.n_train
    demos = [PROFILES[n].demo for n in ("smoke", "cpu", "gpu")]
    assert demos[0].ril_steps < demos[1].ril_steps < demos[2].ril_steps


def test_seed_everything_reproduces():
    rng1 = seed_everything(7)
    a = (rng1.random(3), torch.rand(3), np.random.rand(3))
    rng2 = seed_everything(7)
    b = (rng2.random(3), torch.rand(3), np.random.rand(3))
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_smoke_figures_never_touch_the_book(tmp_path, monkeypatch):
    monkeypatch.setenv("DFATTN_ROOT", str(tmp_path))
    assert config.figures_dir("smoke") == tmp_path / "runs" / "smoke" / "figures"
    assert config.figures_dir("cpu") == tmp_path / "figures"
    assert config.runs_dir(PROFILES["gpu"]).is_dir()


def test_pretrained_can_be_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(config.PRETRAINED_ENV, "0")
    assert profile_from_env("gpu").train.pretrained is False
    assert get_profile("gpu", pretrained=False).train.pretrained is False
    monkeypatch.delenv(config.PRETRAINED_ENV)
    assert profile_from_env("gpu").train.pretrained is True


def test_book_data_trains_on_utkface_where_the_shared_data_has_it(tmp_path, monkeypatch):
    """With a shared-data folder holding utkface/ the cpu profile trains on it at its real-photo
    scale (LAA-Net's own epochs included) and tests on dfdc_faces/; without it, or under the
    smoke profile, on the built-in faces; an explicit data spec wins."""
    from dfattn.config import PROFILES, SHARED_DATA_ENV, book_data
    from dfattn.train import TrainConfig, cpu_has_bf16

    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert book_data(PROFILES["cpu"]).key == "synthetic"  # no utkface/ yet
    (tmp_path / "utkface").mkdir()
    book = book_data(PROFILES["cpu"])
    assert book.real and book.spec == f"folder:{(tmp_path / 'utkface').resolve()}" and book.cross_dataset is None
    assert book.profile.train == PROFILES["cpu"].real and book.profile.name == "cpu"
    (tmp_path / "dfdc_faces").mkdir()
    assert book_data(PROFILES["cpu"]).cross_dataset == tmp_path / "dfdc_faces"
    assert book_data(PROFILES["cpu"]).other_reals is None
    (tmp_path / "real_faces").mkdir()
    assert book_data(PROFILES["cpu"]).other_reals == (tmp_path / "real_faces").resolve()
    # scoring precision: "auto" follows training (bf16 on CUDA); "bf16" also on CPUs that have it
    config = TrainConfig(model="mat", profile=book.profile, data=book.spec).resolved()
    assert config.eval_amp == "auto" and config.eval_autocast("cpu") is None
    assert config.eval_autocast("cuda") == torch.bfloat16
    bf16 = TrainConfig(model="mat", profile=book.profile, data=book.spec, eval_amp="bf16").resolved()
    assert bf16.eval_autocast("cpu") == (torch.bfloat16 if cpu_has_bf16() else None)
    assert TrainConfig(profile="smoke").resolved().eval_autocast("cpu") is None
    assert TrainConfig(profile="smoke", eval_amp="off").resolved().eval_autocast("cuda") is None
    with pytest.raises(ValueError, match="eval_amp"):
        TrainConfig(profile="smoke", eval_amp="fp16").resolved()
    epochs = {m: TrainConfig(model=m, profile=book.profile, data=book.spec).resolved().epochs
              for m in ("laanet", "mat", "baseline")}
    assert epochs == {"laanet": 3, "mat": 2, "baseline": 2}
    synthetic = {m: TrainConfig(model=m, profile="cpu").resolved().epochs for m in ("laanet", "baseline")}
    assert synthetic == {"laanet": 10, "baseline": 8}  # the built-in faces' scale is untouched
    assert book_data(PROFILES["smoke"]).key == "synthetic"
    assert book_data(PROFILES["cpu"], "synthetic").key == "synthetic"
    assert book_data(PROFILES["cpu"], "folder:/x").spec == "folder:/x"
