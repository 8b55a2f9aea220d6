"""ONNX export of a detector's inference path, checked against PyTorch before it is written.

The graph is what :func:`dfattn.evaluate.fake_logit` computes, nothing else: input ``image``, a
``(batch, 3, S, S)`` float32 tensor of RGB faces in [0, 1] at the checkpoint's input size ``S``;
output ``logit``, ``(batch,)`` float32, the logit of P(fake) (``P(fake) = sigmoid(logit)``), with
``flip_tta=True`` the mean of the logits of each image and of its horizontal flip. The batch axis is
dynamic. The backbone's normalisation (``(image - mean) / std``) is *inside* the graph, as it is
inside the PyTorch model, so a runtime feeds plain RGB in [0, 1]; the ONNX file's
``metadata_props`` say so, with the input size, the detector's architecture and the dfattn version.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` and onnxscript's
translation, opset 18 by default). The older TorchScript exporter (``dynamo=False``) writes the
baseline and LAA-Net, but not MAT: its texture block averages the shallow features over the
attention grid (``adaptive_avg_pool2d`` to the attention map's size), which that exporter refuses
once the batch axis is dynamic ("output_size is not constant"). The dynamo exporter handles all
three, given one preparation (:func:`_inference_copy`): Python-level state kept in integer scalar
buffers (MAT's ``epoch``, which selects its stage's classifier) is read as a number on the
inference path, and ``torch.export`` cannot turn a traced buffer into a number; on a copy of the
model those buffers become plain integers, fixed into the graph at their checkpoint values.

Before anything is written, :func:`export_onnx` runs the graph with onnxruntime (CPU) on random
images at two batch sizes and compares the logits with PyTorch's; the file appears (atomically)
only when the largest difference is within ``tolerance`` and :mod:`onnx.checker` accepts it.
In Python::

    from dfattn.checkpoint import load_detector
    from dfattn.export import export_onnx
    model, header = load_detector("runs/laanet/best.safetensors")
    report = export_onnx(model, "laanet.onnx", header["train_config"]["image_size"])

or, from the shell, ``dfattn-export runs/laanet/best.safetensors --out laanet.onnx``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

import dfattn
from dfattn.checkpoint import atomic_path
from dfattn.evaluate import evaluating, fake_logit
from dfattn.models.backbone import Backbone
from dfattn.models.base import Detector

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "logit"
DEFAULT_OPSET = 18  # the opset torch.onnx's dynamo exporter (its onnxscript library) writes natively
MIN_OPSET = 18
TOLERANCE = 1e-4  # largest |logit difference| between onnxruntime and PyTorch that export accepts
CHECK_BATCHES = (1, 3)  # batch sizes of the check (the export's example batch is 2)


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch."""

    path: Path
    image_size: int
    opset: int
    flip_tta: bool
    max_abs_diff: float  # largest |onnxruntime logit - PyTorch logit| over the check batches
    metadata: dict[str, str] = field(default_factory=dict)


class InferenceGraph(nn.Module):
    """The module that is exported: ``image -> evaluate.fake_logit(detector, image, flip_tta)``."""

    def __init__(self, detector: Detector, flip_tta: bool = False):
        super().__init__()
        self.detector = detector
        self.flip_tta = flip_tta

    def forward(self, image: Tensor) -> Tensor:
        return fake_logit(self.detector, image, self.flip_tta)


def _inference_copy(model: Detector) -> Detector:
    """A CPU float32 copy of ``model`` in eval mode whose integer scalar buffers are plain ints.

    Such buffers hold Python-level state that the inference path reads as a number (MAT's
    ``epoch``, through ``int(self.epoch)``, picks the stage's classifier); ``torch.export`` traces
    buffers as tensors and refuses to turn one into a number. Eval-mode BatchNorm never reads its
    ``num_batches_tracked`` counter, so replacing those too changes nothing. The original model is
    left as it is."""
    model = copy.deepcopy(model).cpu().float().eval()
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.ndim == 0 and not buffer.is_floating_point() \
                    and not buffer.is_complex():
                del module._buffers[name]
                setattr(module, name, int(buffer))
    return model


