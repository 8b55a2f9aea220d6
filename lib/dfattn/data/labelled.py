"""A folder of face crops labelled by sub-folder: ``root/real/**`` and ``root/fake/**``.

The layout most deepfake test sets reduce to (FF++, Celeb-DF, DFDC and DFD each map their real
and fake videos to folders or index files that :mod:`dfattn.data.public` reads). With one folder of frames per video, e.g. ``root/fake/000_003/0001.png``, the
``video_id`` of each frame is its folder relative to ``root`` (``"fake/000_003"``), which is what
:func:`dfattn.evaluate.video_level` groups by. Images lying directly in ``real/`` or ``fake/``
are each their own video.

Images are expected to be face crops already (no detection here); they are resized to a square of
``image_size`` with OpenCV's ``INTER_AREA`` (a non-square crop is stretched).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from dfattn.data.datasets import image_array
from dfattn.data.folder import IMAGE_EXTENSIONS, list_images, read_image

__all__ = ["CLASSES", "LabelledFolder"]

log = logging.getLogger(__name__)

CLASSES = ("real", "fake")  # sub-folder names; their position is the label


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as an image, or ``None`` if it can."""
    try:
        read_image(path)
    except ValueError as err:
        return str(err)
    return None


class LabelledFolder(Dataset):
    """Face images under ``root/real/**`` (label 0) and ``root/fake/**`` (label 1).

    Items: ``image`` ``(3, S, S)`` float32 in [0, 1]; ``label`` float32 tensor (0 real, 1 fake:
    the convention of :mod:`dfattn.data.datasets`); ``index`` (int); ``path`` (str, relative to
    ``root``); ``video_id`` (str, the image's folder relative to ``root``, or the image itself when
    it lies directly in ``real/`` or ``fake/``). Order: the real images, then the fake ones, each
    sorted by path.

    Args:
        root: the folder holding ``real/`` and ``fake/``.
        image_size: side ``S`` of the returned images.
        extensions: the file extensions to take (a subset of
            :data:`~dfattn.data.folder.IMAGE_EXTENSIONS`; case does not matter).
        skip_bad: decode every image once now (in ``workers`` threads) and leave out the ones that
            cannot be read, logging them and listing them in :attr:`skipped` as
            ``(path, reason)``. Without it an unreadable image raises when its item is loaded.
        workers: threads for the ``skip_bad`` check (default: up to 8, one per core).

    Raises:
        FileNotFoundError: ``root`` is not a folder, or lacks ``real/`` or ``fake/`` (named).
        ValueError: a class folder holds no (readable) image; an unsupported extension.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        skip_bad: bool = False,
        workers: int | None = None,
    ):
        self.root = Path(root)
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        unknown = exts - set(IMAGE_EXTENSIONS)
        if unknown or not exts:
            raise ValueError(f"extensions must be among {IMAGE_EXTENSIONS}, got {sorted(exts)}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder")
        missing = [c for c in CLASSES if not (self.root / c).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{self.root}: no {' or '.join(repr(c) for c in missing)} sub-folder "
                f"(a labelled folder holds real faces under real/ and fakes under fake/)"
            )

        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(CLASSES):
            found = [p for p in list_images(self.root / name) if p.suffix.lower() in exts]
            if not found:
                raise ValueError(f"{self.root / name}: no images with extensions {sorted(exts)}")
            files += found
            labels += [label] * len(found)

        self.skipped: list[tuple[str, str]] = []
        if skip_bad:
            workers = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(workers) as pool:  # OpenCV decodes without the GIL
                reasons = list(pool.map(_unreadable, files))
            keep = [r is None for r in reasons]
            self.skipped = [(self._relative(p), r) for p, r in zip(files, reasons) if r is not None]
            files = [p for p, k in zip(files, keep) if k]
            labels = [y for y, k in zip(labels, keep) if k]
            if self.skipped:
                shown = ", ".join(p for p, _ in self.skipped[:20])
                more = f" and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
                log.warning("%s: skipped %d unreadable image(s): %s%s (see LabelledFolder.skipped)",
                            self.root, len(self.skipped), shown, more)
            for label, name in enumerate(CLASSES):
                if label not in labels:
                    raise ValueError(f"{self.root / name}: no readable images (all skipped)")

        self.paths = [self._relative(p) for p in files]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.video_ids = [
            rel if rel.count("/") == 1 else rel.rsplit("/", 1)[0] for rel in self.paths
        ]

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        n_fake = int(self.labels.sum())
        return (f"LabelledFolder({str(self.root)!r}, image_size={self.image_size}: "
                f"{len(self) - n_fake} real, {n_fake} fake, {len(self.skipped)} skipped)")

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {self!r}")
        index = index % len(self)
        image = read_image(self.root / self.paths[index])  # ValueError naming the file
        return {
            "image": torch.from_numpy(image_array(image, self.image_size)),
            "label": torch.tensor(float(self.labels[index])),
            "index": index,
            "path": self.paths[index],
            "video_id": self.video_ids[index],
        }
