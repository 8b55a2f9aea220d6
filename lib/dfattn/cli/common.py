"""What every command-line tool shares: argument checks, the device, the output folder, loading a
detector for use, and one place that turns the library's errors into one-line messages.

A tool's ``main`` is ``run_tool("dfattn-x", parser(), body, argv)``: bad input, a missing file or
a damaged checkpoint prints ``dfattn-x: <file>: <problem>`` on stderr and exits 1 (argparse's own usage
errors exit 2); Ctrl-C exits 130 after the body has kept what it had done.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    """``text`` as a float, or argparse's usage error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def margin(text: str) -> float:
    """argparse type: a face-crop margin, a share of the face box in [0, 1]."""
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"the margin is a share of the face box in [0, 1], got {value:g}")
    return value


def output_folder(path: str | Path) -> Path:
    """The output folder, created if missing; a ValueError if the path is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: --out is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_for_use(checkpoint: str | Path, dev: torch.device) -> tuple[Any, dict[str, Any], int]:
    """``(detector, header, image size)`` of a checkpoint file, with a clear error for a header
    without a usable ``train_config``."""
    from dfattn.checkpoint import load_detector

    path = Path(checkpoint)
    model, header = load_detector(path, dev)  # a folder, a bad header, weights that do not fit: errors
    config = header.get("train_config")
    size = config.get("image_size") if isinstance(config, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise ValueError(f"{path}: the header has no usable train_config.image_size ({size!r}); "
                         f"not a checkpoint written by dfattn-train")
    return model, header, size


def run_tool(name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
             argv: Sequence[str] | None = None, log_format: str = "%(asctime)s %(name)s: %(message)s") -> int:
    """Parse ``argv`` and run ``body(args)``, turning the library's errors into one line on stderr
    (exit 1) and Ctrl-C into exit 130 (argparse's usage errors exit 2 as usual)."""
    logging.basicConfig(level=logging.INFO, format=log_format)
    args = parser.parse_args(argv)
    try:
        return body(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        print(f"{name}: {err}", file=sys.stderr)
        return EXIT_ERROR


__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "load_for_use", "margin", "number", "output_folder",
           "positive_int", "run_tool"]