def normalisation_note(model: nn.Module) -> str:
    """Where the input normalisation happens, in words for the ONNX metadata."""
    backbones = [m for m in model.modules() if isinstance(m, Backbone)]
    if not backbones:
        return ("feed RGB in [0, 1]; any normalisation is the detector's own and inside the graph "
                f"({type(model).__name__} has no dfattn Backbone)")
    b = backbones[0]
    mean = [round(float(v), 6) for v in b.mean.flatten()]
    std = [round(float(v), 6) for v in b.std.flatten()]
    return (f"inside the graph: (image - mean) / std with mean={mean}, std={std} (the {b.name} "
            f"backbone's); feed unnormalised RGB in [0, 1], not ImageNet-normalised images")


def _metadata(model: Detector, image_size: int, flip_tta: bool, opset: int,
              extra: dict[str, Any] | None) -> dict[str, str]:
    try:
        spec = json.dumps(model.spec())
    except ValueError:  # an unregistered detector
        spec = json.dumps({"name": type(model).__name__, "config": None})
    values = {
        "dfattn_version": dfattn.__version__,
        "detector": getattr(model, "name", "") or type(model).__name__,
        "detector_spec": spec,
        "input_size": str(image_size),
        "input": f"{INPUT_NAME}: float32 (batch, 3, {image_size}, {image_size}), RGB in [0, 1]",
        "output": f"{OUTPUT_NAME}: float32 (batch,), the logit of P(fake); P(fake) = sigmoid(logit)",
        "normalization": normalisation_note(model),
        "flip_tta": "true" if flip_tta else "false",
        "opset": str(opset),
    }
    for key, value in (extra or {}).items():
        values[str(key)] = value if isinstance(value, str) else _strict_json(value)
    return values


CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")  # INFO lines per graph pass


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the named loggers to WARNING for the block (the exporter's passes log at INFO, which the
    command-line tools' logging configuration would print)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _to_onnx(graph: InferenceGraph, image_size: int, opset: int) -> onnx.ModelProto:
    """The ONNX model of ``graph`` (dynamo exporter, dynamic batch axis), in memory."""
    import onnx

    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet(*CHATTY_LOGGERS):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
        program = torch.onnx.export(graph, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"image": {0: batch}}, external_data=False,
                                    verbose=False)
    model = program.model_proto
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(model.SerializeToString())
    return model


def onnx_session(model: "str | os.PathLike | bytes"):
    """An onnxruntime CPU session of an ONNX file (or its bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_logit(session, images: np.ndarray | Tensor) -> np.ndarray:
    """``(B,)`` logits of images ``(B, 3, S, S)`` in [0, 1] from an onnxruntime session."""
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]


def check_images(n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` random images in [0, 1], each with its own brightness and contrast (images of i.i.d.
    noise alone all pool to nearly the same features, and so to nearly the same logit)."""
    contrast = torch.rand(n, 1, 1, 1, generator=generator)
    offset = torch.rand(n, 1, 1, 1, generator=generator) * (1 - contrast)
    return offset + contrast * torch.rand(n, 3, size, size, generator=generator)


