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
- writes ``metrics.csv`` (one row per epoch; with ``tensorboard=True`` also as TensorBoard scalars
  in ``tensorboard/``), ``last.safetensors`` (weights, optimiser, scheduler,
  RNG and history: a resumed run ends with the same weights as an uninterrupted one) and
  ``best.safetensors`` (the weights selected on ``select_on``, with the operating point chosen on
  that epoch's validation pseudo-fakes: :func:`~dfattn.evaluate.choose_operating_point`);
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
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from dfattn.config import Profile, get_device, get_profile, profile_from_env, seed_everything
from dfattn.data.datasets import HeldOutFamilies, PseudoFakePairs, collate_pairs, loader_kwargs
from dfattn.data.sources import SplitSizes, face_splits
from dfattn.data.detectors import check_detector
from dfattn.data.targets import check_targets_variant
from dfattn.evaluate import OPERATING_RULES, binary_metrics, choose_operating_point, evaluate_frames, predict
from dfattn.protocol import Materialised
from dfattn.checkpoint import (FolderLock, jsonable, model_state, read_checkpoint, save_checkpoint, set_rng_state,
                               write_text_atomic)
from dfattn.distributed import LossModule, init_distributed
from dfattn.models.backbone import with_normalization
from dfattn.models.base import Detector, config_fields, create_detector, detector_class
from dfattn.optim import SAM, frozen_bn_statistics, lr_factor

log = logging.getLogger(__name__)

# The papers' training recipes (LAA-Net: its released training config, paper §4.1; MAT: paper §4.1).
# ``freeze_frac`` is the fraction of epochs with a frozen backbone (LAA-Net: 6 of 100);
# ``warmup_frac`` the warm-up. A registered detector without a recipe of its own trains with
# :data:`DEFAULT_RECIPE`.
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
DEFAULT_RECIPE: dict[str, Any] = RECIPES["baseline"]
# Where a profile departs from the recipe, and why (said again in chapter 3).
PROFILE_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # SAM doubles the cost of a step; on 2 CPU cores the cpu profile spends it on more epochs instead,
    # and a short run needs a higher rate than the 100-epoch schedule. LAA-Net, whose weight-100
    # localisation losses dominate its first epochs, gets 10 epochs to the others' 8: about MAT's
    # training time (a MAT step is two passes, AGDA's included).
    "cpu": {"laanet": dict(sam=False, lr=1e-4, epochs=10), "mat": dict(lr=2e-4), "baseline": dict(lr=1e-4)},
    "smoke": {"laanet": dict(sam=False, lr=1e-3), "mat": dict(lr=1e-3), "baseline": dict(lr=1e-3)},
}


MIN_IMAGE_SIZE = 32  # the smallest input the backbones take (their deepest stage is 1/32 of it)


