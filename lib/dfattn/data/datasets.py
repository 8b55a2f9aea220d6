"""Torch datasets: self-blended training pairs with LAA-Net's targets, and held-out benchmarks.

Every item is made on the fly from a :class:`~dfattn.data.faces.FaceSource` with its own random
generator seeded by ``(seed, epoch, index)``. So an item does not depend on which DataLoader
worker makes it or in which order: same seed, same bytes, with any number of workers.

Tensors follow one convention for all models:

- ``image``: ``(3, S, S)`` float32 in [0, 1] (models normalise themselves);
- ``label``: float32, 0 real and 1 fake;
- ``mask``: ``(1, S, S)`` float32 manipulation mask (blend weight; zeros for real images);
- ``heatmap``, ``consistency``: ``(1, h, h)`` LAA-Net targets at heatmap resolution ``h = S / 4``.

The pair datasets return a real image and its own pseudo-fake together (as SBI and LAA-Net do, so
every batch is balanced and each fake has its real twin); :func:`collate_pairs` flattens them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dfattn.data.blending import NearestLandmarkIndex, SBIConfig, blend_images, self_blend
from dfattn.data.faces import Face, FaceSource, flip_landmarks
from dfattn.data.manipulations import (
    DEGRADATIONS,
    FAMILIES,
    apply_family,
    degrade_image,
    pick_donor,
)
from dfattn.data.targets import laanet_targets

Item = dict[str, torch.Tensor]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one item: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


def pair_augmentation(jpeg: bool = True) -> A.Compose:
    """The photometric augmentation SBI and LAA-Net apply with *shared* parameters to a real/fake pair
    (the released SBI code's augmentation): RGB shift, HSV, brightness/contrast, and JPEG 40-100 with p = 0.5."""
    ops: list = [
        A.RGBShift(r_shift_limit=20, g_shift_limit=20, b_shift_limit=20, p=0.3),
        A.HueSaturationValue(hue_shift_limit=3, sat_shift_limit=3, val_shift_limit=3, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.3),
    ]
    if jpeg:
        ops.append(A.ImageCompression(quality_range=(40, 100), p=0.5))
    return A.Compose(ops, additional_targets={"fake": "image"}, seed=None)


def image_array(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, size, size)`` float32 in [0, 1] (NumPy: tiny torch ops on
    per-item tensors cost more in thread-pool overhead than the work itself)."""
    if image.shape[0] != size or image.shape[1] != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)


def _mask_array(mask: np.ndarray | None, size: int) -> np.ndarray:
    """``(1, size, size)`` float32 mask in [0, 1]; zeros for ``None`` (a real image)."""
    if mask is None:
        return np.zeros((1, size, size), np.float32)
    if mask.shape[0] != size or mask.shape[1] != size:
        mask = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0, dtype=np.float32)[None]


def _maybe_flip(face: Face, rng: np.random.Generator) -> Face:
    if rng.random() >= 0.5:
        return face
    width = face.image.shape[1]
    return Face(
        image=np.ascontiguousarray(face.image[:, ::-1]),
        landmarks=flip_landmarks(face.landmarks, width),
        identity=face.identity,
        name=face.name,
    )


class PseudoFakePairs(Dataset):
    """Real faces and their pseudo-fakes, in pairs, with LAA-Net's targets (training and validation).

    Args:
        faces: the real faces (e.g. :class:`~dfattn.data.synthetic.SyntheticFaces` or
            :class:`~dfattn.data.folder.FolderFaces`).
        image_size: side of the returned images.
        method: ``"sbi"`` (self-blended images, the default of both LAA-Net runs we reproduce) or
            ``"bi"`` (Face X-ray's blended images: a donor of another identity from ``faces``).
        train: random flip and the shared photometric augmentation (off for validation, where
            only the blending itself is random, with a fixed seed per item).
        seed: base seed; an item's randomness is ``(seed, epoch, index)``.
        sbi_config: SBI hyper-parameters (:class:`~dfattn.data.blending.SBIConfig`).
    """

    def __init__(
        self,
        faces: FaceSource,
        image_size: int,
        method: str = "sbi",
        train: bool = True,
        seed: int = 0,
        sbi_config: SBIConfig | None = None,
    ):
        if method not in ("sbi", "bi"):
            raise ValueError(f"method must be 'sbi' or 'bi', got {method!r}")
        self.faces = faces
        self.image_size = image_size
        self.heatmap_size = image_size // 4
        self.method = method
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.sbi_config = sbi_config or SBIConfig()
        self.augment = pair_augmentation() if train else None
        # BI searches donors by landmarks: index the source once, here, not in every worker.
        self.donors = NearestLandmarkIndex.from_faces(faces) if method == "bi" else None

    def set_epoch(self, epoch: int) -> None:
        """New pseudo-fakes every epoch (call before each epoch; workers see it on their next fork)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def _blend(self, face: Face, rng: np.random.Generator):
        if self.method == "sbi":
            return self_blend(face, rng, self.sbi_config)
        return blend_images(face, self.donors, rng)

    def __getitem__(self, index: int) -> Item:
        rng = item_rng(self.seed, self.epoch if self.train else 0, index)
        face = self.faces[index]
        if self.train:
            face = _maybe_flip(face, rng)
        result = self._blend(face, rng)
        real, fake, mask = result.real, result.fake, result.mask
        if self.augment is not None:
            self.augment.set_random_seed(int(rng.integers(2**31)))
            out = self.augment(image=real, fake=fake)
            real, fake = out["image"], out["fake"]
        S, h = self.image_size, self.heatmap_size
        # B of the unscaled mask times the ratio: the ring of the true transition (targets.py).
        heatmap, consistency, _ = laanet_targets(result.mask_unscaled, h, ratio=result.ratio)
        zeros = np.zeros((1, h, h), np.float32)
        arrays = {
            "image": np.stack([image_array(real, S), image_array(fake, S)]),
            "label": np.array([0.0, 1.0], np.float32),
            "mask": np.stack([_mask_array(None, S), _mask_array(mask, S)]),
            "heatmap": np.stack([zeros, heatmap[None]]),
            "consistency": np.stack([zeros, consistency[None]]),
            "index": np.array([index, index]),
        }
        return {key: torch.from_numpy(value) for key, value in arrays.items()}


def collate_pairs(batch: Sequence[Item]) -> Item:
    """Flatten a list of pair items into one batch of ``2 * len(batch)`` images."""
    return {key: torch.cat([item[key] for item in batch]) for key in batch[0]}


@dataclass(frozen=True)
class Degradation:
    """A named degradation with its strength, applied to every image of a benchmark."""

    name: str
    strength: float

    def __post_init__(self) -> None:
        if self.name not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.name!r}; known: {sorted(DEGRADATIONS)}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return degrade_image(image, self.name, self.strength, rng)

    def __str__(self) -> str:
        return f"{self.name}={self.strength:g}"


class HeldOutFamilies(Dataset):
    """Held-out faces, real and manipulated by the held-out families (never used in training).

    Item ``k`` is face ``k // (1 + F)``: first the real image, then one fake per family, each with
    its ground-truth manipulation mask. A donor of another identity comes from the same source.
    An optional :class:`Degradation` is applied to every image, real ones included.
    """

    def __init__(
        self,
        faces: FaceSource,
        image_size: int,
        families: Sequence[str] | None = None,
        degradation: Degradation | None = None,
        seed: int = 0,
    ):
        self.faces = faces
        self.image_size = image_size
        self.families = list(families) if families is not None else list(FAMILIES)
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown manipulation families {sorted(unknown)}; known: {sorted(FAMILIES)}")
        self.degradation = degradation
        self.seed = seed

    def __len__(self) -> int:
        return len(self.faces) * (1 + len(self.families))

    def kind(self, index: int) -> str:
        """``"real"`` or the family name of item ``index``."""
        slot = index % (1 + len(self.families))
        return "real" if slot == 0 else self.families[slot - 1]

    def __getitem__(self, index: int) -> Item:
        n = 1 + len(self.families)
        face_index, slot = divmod(index, n)
        rng = item_rng(self.seed, slot, face_index)
        face = self.faces[face_index]
        if slot == 0:
            image, mask = face.image, None
        else:
            donor = pick_donor(self.faces, face_index, rng)
            result = apply_family(self.families[slot - 1], face, donor, rng)
            image, mask = result.image, result.mask
        if self.degradation is not None:
            image = self.degradation(image, rng)
        S = self.image_size
        return {
            "image": torch.from_numpy(image_array(image, S)),
            "label": torch.tensor(float(slot > 0)),
            "mask": torch.from_numpy(_mask_array(mask, S)),
            "family": torch.tensor(slot),
            "index": torch.tensor(face_index),
        }


def loader_kwargs(num_workers: int, pin_memory: bool = False) -> dict:
    """Keyword arguments for a DataLoader that keeps data loading off the critical path.

    With workers, the workers are the parallelism: OpenCV is set to one thread *in this process,
    before the workers fork* (calling ``cv2.setNumThreads`` inside a forked worker can deadlock
    when the parent has used OpenCV's thread pool), and torch uses one thread per worker (the
    DataLoader's own default).
    """
    kwargs: dict = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        cv2.setNumThreads(1)
        kwargs.update(persistent_workers=False, prefetch_factor=4)
    return kwargs
