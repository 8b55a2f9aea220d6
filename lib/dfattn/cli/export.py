"""``dfattn-export``: a trained detector as an ONNX file (the inference path: one logit per face).

The graph takes ``image``, ``(batch, 3, S, S)`` float32 RGB faces in [0, 1] at the checkpoint's
training size ``S`` (the backbone's normalisation is inside it), and returns ``logit``,
``(batch,)``, the logit of P(fake); the batch axis is dynamic. ``--flip-tta`` exports the mean
of the logits of each face and of its mirror image (as ``dfattn-evaluate --flip-tta``). Before the
file is written, onnxruntime (CPU) runs it on random faces and its logits are compared with
PyTorch's (at most 1e-4 apart, or nothing is written); an existing file is kept unless
``--force``. The input size, the normalisation, the detector and the dfattn version are in the
file's metadata::

    dfattn-export runs/laanet/best.safetensors --out laanet.onnx
    dfattn-export runs/mat/best.safetensors --out mat_flip.onnx --flip-tta --opset 18 --force
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from dfattn.cli.common import load_for_use, positive_int, run_tool
from dfattn.export import DEFAULT_OPSET, check_output_path, checkpoint_metadata, export_onnx


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfattn-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a trained detector (best.safetensors)")
    p.add_argument("--out", required=True, help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument("--flip-tta", action="store_true",
                   help="export the mean logit of each face and of its horizontal flip")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {DEFAULT_OPSET} or newer (default {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def _export(args: argparse.Namespace) -> int:
    check_output_path(args.out, args.force)  # before the checkpoint loads
    model, header, size = load_for_use(args.checkpoint, torch.device("cpu"))
    report = export_onnx(model, args.out, size, flip_tta=args.flip_tta, opset=args.opset,
                         force=args.force, metadata=checkpoint_metadata(args.checkpoint, header))
    flip = " with flip TTA" if args.flip_tta else ""
    print(f"dfattn-export: {report.path}: {report.metadata['detector']}, image (batch, 3, {size}, "
          f"{size}) RGB in [0, 1] -> logit (batch,){flip}, opset {report.opset}; max |logit "
          f"difference| to PyTorch {report.max_abs_diff:.2g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("dfattn-export", parser(), _export, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