@dataclass
class TrainConfig:
    """Everything a run depends on. ``None`` fields come from the profile or the model's recipe."""

    model: str = "laanet"
    # A Profile, its name, or None: the profile from the environment (config.profile_from_env:
    # $DFATTN_PROFILE > auto, $DFATTN_PRETRAINED). Resolved, the name.
    profile: str | Profile | None = None
    model_config: dict[str, Any] = field(default_factory=dict)  # detector config overrides
    data: str = "synthetic"  # see dfattn.data.sources
    face_detector: str = "dlib"  # finds the faces of folder: data ("dlib", "mtcnn", "mediapipe")
    blend: str = "sbi"  # pseudo-fakes: "sbi" or "bi"
    targets: str = "paper"  # LAA-Net's heatmap targets: "paper" or "official" (data.targets)
    geometric_aug: bool = False  # SBI margin crop + LAA-Net flip, crop/scale/erase (datasets.GeometricAugmentation)
    # image_size ... num_workers: None takes the profile's (config.TrainScale, same field names).
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
    # Autocast of validation and scoring (chapters 4 and 5 and dfattn-evaluate read it from the run):
    # "auto" (as training), "bf16" (also on a CPU with native bf16: AVX-512 BF16 / AMX), "off";
    # None: the profile's (benchmarks/check_bf16_inference.py measures bf16 against float32).
    eval_amp: str | None = None
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (minutes to compile; pays off on long runs)
    device: str | None = None
    select_on: str = "val_auc"  # "val_auc" or "family_auc" (the mean over held-out families)
    val_families: bool = True  # also score the held-out families on the val people each epoch
    # The operating point stored with best.safetensors, chosen on the val pseudo-fakes of the
    # selected epoch (evaluate.choose_operating_point): "balanced_acc" or "fpr" (at most target_fpr).
    operating_rule: str = "balanced_acc"
    target_fpr: float = 0.05
    temperature_scaling: bool = False  # also fit a temperature on the same validation logits
    face_size: int | None = None  # side of the source faces (default: max(image size, 160))
    progress: bool = True
    tensorboard: bool = False  # also log each metrics.csv row as TensorBoard scalars in <out>/tensorboard/

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` filled from the profile and the recipes."""
        if isinstance(self.profile, Profile):
            profile = self.profile
        else:
            profile = profile_from_env() if self.profile is None else get_profile(self.profile)
        detector_class(self.model)  # a clear error for an unknown model
        recipe = {**RECIPES.get(self.model, DEFAULT_RECIPE),
                  **PROFILE_RECIPES.get(profile.name, {}).get(self.model, {}),
                  **dict(dict(profile.recipes).get(self.model, ()))}  # the scale's own (real photos)
        values = dataclasses.asdict(self)
        values["profile"] = profile.name
        for key, value in {**dataclasses.asdict(profile.train), **recipe}.items():
            if values.get(key) is None:
                values[key] = value
        if values["face_size"] is None:
            values["face_size"] = max(values["image_size"], 160)
        out = TrainConfig(**values)
        out.validate()
        return out

    def eval_autocast(self, device: torch.device | str | None = None) -> torch.dtype | None:
        """The autocast dtype of this run's validation and scoring on ``device`` (default: the
        run's): ``eval_amp`` "auto" follows ``amp``; "bf16" falls back to float32 on a CPU
        without native bf16, where emulating it would be slower than float32."""
        device = torch.device(device or self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return scoring_autocast(self.amp, self.eval_amp, device)

    def validate(self) -> None:
        if self.blend not in ("sbi", "bi"):
            raise ValueError(f"blend must be 'sbi' or 'bi', got {self.blend!r}")
        check_targets_variant(self.targets)
        check_detector(self.face_detector)
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("warmup_linear", "step", "constant"):
            raise ValueError(f"schedule must be warmup_linear, step or constant, got {self.schedule!r}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size counts images (real + fake pairs): even and >= 2, got {self.batch_size}")
        if self.select_on not in ("val_auc", "family_auc"):
            raise ValueError(f"select_on must be 'val_auc' or 'family_auc', got {self.select_on!r}")
        if self.operating_rule not in OPERATING_RULES:
            raise ValueError(f"operating_rule must be one of {OPERATING_RULES}, got {self.operating_rule!r}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        for name in ("amp", "eval_amp"):
            if getattr(self, name) not in ("auto", "bf16", "off"):
                raise ValueError(f"{name} must be 'auto', 'bf16' or 'off', got {getattr(self, name)!r}")
        for name in ("epochs", "n_train", "n_val", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size < MIN_IMAGE_SIZE:  # the backbones downsample 32x
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {self.image_size}")
        if self.backbone is not None and "backbone" in config_fields(self.model):
            import timm

            if not timm.is_model(self.backbone):
                raise ValueError(f"unknown backbone {self.backbone!r}: not a timm model name "
                                 f"(e.g. efficientnet_lite0, efficientnet_b4; timm.list_models() has them all)")
        if self.device:
            get_device(self.device)  # a ValueError for a bad name or CUDA without a GPU

    def detector_kwargs(self) -> dict[str, Any]:
        """The detector's config: the run's backbone and weights (where its config has those fields)
        and ``model_config``."""
        shared = {k: v for k, v in (("backbone", self.backbone), ("pretrained", self.pretrained))
                  if k in config_fields(self.model)}
        return {**shared, **self.model_config}

    @property
    def freeze_epochs(self) -> int:
        return int(round(self.freeze_frac * self.epochs))


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------


COMPILE_OPTIONS: dict[str, Any] = {}  # keyword arguments of torch.compile (tests swap the backend)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX, as oneDNN sees it)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(setting: str, device: torch.device | str) -> torch.dtype | None:
    """``torch.bfloat16`` or ``None`` for an ``amp`` setting: "auto" is bf16 on CUDA only; "bf16"
    is bf16 on CUDA and on CPUs with native bf16 (else ``None``, logged once); "off" is ``None``."""
    device = torch.device(device)
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and not cpu_has_bf16():
        if not getattr(autocast_dtype, "_warned", False):
            log.warning("this CPU has no native bf16: computing in float32 instead")
            autocast_dtype._warned = True  # type: ignore[attr-defined]
        return None
    return torch.bfloat16


def scoring_autocast(amp: str, eval_amp: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a run's validation and scoring: its ``eval_amp``, where "auto" (and
    ``None``: a run older than that field) follows its training ``amp``."""
    return autocast_dtype(amp if eval_amp in (None, "auto") else eval_amp, device)


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
        model: a :class:`~dfattn.models.base.Detector` to train instead of ``config.model``'s.
        faces: ``{"train", "val", ...}`` face sources (default: from ``config.data``).
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, model: Detector | None = None,
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
        if not isinstance(self.model, Detector):
            raise TypeError(f"the trainer trains Detectors (dfattn.models.base), got {type(self.model).__name__}")
        self.model.frozen_backbone_epochs = c.freeze_epochs
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if c.compile:
            compile_modules(self.model, **COMPILE_OPTIONS)
        self.amp = torch.bfloat16 if (c.amp == "bf16" or (c.amp == "auto" and self.device.type == "cuda")) \
            else None
        self.eval_amp = c.eval_autocast(self.device)

        faces = faces or face_splits(c.data, SplitSizes(c.n_train, c.n_val, c.n_test), c.face_size, c.seed,
                                     detector=c.face_detector)
        self.train_set = PseudoFakePairs(faces["train"], c.image_size, c.blend, train=True, seed=c.seed,
                                         targets=c.targets, geometric=c.geometric_aug)
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
        self._val_frame: pd.DataFrame | None = None  # the last validation's "val" predictions

        self.optimizer = self._optimizer()
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(c, self.steps_per_epoch))
        self.epoch = 0  # the next epoch to train
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        last = self.out_dir / "last.safetensors"
        self._last_seen = last.stat().st_mtime_ns if last.exists() else None  # fit checks it again
        if last.exists():
            try:
                self._resume(last)
            except KeyError as err:
                raise ValueError(f"{last}: not a resumable checkpoint (its header lacks {err})") from err

    # -- setup ------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters()]
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        base = cls(params, lr=c.lr, weight_decay=c.weight_decay)
        return SAM(base, c.sam_rho) if c.sam else base

    def _resume(self, path: Path) -> None:
        try:
            self._load_resume_state(path)
        except (KeyError, RuntimeError, TypeError) as err:  # a damaged or foreign last.safetensors
            reason = f"no {err} in it" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
            raise ValueError(f"{path}: cannot resume from this checkpoint ({reason}); use another "
                             f"output folder or delete it") from None

    def _load_resume_state(self, path: Path) -> None:
        tensors, header = read_checkpoint(path)
        saved = header["train_config"]
        mine = jsonable(dataclasses.asdict(self.config))
        defaults = jsonable(dataclasses.asdict(TrainConfig()))  # a field newer than the checkpoint: its default
        changed = {k for k in mine if k not in ("epochs", "progress", "num_workers", "device", "compile",
                                                "tensorboard")
                   and mine[k] != saved.get(k, defaults.get(k))}
        if changed:
            raise ValueError(f"{path}: cannot resume, the run's config differs in {sorted(changed)} "
                             f"(use another out_dir or delete the checkpoint)")
        self.model.load_state_dict(with_normalization(self.model, model_state(tensors)))
        opt = header["optimizer"]
        state = {"param_groups": opt["param_groups"], "state": {}}
        for idx, entries in opt["state"].items():
            state["state"][int(idx)] = {k: (tensors[f"optim.{idx}.{k}"] if v == "tensor" else v)
                                        for k, v in entries.items()}
        self.optimizer.load_state_dict(state)
        self.scheduler.load_state_dict(header["scheduler"])
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, header["rng"])
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
                                                        seed=c.seed + 1, targets=c.targets))}
            if c.val_families:
                benchmark = HeldOutFamilies(self.val_faces, c.image_size, seed=c.seed + 1)
                self.families = benchmark.families
                sets["family"] = Materialised(benchmark)
            self._val_sets = sets
        return self._val_sets

    # -- one epoch --------------------------------------------------------------------------------

    def _set_trainable(self, epoch: int) -> None:
        """Only the submodules the detector names for this epoch get gradients."""
        trainable = set(self.model.trainable(epoch))
        unknown = trainable - {name for name, _ in self.model.named_children()}
        if unknown:
            raise ValueError(f"{type(self.model).__name__}.trainable({epoch}) names no submodules {sorted(unknown)}")
        for name, child in self.model.named_children():
            child.requires_grad_(name in trainable)

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
        step_fn: nn.Module = LossModule(self.model)
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
                         amp=self.eval_amp, channels_last=self.config.channels_last)
            if name == "val":
                self._val_frame = df  # the operating point of a new best epoch is chosen on it
                metrics = binary_metrics(df["label"], df["prob"])
                out.update({f"val_{k}": metrics[k] for k in ("auc", "ap", "acc")})
                continue
            by_family = evaluate_frames(df, "family", pool_reals=True)  # each family against the reals
            for k, family in enumerate(self.families, start=1):
                out[f"family_auc_{family}"] = float(by_family.loc[k, "auc"])
            out["family_auc"] = float(np.mean([out[f"family_auc_{f}"] for f in self.families]))
        return out

    def operating_point(self):
        """The decision threshold on the last validation's pseudo-fakes (the config's rule)."""
        c, df = self.config, self._val_frame
        return choose_operating_point(df["label"], df["logit"], c.operating_rule, c.target_fpr,
                                      c.temperature_scaling,
                                      on=f"the val pseudo-fakes ({len(self.val_faces)} held-out people)")

    # -- the loop ---------------------------------------------------------------------------------

    _tensorboard: Any = None  # the SummaryWriter of config.tensorboard, opened at the first epoch logged

    def _log_tensorboard(self, row: dict[str, Any]) -> None:
        """With ``config.tensorboard``: the epoch's ``metrics.csv`` row as scalars at step = its
        ``epoch`` column, in ``<out>/tensorboard/`` (tags: :func:`tensorboard_tag`), flushed at once."""
        if not self.config.tensorboard:
            return
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self._tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
        for column, value in row.items():
            if column != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tensorboard.add_scalar(tensorboard_tag(column), value, global_step=row["epoch"])
        self._tensorboard.flush()

    def _close_tensorboard(self) -> None:
        writer, self._tensorboard = self._tensorboard, None
        if writer is not None:
            writer.close()

    def fit(self, stop_after: int | None = None) -> pd.DataFrame:
        """Train from the current epoch to ``config.epochs`` (or only ``stop_after`` epochs, to
        simulate an interruption); returns the per-epoch metrics."""
        # One run at a time per folder: a second run into a busy folder refuses (ValueError).
        with FolderLock(self.out_dir) if self.dist.main else nullcontext():
            last = self.out_dir / "last.safetensors"
            if self.dist.main and (last.stat().st_mtime_ns if last.exists() else None) != self._last_seen:
                raise ValueError(f"{self.out_dir}: another run wrote {last.name} after this one read the "
                                 f"folder; start this run again to resume from it")
            try:
                return self._fit(stop_after)
            finally:
                self._close_tensorboard()  # also after an exception: the events so far stay readable

    def _fit(self, stop_after: int | None) -> pd.DataFrame:
        c = self.config
        if self.epoch >= c.epochs:  # a finished run (train-or-load): nothing is trained or written
            if self.epoch > c.epochs and self.dist.main:
                log.warning("%s holds %d trained epochs, more than the %d asked for: nothing to do "
                            "(best.safetensors stays the one selected over %d epochs)",
                            self.out_dir, self.epoch, c.epochs, self.epoch)
            return pd.DataFrame(self.history)
        if self.dist.main:
            write_text_atomic(self.out_dir / "config.json", json.dumps(jsonable(dataclasses.asdict(c)), indent=2))
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
                                    {"train_config": jsonable(dataclasses.asdict(c)), "epoch": epoch,
                                     "metrics": jsonable(row),
                                     "operating_point": jsonable(self.operating_point().to_dict())})
                self.history.append(jsonable(row))
                self.epoch = epoch + 1
                save_checkpoint(self.out_dir / "last.safetensors", self.model,
                                {"train_config": jsonable(dataclasses.asdict(c)), "epoch": epoch,
                                 "history": self.history, "best": self.best},
                                self.optimizer, self.scheduler, rng=True)
                self._last_seen = (self.out_dir / "last.safetensors").stat().st_mtime_ns
                write_text_atomic(self.out_dir / "metrics.csv", pd.DataFrame(self.history).to_csv(index=False))
                self._log_tensorboard(self.history[-1])
                log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()
                                                     if isinstance(v, float)})
            else:
                self.epoch = epoch + 1
            if self.dist.world > 1:
                dist.barrier()
            done += 1
        return pd.DataFrame(self.history)


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a ``metrics.csv`` column: the ``train_``, ``val_`` and ``family_``
    prefixes become groups (``train_loss`` -> ``train/loss``, ``family_auc_face_swap`` ->
    ``family/auc_face_swap``); other columns (``lr``) keep their name."""
    prefix, sep, rest = column.partition("_")
    return f"{prefix}/{rest}" if sep and rest and prefix in ("train", "val", "family") else column


def train(config: TrainConfig, out_dir: str | os.PathLike, **kwargs: Any) -> tuple[Detector, pd.DataFrame]:
    """Train-or-load: a finished run in ``out_dir`` (same config) is read back, not retrained.

    Returns the *selected* model (``best.safetensors``, eval mode) and the per-epoch metrics.
    """
    trainer = Trainer(config, out_dir, **kwargs)
    history = trainer.fit()
    model = trainer.model
    if trainer.dist.main and (Path(out_dir) / "best.safetensors").exists():
        tensors, _ = read_checkpoint(Path(out_dir) / "best.safetensors")
        model.load_state_dict(model_state(tensors))
    return model.eval(), history