def compare_with_torch(session, model: Detector, image_size: int, flip_tta: bool = False,
                       batches: tuple[int, ...] = CHECK_BATCHES, seed: int = 0) -> float:
    """Largest |onnxruntime logit - PyTorch logit| (:func:`dfattn.evaluate.fake_logit`, in eval
    mode) on :func:`check_images` at each batch size in ``batches`` (a private generator: the
    global RNG is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters(), torch.empty(0)).device
    worst = 0.0
    for n in batches:
        x = check_images(n, image_size, generator)
        with torch.no_grad(), evaluating(model):  # eval mode, the model's own flags restored after
            expected = fake_logit(model, x.to(device), flip_tta).float().cpu().numpy()
        got = onnx_logit(session, x)
        if got.shape != expected.shape:
            raise ValueError(f"the ONNX graph returns logits of shape {got.shape} for a batch of {n}, "
                             f"PyTorch {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))))
    return worst


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (the exporters' messages run to pages)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a ``ValueError`` if it is a folder or an existing
    file and ``force`` is off."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder; give the ONNX file's path, e.g. {path / 'model.onnx'}")
    if path.exists() and not force:
        raise ValueError(f"{path}: exists already; pass --force to overwrite it")
    return path


def export_onnx(model: Detector, path: str | os.PathLike, image_size: int, flip_tta: bool = False,
                opset: int = DEFAULT_OPSET, force: bool = False, tolerance: float = TOLERANCE,
                metadata: dict[str, Any] | None = None) -> ExportReport:
    """Write ``model``'s inference path as an ONNX file at ``path`` (see the module docstring).

    Args:
        model: the detector (left unchanged: a CPU copy is exported).
        path: the ``.onnx`` file; refused if it exists unless ``force``.
        image_size: the input side ``S`` the graph is exported and checked at (the checkpoint's).
        flip_tta: export the flip-averaged logit (LAA-Net's flip test) instead of the plain one.
        opset: ONNX opset (18 or newer).
        tolerance: the largest |logit difference| to PyTorch accepted before writing.
        metadata: more ``metadata_props`` (values that are not strings are written as JSON).

    Raises:
        ValueError: an existing file without ``force``, an opset below 18, a graph the exporter
            cannot write, or one onnxruntime runs differently from PyTorch (nothing is written).
    """
    import onnx

    path = check_output_path(path, force)
    if opset < MIN_OPSET:
        raise ValueError(f"{path}: opset {opset} is too old; the exporter writes opset {MIN_OPSET} "
                         f"or newer")
    what = f"the {getattr(model, 'name', '') or type(model).__name__} detector"
    graph = InferenceGraph(_inference_copy(model), flip_tta).eval()
    try:
        proto = _to_onnx(graph, image_size, opset)
    except Exception as err:  # torch.export / onnxscript raise their own error types
        raise ValueError(f"{path}: {what} could not be exported to ONNX: {_first_line(err)}") from err
    proto.doc_string = ("dfattn detector: image (batch, 3, S, S) RGB in [0, 1] -> logit (batch,) of "
                        "P(fake); see metadata_props")
    props = _metadata(model, image_size, flip_tta, opset, metadata)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ValueError(f"{path}: the exported ONNX model does not pass onnx.checker: {err}") from err
    data = proto.SerializeToString()
    try:
        session = onnx_session(data)
    except Exception as err:  # onnxruntime's own error types (e.g. an opset newer than it runs)
        raise ValueError(f"{path}: not written; onnxruntime cannot run the exported model: "
                         f"{_first_line(err)}") from err
    diff = compare_with_torch(session, model, image_size, flip_tta)
    if not diff <= tolerance:  # also NaN
        raise ValueError(f"{path}: not written; onnxruntime's logits differ from PyTorch's by up to "
                         f"{diff:.3g} (tolerance {tolerance:g})")
    path = check_output_path(path, force)  # again: another process may have written it meanwhile
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    onnx.checker.check_model(str(path))  # the file as written
    log.debug("%s: %s, input %d px, opset %d, max |logit diff| to PyTorch %.2g", path, what, image_size,
             opset, diff)
    return ExportReport(path, image_size, opset, flip_tta, diff, props)


def checkpoint_metadata(checkpoint: str | os.PathLike, header: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata_props`` a checkpoint adds: its file name, its epoch and the operating point
    chosen on validation (``operating_point``: call a face fake when its logit is at least
    ``logit``), where the header has them."""
    extra: dict[str, Any] = {"checkpoint": Path(checkpoint).name}
    if isinstance(header.get("epoch"), int):
        extra["checkpoint_epoch"] = str(header["epoch"] + 1)  # 1-based, as in metrics.csv
    if isinstance(header.get("operating_point"), dict):
        extra["operating_point"] = header["operating_point"]
    return extra


def _strict_json(value: Any) -> str:
    """JSON with ``null`` for NaN and infinities (readable by any JSON parser)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value))


__all__ = ["DEFAULT_OPSET", "ExportReport", "InferenceGraph", "TOLERANCE", "check_images",
           "check_output_path", "checkpoint_metadata", "compare_with_torch", "export_onnx",
           "normalisation_note", "onnx_logit", "onnx_session"]
