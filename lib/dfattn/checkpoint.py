"""Checkpoints: a safetensors file with the tensors in its body and everything else as JSON.

A checkpoint holds the model's weights under ``model.*`` and, in the header (key ``dfattn``), the
format version, the detector's architecture (:meth:`~dfattn.models.base.Detector.spec`) and whatever
the writer adds (train config, epoch, metrics). Checkpoints written for resuming also hold the
optimiser state (``optim.*`` tensors, the rest in the header), the scheduler and the RNG states.
Nothing is unpickled when a checkpoint loads.

:func:`load_detector` rebuilds the registered detector a checkpoint names and loads its weights;
the detect, evaluate and explain tools read checkpoints only through it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dfattn.models.base import Detector, detector_from_spec
from dfattn.models.backbone import with_normalization

CHECKPOINT_FORMAT = "dfattn-checkpoint/1"


def jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    meta = {"python": jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
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
        header["detector"] = model.spec() if isinstance(model, Detector) else None
    except ValueError:  # an unregistered detector: weights only
        header["detector"] = None
    if optimizer is not None:
        state = optimizer.state_dict()
        opt_meta: dict[str, Any] = {"param_groups": jsonable(state["param_groups"]), "state": {}}
        for idx, entries in state["state"].items():
            opt_meta["state"][str(idx)] = {}
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
                    opt_meta["state"][str(idx)][key] = "tensor"
                else:
                    opt_meta["state"][str(idx)][key] = jsonable(value)
        header["optimizer"] = opt_meta
    if scheduler is not None:
        header["scheduler"] = jsonable(scheduler.state_dict())  # lr_lambdas: None for functions
    if rng:
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        header["rng"] = rng_meta
    with atomic_path(path) as tmp:  # never a half-written checkpoint
        save_file(tensors, str(tmp), metadata={"dfattn": json.dumps(header)})


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, unique to this process and call, renamed onto ``path``
    when the block succeeds and removed when it fails: readers see the old file or the new one,
    never half of one, and two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class FolderLock:
    """An exclusive, non-blocking lock on an output folder (``fcntl.flock`` on ``folder/.lock``),
    held by one run at a time; released by :meth:`release` or when the process ends (also when it
    is killed, so a crashed run never leaves a stale lock).

    Raises:
        ValueError: another process holds the lock (the message names the folder and its pid).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: is a file, not a folder for the run's outputs")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise ValueError(f"{self.folder}: another run is writing to this folder ({holder}); "
                             f"wait for it or choose another output folder") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, header)`` of a checkpoint (safetensors: no pickle is involved)."""
    path = Path(path)
    if path.is_dir():
        hint = ("give best.safetensors inside it" if (path / "best.safetensors").exists()
                else "give a .safetensors file, e.g. a run folder's best.safetensors")
        raise ValueError(f"{path}: a folder, not a checkpoint file ({hint})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    if "dfattn" not in meta:
        raise ValueError(f"{path}: a safetensors file without a dfattn header (not written by dfattn)")
    try:
        header = json.loads(meta["dfattn"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the checkpoint's dfattn header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the checkpoint's dfattn header is not a JSON object")
    if header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return tensors, header


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu"
                  ) -> tuple[Detector, dict[str, Any]]:
    """A trained detector in eval mode, and the checkpoint's header (train config, metrics...)."""
    tensors, header = read_checkpoint(path)
    if header.get("detector") is None:
        raise ValueError(f"{path}: the checkpoint holds a custom model, not a registered detector")
    try:
        model = detector_from_spec(header["detector"], pretrained=False)
    except (ValueError, TypeError, KeyError, RuntimeError) as err:  # unknown model or backbone, bad fields
        raise ValueError(f"{path}: the header's detector cannot be built: {err}") from err
    state, expected = with_normalization(model, model_state(tensors)), model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    misshapen = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or misshapen:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        problems = [f"{len(keys)} {what} ({some(keys)})" for what, keys in
                    (("missing", missing), ("unexpected", extra), ("of another shape", misshapen)) if keys]
        raise ValueError(f"{path}: the weights do not fit the {header['detector']['name']!r} detector "
                         f"its header describes: {'; '.join(problems)}")
    model.load_state_dict(state)
    return model.to(device).eval(), header


__all__ = ["CHECKPOINT_FORMAT", "FolderLock", "atomic_path", "jsonable", "load_detector", "model_state", "read_checkpoint", "rng_state",
           "save_checkpoint", "set_rng_state", "write_text_atomic"]
