"""One trainer for LAA-Net, MAT and the plain baseline.

A run is a :class:`TrainConfig`: a profile (``smoke``, ``cpu``, ``gpu``: image size, backbone,
number of faces, batch, epochs), a model with its *recipe* (optimiser, learning rate, schedule,
backbone freeze: :data:`RECIPES`, the papers' settings) and any overrides. :class:`Trainer` then

- makes pseudo-fakes (SBI or BI) of the training faces, new ones every epoch
  (:class:`~dfattn.data.datasets.PseudoFakePairs`);
- trains with Adam/AdamW, optionally wrapped in SAM (:class:`SAM`, as LAA-Net does), under the
  recipe's schedule (LAA-Net: linear warm-up to 4x the base rate over the first quarter, then linear
  decay to zero; MAT's released code: halve every 5 epochs), with the backbone frozen for the first
  epochs if asked, bf16 autocast and channels_last on GPU, optional gradient clipping;
- validates every epoch on pseudo-fakes of *held-out people* and, beside it, on the held-out
  manipulation families made from the same people (SBI validation AUC alone is a poor guide to
  what a detector does on other manipulations: chapter 3);
- writes ``metrics.csv`` (one row per epoch), ``last.safetensors`` (weights, optimiser, scheduler,
  RNG and history: a resumed run ends with the same weights as an uninterrupted one) and
  ``best.safetensors`` (the weights selected on ``select_on``);
- runs on several GPUs (or CPU processes) under ``torchrun``: torch DDP, one shard of every
  global batch per process (:class:`~torch.utils.data.DistributedSampler`), the same global batch
  and the same order as a single process.

Checkpoints are safetensors files: tensors in the body, everything else as JSON in the header;
nothing is unpickled when they load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from dfattn.config import get_device, get_profile, seed_everything
from dfattn.data.datasets import HeldOutFamilies, PseudoFakePairs, collate_pairs, loader_kwargs
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.evaluate import binary_metrics, evaluate_frames, predict
from dfattn.protocol import Materialised
from dfattn.models.detectors import create_detector, detector_config, detector_from_config

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dfattn-checkpoint/1"

# The papers' training recipes (reference notes: laanet.md §4.1, mat.md §5). ``freeze_frac`` is the
# fraction of epochs with a frozen backbone (LAA-Net: 6 of 100); ``warmup_frac`` the warm-up.
RECIPES: dict[str, dict[str, Any]] = {
    # LAA-Net (official config): SAM(rho 0.05) over Adam, lr 5e-5, weight decay 1e-4, warm-up to 4x
    # over 25 % of the run then linear decay to 0, backbone frozen for the first 6 % of epochs.
    "laanet": dict(optimizer="adam", sam=True, lr=5e-5, weight_decay=1e-4, schedule="warmup_linear",
                   warmup_frac=0.25, peak_factor=4.0, freeze_frac=0.06),
    # MAT (paper): Adam, lr 1e-3, weight decay 1e-6. The released code: AdamW 1e-4, halved every 5 epochs.
    "mat": dict(optimizer="adam", sam=False, lr=1e-3, weight_decay=1e-6, schedule="constant",
                freeze_frac=0.0),
    # The plain classifier: Adam at 1e-4 with the LAA-Net schedule shape, no SAM.
    "baseline": dict(optimizer="adam", sam=False, lr=1e-4, weight_decay=1e-4, schedule="warmup_linear",
                     warmup_frac=0.25, peak_factor=4.0, freeze_frac=0.0),
}
# Where a profile departs from the recipe, and why (said again in chapter 3).
PROFILE_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # SAM doubles the cost of a step; on 2 CPU cores the cpu profile spends it on more epochs instead,
    # and a short run needs a higher rate than the 100-epoch schedule. LAA-Net, whose weight-100
    # localisation losses dominate its first epochs, gets 10 epochs to the others' 8: about MAT's
    # training time (a MAT step is two passes, AGDA's included).
    "cpu": {"laanet": dict(sam=False, lr=1e-4, epochs=10), "mat": dict(lr=2e-4), "baseline": dict(lr=1e-4)},
    "smoke": {"laanet": dict(sam=False, lr=1e-3), "mat": dict(lr=1e-3), "baseline": dict(lr=1e-3)},
}


@dataclass
class TrainConfig:
    """Everything a run depends on. ``None`` fields come from the profile or the model's recipe."""

    model: str = "laanet"
    profile: str | None = None  # None: papermill parameter > DFATTN_PROFILE > auto
    model_config: dict[str, Any] = field(default_factory=dict)  # detector config overrides
    data: str = "synthetic"  # see dfattn.data.sources
    blend: str = "sbi"  # pseudo-fakes: "sbi" or "bi"
    image_size: int | None = None
    backbone: str | None = None
    pretrained: bool | None = None
    epochs: int | None = None
    batch_size: int | None = None  # images per global batch (real + fake, so pairs = batch / 2)
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    num_workers: int | None = None
    seed: int = 0
    optimizer: str | None = None  # "adam" | "adamw"
    sam: bool | None = None
    sam_rho: float = 0.05
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None  # "warmup_linear" | "step" | "constant"
    warmup_frac: float | None = None
    peak_factor: float | None = None
    step_epochs: int = 5
    step_gamma: float = 0.5
    freeze_frac: float | None = None
    grad_clip: float | None = None  # max gradient norm (None: no clipping)
    amp: str = "auto"  # "auto" (bf16 on CUDA), "bf16", "off"
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (minutes to compile; pays off on long runs)
    device: str | None = None
    select_on: str = "val_auc"  # "val_auc" or "family_auc" (the mean over held-out families)
    val_families: bool = True  # also score the held-out families on the val people each epoch
    face_size: int | None = None  # side of the source faces (default: max(image size, 160))
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` filled from the profile and the recipes."""
        profile = get_profile(self.profile)
        if self.model not in RECIPES:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(RECIPES)}")
        recipe = {**RECIPES[self.model], **PROFILE_RECIPES.get(profile.name, {}).get(self.model, {})}
        values = dataclasses.asdict(self)
        values["profile"] = profile.name
        from_profile = dict(image_size=profile.image_size, backbone=profile.backbone,
                            pretrained=profile.pretrained, epochs=profile.epochs,
                            batch_size=profile.batch_size, n_train=profile.n_train_faces,
                            n_val=profile.n_val_faces, n_test=profile.n_test_faces,
                            num_workers=profile.num_workers)
        for key, value in {**from_profile, **recipe}.items():
            if values.get(key) is None:
                values[key] = value
        if values["face_size"] is None:
            values["face_size"] = max(values["image_size"], 160)
        out = TrainConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        if self.blend not in ("sbi", "bi"):
            raise ValueError(f"blend must be 'sbi' or 'bi', got {self.blend!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("warmup_linear", "step", "constant"):
            raise ValueError(f"schedule must be warmup_linear, step or constant, got {self.schedule!r}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size counts images (real + fake pairs): even and >= 2, got {self.batch_size}")
        if self.select_on not in ("val_auc", "family_auc"):
            raise ValueError(f"select_on must be 'val_auc' or 'family_auc', got {self.select_on!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")

    def detector_kwargs(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "pretrained": self.pretrained, **self.model_config}

    @property
    def freeze_epochs(self) -> int:
        return int(round(self.freeze_frac * self.epochs))


# ------------------------------------------------------------------------------------------------
# SAM (Foret et al., ICLR 2021) and the learning-rate schedules
# ------------------------------------------------------------------------------------------------


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation around a base optimiser (Foret et al. 2021, Algorithm 1).

    ``first_step`` moves every weight to ``w + rho * g / ||g||`` (the worst case in a ball of radius
    ``rho``, to first order); the caller recomputes the loss and gradient there; ``second_step``
    restores ``w`` and lets the base optimiser step with that gradient. The state dict is the base
    optimiser's (the perturbation lives only within a step).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05):
        if rho <= 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base, self.rho = base, rho
        self.param_groups = base.param_groups  # shared: the scheduler's lr reaches the base
        self.defaults = base.defaults
        self.state = base.state
        self._perturbation: dict[nn.Parameter, Tensor] = {}

    @torch.no_grad()
    def first_step(self) -> None:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (norm + 1e-12)
        for p in params:
            e = p.grad * scale
            p.add_(e)
            self._perturbation[p] = e
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self) -> None:
        for p, e in self._perturbation.items():
            p.sub_(e)
        self._perturbation.clear()
        self.base.step()

    def step(self, closure=None):  # pragma: no cover - the trainer calls first/second_step
        raise RuntimeError("SAM needs two gradients per step: call first_step, backward, second_step")

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base rate at optimiser step ``t`` (for :class:`~torch.optim.lr_scheduler.LambdaLR`).

    ``warmup_linear`` (LAA-Net's ``LinearDecayLR``, per step instead of per epoch): from 1 to
    ``peak_factor`` over the first ``warmup_frac`` of the run, then linearly to 0 at the end;
    ``step``: ``step_gamma ** (epoch // step_epochs)``; ``constant``: 1.
    """
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "constant":
        return lambda t: 1.0
    if config.schedule == "step":
        return lambda t: config.step_gamma ** ((t // steps_per_epoch) // config.step_epochs)
    warm = int(config.warmup_frac * total)
    peak = config.peak_factor

    def factor(t: int) -> float:
        if t < warm:
            return 1.0 + (peak - 1.0) * t / warm
        return peak * max(0.0, (total - t) / max(1, total - warm))

    return factor


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics untouched inside the block (SAM's second pass sees the batch
    again at perturbed weights: its statistics should not count twice)."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


# ------------------------------------------------------------------------------------------------
# Checkpoints: safetensors body + JSON header
# ------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    meta = {"python": _jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, rng: bool = False) -> None:
    """Weights (and, for resuming, optimiser, scheduler and RNG state) in one safetensors file.

    ``meta`` (JSON-serialisable) goes into the header with the detector's architecture, so
    :func:`load_detector` can rebuild the model without the training code's arguments.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    header: dict[str, Any] = {"format": CHECKPOINT_FORMAT, **meta}
    try:
        header["detector"] = detector_config(model)
    except ValueError:  # a custom module (tests): weights only
        header["detector"] = None
    if optimizer is not None:
        state = optimizer.state_dict()
        opt_meta: dict[str, Any] = {"param_groups": _jsonable(state["param_groups"]), "state": {}}
        for idx, entries in state["state"].items():
            opt_meta["state"][str(idx)] = {}
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
                    opt_meta["state"][str(idx)][key] = "tensor"
                else:
                    opt_meta["state"][str(idx)][key] = _jsonable(value)
        header["optimizer"] = opt_meta
    if scheduler is not None:
        header["scheduler"] = _jsonable(scheduler.state_dict())  # lr_lambdas: None for functions
    if rng:
        rng_tensors, rng_meta = _rng_state()
        tensors.update(rng_tensors)
        header["rng"] = rng_meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"dfattn": json.dumps(header)})
    os.replace(tmp, path)  # never a half-written checkpoint


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, header)`` of a checkpoint (safetensors: no pickle is involved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    if "dfattn" not in meta:
        raise ValueError(f"{path}: a safetensors file without a dfattn header (not written by dfattn.train)")
    header = json.loads(meta["dfattn"])
    if header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return tensors, header


def _model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """A trained detector in eval mode, and the checkpoint's header (train config, metrics...)."""
    tensors, header = read_checkpoint(path)
    if header.get("detector") is None:
        raise ValueError(f"{path}: the checkpoint holds a custom model, not a registered detector")
    model = detector_from_config(header["detector"], pretrained=False)
    model.load_state_dict(_model_state(tensors))
    return model.to(device).eval(), header


# ------------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_hint: str | None) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device_hint or "cuda").startswith("cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class _LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``, so DDP's hooks see the loss computation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.model.loss(batch)


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------


COMPILE_OPTIONS: dict[str, Any] = {}  # keyword arguments of torch.compile (tests swap the backend)


def compile_modules(model: nn.Module, **options: Any) -> nn.Module:
    """``torch.compile`` each direct child of ``model`` that has parameters, *in place*
    (:meth:`torch.nn.Module.compile`): the detectors' entry points (``fake_logit``, ``loss``) call
    their children, not always ``forward``, and in-place compilation keeps the state-dict keys, so
    checkpoints of compiled and eager runs are interchangeable. On 2 CPU cores the fused backbone
    trains 10-25 % faster once compiled (``benchmarks/bench_laanet.py --compile all``); compiling
    takes minutes, so it pays off on long runs only."""
    for child in model.children():
        if next(child.parameters(), None) is not None:
            child.compile(**options)
    return model


class Trainer:
    """Train one detector for one :class:`TrainConfig`, writing to ``out_dir`` (resumable).

    Args:
        config: the run (resolved here against the profile and recipe).
        out_dir: where ``metrics.csv``, ``last.safetensors``, ``best.safetensors`` and
            ``config.json`` go. If ``last.safetensors`` exists, training resumes from it.
        model: a custom module with the detector interface (tests); default: the registered one.
        faces: ``{"train", "val", ...}`` face sources (default: from ``config.data``).
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, model: nn.Module | None = None,
                 faces: dict[str, Any] | None = None):
        self.config = c = config.resolved()
        self.out_dir = Path(out_dir)
        self.dist = init_distributed(c.device)
        if c.batch_size % (2 * self.dist.world):
            raise ValueError(f"batch_size {c.batch_size} must split into pairs over {self.dist.world} processes")
        self.device = (torch.device(f"cuda:{self.dist.local_rank}") if self.dist.world > 1
                       and torch.cuda.is_available() else get_device(c.device))
        seed_everything(c.seed)
        self.model = (model if model is not None else create_detector(c.model, **c.detector_kwargs()))
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if c.compile:
            compile_modules(self.model, **COMPILE_OPTIONS)
        self.amp = torch.bfloat16 if (c.amp == "bf16" or (c.amp == "auto" and self.device.type == "cuda")) \
            else None

        faces = faces or face_splits(c.data, SplitSizes(c.n_train, c.n_val, c.n_test), c.face_size, c.seed)
        self.train_set = PseudoFakePairs(faces["train"], c.image_size, c.blend, train=True, seed=c.seed)
        pairs_per_rank = c.batch_size // 2 // self.dist.world
        if len(self.train_set) < pairs_per_rank * self.dist.world:
            raise ValueError(f"{len(self.train_set)} training faces make fewer pairs than one batch "
                             f"({c.batch_size // 2} pairs)")
        self.sampler = DistributedSampler(self.train_set, self.dist.world, self.dist.rank, shuffle=True,
                                          seed=c.seed, drop_last=True)
        self.loader = DataLoader(self.train_set, batch_size=pairs_per_rank, sampler=self.sampler,
                                 collate_fn=collate_pairs, drop_last=True, **loader_kwargs(c.num_workers))
        self.val_faces = faces["val"]
        self._val_sets: dict[str, Dataset] | None = None

        self.optimizer = self._optimizer()
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c, self.steps_per_epoch))
        self.epoch = 0  # the next epoch to train
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if (self.out_dir / "last.safetensors").exists():
            self._resume(self.out_dir / "last.safetensors")

    # -- setup ------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters()]
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        base = cls(params, lr=c.lr, weight_decay=c.weight_decay)
        return SAM(base, c.sam_rho) if c.sam else base

    def _resume(self, path: Path) -> None:
        tensors, header = read_checkpoint(path)
        saved = header["train_config"]
        mine = _jsonable(dataclasses.asdict(self.config))
        changed = {k for k in mine if k not in ("epochs", "progress", "num_workers", "device", "compile")
                   and mine[k] != saved.get(k)}
        if changed:
            raise ValueError(f"{path}: cannot resume, the run's config differs in {sorted(changed)} "
                             f"(use another out_dir or delete the checkpoint)")
        self.model.load_state_dict(_model_state(tensors))
        opt = header["optimizer"]
        state = {"param_groups": opt["param_groups"], "state": {}}
        for idx, entries in opt["state"].items():
            state["state"][int(idx)] = {k: (tensors[f"optim.{idx}.{k}"] if v == "tensor" else v)
                                        for k, v in entries.items()}
        self.optimizer.load_state_dict(state)
        self.scheduler.load_state_dict(header["scheduler"])
        _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, header["rng"])
        self.epoch = header["epoch"] + 1
        self.history = header["history"]
        self.best = header.get("best")
        if self.dist.main:
            log.info("resumed %s at epoch %d", path, self.epoch)

    def val_sets(self) -> dict[str, Dataset]:
        """Pseudo-fakes of the val people (fixed) and, if asked, the held-out families on them."""
        if self._val_sets is None:
            c = self.config
            sets = {"val": Materialised(PseudoFakePairs(self.val_faces, c.image_size, c.blend, train=False,
                                                        seed=c.seed + 1))}
            if c.val_families:
                benchmark = HeldOutFamilies(self.val_faces, c.image_size, seed=c.seed + 1)
                self.families = benchmark.families
                sets["family"] = Materialised(benchmark)
            self._val_sets = sets
        return self._val_sets

    # -- one epoch --------------------------------------------------------------------------------

    def _set_trainable(self, epoch: int) -> None:
        frozen = epoch < self.config.freeze_epochs
        backbone = getattr(self.model, "backbone", None)
        if backbone is not None:
            backbone.requires_grad_(not frozen)

    def _loss(self, step_fn: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()
        with ctx:
            return step_fn(batch)

    def _clip(self) -> None:
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        c = self.config
        self.model.train()
        self.model.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self._set_trainable(epoch)
        step_fn: nn.Module = _LossModule(self.model)
        if self.dist.world > 1:  # rebuilt each epoch: the set of trainable parameters may change
            step_fn = nn.parallel.DistributedDataParallel(step_fn, find_unused_parameters=True)
        sums: dict[str, float] = {}
        n_images, start = 0, time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
                   disable=not (c.progress and self.dist.main))
        for batch in bar:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            if c.channels_last:
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            loss, parts = self._loss(step_fn, batch)
            loss.backward()
            self._clip()
            if isinstance(self.optimizer, SAM):
                self.optimizer.first_step()
                with frozen_bn_statistics(self.model):
                    self._loss(step_fn, batch)[0].backward()
                self._clip()
                self.optimizer.second_step()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            n = len(batch["image"])
            n_images += n
            for key, value in {"loss": loss.detach(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{n_images / (time.perf_counter() - start):.1f}")
        elapsed = time.perf_counter() - start
        stats = {f"train_{k}": v / max(1, n_images) for k, v in sums.items()}
        stats["train_img_per_s"] = n_images * self.dist.world / elapsed
        stats["train_seconds"] = elapsed
        return stats

    def validate(self) -> dict[str, float]:
        """AUC and AP on the val pseudo-fakes; AUC of each held-out family against the val reals."""
        out: dict[str, float] = {}
        for name, dataset in self.val_sets().items():
            df = predict(self.model, dataset, batch_size=max(2, self.config.batch_size), progress=False,
                         amp=self.amp, channels_last=self.config.channels_last)
            if name == "val":
                metrics = binary_metrics(df["label"], df["prob"])
                out.update({f"val_{k}": metrics[k] for k in ("auc", "ap", "acc")})
                continue
            by_family = evaluate_frames(df, "family", pool_reals=True)  # each family against the reals
            for k, family in enumerate(self.families, start=1):
                out[f"family_auc_{family}"] = float(by_family.loc[k, "auc"])
            out["family_auc"] = float(np.mean([out[f"family_auc_{f}"] for f in self.families]))
        return out

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> pd.DataFrame:
        """Train from the current epoch to ``config.epochs`` (or only ``stop_after`` epochs, to
        simulate an interruption); returns the per-epoch metrics."""
        c = self.config
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(_jsonable(dataclasses.asdict(c)), indent=2))
        done = 0
        while self.epoch < c.epochs and (stop_after is None or done < stop_after):
            epoch = self.epoch
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            if self.dist.main:
                row.update(self.validate())
                score = row.get(c.select_on, float("nan"))
                if self.best is None or score > self.best["score"]:
                    self.best = {"epoch": epoch + 1, "score": score, "metric": c.select_on}
                    save_checkpoint(self.out_dir / "best.safetensors", self.model,
                                    {"train_config": _jsonable(dataclasses.asdict(c)), "epoch": epoch,
                                     "metrics": _jsonable(row)})
                self.history.append(_jsonable(row))
                self.epoch = epoch + 1
                save_checkpoint(self.out_dir / "last.safetensors", self.model,
                                {"train_config": _jsonable(dataclasses.asdict(c)), "epoch": epoch,
                                 "history": self.history, "best": self.best},
                                self.optimizer, self.scheduler, rng=True)
                pd.DataFrame(self.history).to_csv(self.out_dir / "metrics.csv", index=False)
                log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()
                                                     if isinstance(v, float)})
            else:
                self.epoch = epoch + 1
            if self.dist.world > 1:
                dist.barrier()
            done += 1
        return pd.DataFrame(self.history)


def train(config: TrainConfig, out_dir: str | os.PathLike, **kwargs: Any) -> tuple[nn.Module, pd.DataFrame]:
    """Train-or-load: a finished run in ``out_dir`` (same config) is read back, not retrained.

    Returns the *selected* model (``best.safetensors``, eval mode) and the per-epoch metrics.
    """
    trainer = Trainer(config, out_dir, **kwargs)
    history = trainer.fit()
    model = trainer.model
    if trainer.dist.main and (Path(out_dir) / "best.safetensors").exists():
        tensors, _ = read_checkpoint(Path(out_dir) / "best.safetensors")
        model.load_state_dict(_model_state(tensors))
    return model.eval(), history
