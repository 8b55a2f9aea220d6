"""Profiles resolve from a parameter, then the environment, then auto; seeding reproduces."""

import numpy as np
import pytest
import torch

from dfattn import config
from dfattn.config import PROFILES, get_profile, resolve_profile_name, seed_everything


def test_parameter_beats_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    assert resolve_profile_name("smoke") == "smoke"


def test_environment_beats_auto(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    assert resolve_profile_name(None) == "smoke"
    assert resolve_profile_name("") == "smoke"


def test_auto_follows_cuda(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    monkeypatch.setattr(config, "_cuda_available", lambda: False)
    assert resolve_profile_name() == "cpu"
    monkeypatch.setattr(config, "_cuda_available", lambda: True)
    assert resolve_profile_name("auto") == "gpu"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "laptop")
    with pytest.raises(ValueError, match="unknown profile 'laptop' from DFATTN_PROFILE"):
        resolve_profile_name()


def test_profiles_are_frozen_and_overridable():
    smoke = PROFILES["smoke"]
    with pytest.raises(Exception):
        smoke.epochs = 3  # type: ignore[misc]
    changed = get_profile("smoke", epochs=3, backbone=None)
    assert changed.epochs == 3 and changed.backbone == smoke.backbone
    assert smoke.epochs == 1


def test_profiles_scale_up():
    s, c, g = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    assert s.image_size < c.image_size < g.image_size
    assert g.image_size == 384 and g.heatmap_size == 96 and g.backbone == "efficientnet_b4"
    assert s.n_train_faces < c.n_train_faces < g.n_train_faces


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
    monkeypatch.setenv("DFATTN_PRETRAINED", "0")
    assert get_profile("gpu").pretrained is False
    assert get_profile("gpu", pretrained=True).pretrained is True
    monkeypatch.delenv("DFATTN_PRETRAINED")
    assert get_profile("gpu").pretrained is True
