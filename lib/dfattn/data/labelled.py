"""A folder of face crops labelled by sub-folder: ``root/real/**`` and ``root/fake/**``.

The layout most deepfake test sets reduce to (FF++, Celeb-DF, DFDC and DFD each map their real
and fake videos to folders or index files that :mod:`dfattn.data.public` reads). With one folder of frames per video, e.g. ``root/fake/000_003/0001.png``, the
``video_id`` of each frame is its folder relative to ``root`` (``"fake/000_003"``), which is what
:func:`dfattn.evaluate.video_level` groups by. Images lying directly in ``real/`` or ``fake/``
are each their own video.

By default the images are taken as face crops and resized to a square of ``image_size`` with
OpenCV's ``INTER_AREA`` (a non-square crop is stretched). With ``align`` (a face detector's name)
they are prepared the way training faces are (:class:`~dfattn.data.folder.FolderFaces`): the
detector's 68 landmarks (found once, cached), the square :func:`~dfattn.data.folder.crop_face`
cuts with the training margin at ``face_size``, then resized to ``image_size``. A tight crop and a
loose one of the same face then reach the model as the same crop, as they would in training. An
image where no face is found is scored by the fallback ``no_face="resize"`` (the image resized as
it is) or left out with ``no_face="skip"``; either way it is listed in :attr:`LabelledFolder.no_face`.
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
from dfattn.data.folder import IMAGE_EXTENSIONS, crop_face, list_images, read_image

__all__ = ["CLASSES", "NO_FACE", "LabelledFolder"]

log = logging.getLogger(__name__)

CLASSES = ("real", "fake")  # sub-folder names; their position is the label
NO_FACE = ("resize", "skip")  # what an aligned folder does with an image without a detected face


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
        workers: threads for the ``skip_bad`` check (default: up to 8, one per core), and
            processes for detecting landmarks with ``align``.
        align: a face detector (``"dlib"``, ``"mtcnn"``, ``"mediapipe"``): crop each image around
            its landmarks as training does (module docstring). ``None``: resize only.
        face_size: side of the aligned crop before it is resized to ``image_size`` (training's
            ``face_size``; default ``image_size``).
        margin: the crop margin (:func:`~dfattn.data.folder.crop_face`; training's is 0.2).
        no_face: ``"resize"`` (score the image resized as it is) or ``"skip"`` (leave it out).
        cache_dir: where the landmark cache lives (default: FolderFaces').

    Attributes:
        no_face: relative paths of the images in which ``align`` found no face (served resized,
            or left out with ``no_face="skip"``).
        aligned: per item, whether it is served as an aligned crop.

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
        align: str | None = None,
        face_size: int | None = None,
        margin: float = 0.2,
        no_face: str = "resize",
        cache_dir: str | os.PathLike | None = None,
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
        self.align, self.margin = align, float(margin)
        self.face_size = int(face_size or image_size)
        if no_face not in NO_FACE:
            raise ValueError(f"no_face must be one of {NO_FACE}, got {no_face!r}")
        self.no_face: list[str] = []
        self._landmarks: list[np.ndarray | None] = [None] * len(self.paths)
        if align is not None:
            from dfattn.data.folder import FolderFaces

            found = FolderFaces(self.root, detector=align, cache_dir=cache_dir, margin=margin,
                                workers=workers or 1)
            by_path = {name: found.landmarks(i) for i, name in enumerate(found.files)}
            self._landmarks = [by_path.get(p) for p in self.paths]
            self.no_face = [p for p, lm in zip(self.paths, self._landmarks) if lm is None]
            if no_face == "skip" and self.no_face:
                keep = [lm is not None for lm in self._landmarks]
                self.paths = [p for p, k in zip(self.paths, keep) if k]
                self.labels = self.labels[np.asarray(keep)]
                self._landmarks = [lm for lm in self._landmarks if lm is not None]
                for label, name in enumerate(CLASSES):
                    if label not in self.labels:
                        raise ValueError(f"{self.root / name}: no face found in any image (no_face='skip')")
            if self.no_face:
                log.info("%s: no face found in %d of %d images (%s)", self.root, len(self.no_face),
                         len(found.files) + len(found.skipped),
                         "scored resized as they are" if no_face == "resize" else "left out")
        self.aligned = [lm is not None for lm in self._landmarks]
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
                f"{len(self) - n_fake} real, {n_fake} fake, {len(self.skipped)} skipped"
                + (f", aligned by {self.align}, no face in {len(self.no_face)}" if self.align else "") + ")")

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {self!r}")
        index = index % len(self)
        image = read_image(self.root / self.paths[index])  # ValueError naming the file
        landmarks = self._landmarks[index]
        if landmarks is not None:
            image, _ = crop_face(image, landmarks, self.face_size, self.margin)
        return {
            "image": torch.from_numpy(image_array(image, self.image_size)),
            "label": torch.tensor(float(self.labels[index])),
            "index": index,
            "path": self.paths[index],
            "video_id": self.video_ids[index],
        }
