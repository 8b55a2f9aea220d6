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

Two options of :class:`PseudoFakePairs` bring the training data closer to LAA-Net's released code;
both are off by default (then the items are exactly those of earlier versions):

- ``targets="official"``: the heatmap and consistency targets as that code makes them (uint8
  boundary at image resolution, resized; many tied vulnerable points), see
  :mod:`dfattn.data.targets`;
- ``geometric=True``: SBI's random-margin crop and LAA-Net's joint flip plus one of crop, scale or
  erasing, applied to both images and both masks before the targets are computed
  (:class:`GeometricAugmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop
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
from dfattn.data.targets import check_targets_variant, laanet_targets

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


class KeepFractionCrop(BaseCrop):
    """A random crop of random size: ``k`` % of each side cut, ``k`` uniform in ``0..max_percent``
    (1 % steps, the same ``k`` for height and width, so a square stays square), at a uniformly
    random position. With ``max_percent=14`` at least 86 % of each side is kept."""

    def __init__(self, max_percent: int = 14, p: float = 1.0):
        super().__init__(p=p)
        if not 0 <= max_percent < 100:
            raise ValueError(f"max_percent must be in [0, 100), got {max_percent}")
        self.max_percent = int(max_percent)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        k = self.py_random.randint(0, self.max_percent)
        ch, cw = max(1, h - round(h * k / 100)), max(1, w - round(w * k / 100))
        y0, x0 = self.py_random.randint(0, h - ch), self.py_random.randint(0, w - cw)
        return {"crop_coords": (x0, y0, x0 + cw, y0 + ch)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_percent",)


GEOMETRIC_OPS = ("crop", "scale", "erase")


@dataclass(frozen=True)
class GeometricAugmentation:
    """The geometric augmentation of LAA-Net's released code (training split only), after SBI's
    random-margin crop, with the *same* parameters for the real image, the fake and both masks.

    1. SBI's random-margin face crop (Shiohara & Yamasaki, CVPR 2022, §3), as LAA-Net's released
       code applies it after blending: one margin drawn uniformly in ``margin`` pixels (at a
       256-px crop; scaled with the image) is cut from all four sides of both images and the
       masks;
    2. LAA-Net's joint augmentation (LAA-Net §4.1; the parameters of its released code):
       horizontal flip with ``flip_p``; then, with ``one_of_p``, one of
       ``"crop"`` (:class:`KeepFractionCrop`: at most ``crop_percent`` % of each side cut),
       ``"scale"`` (isotropic, ``1 +- scale_limit``; images bilinear, masks nearest, albumentations'
       defaults) or ``"erase"`` (one constant-zero box of ``erase_area`` of the image, aspect
       ``erase_ratio``, zeroed in the masks too: erasing is a dual transform).

    :class:`PseudoFakePairs` applies it right after blending; then come the shared photometric
    augmentation (JPEG included: in LAA-Net's code it follows the geometric steps too), the resize
    to the input size (images) and the heatmap size (targets); the targets are computed from the
    augmented mask, so the heatmap, consistency and mask targets move with the image. (LAA-Net's
    code augments the boundary B itself; flips, crops, nearest-neighbour scaling and zero boxes
    commute with ``B = 4 M (1 - M)``, so augmenting M and then computing B is the same.)

    Args:
        margin: inclusive pixel range at 256 px, or ``None`` for no margin crop.
        ops: the transforms the "one of" step chooses among, uniformly (a subset of
            :data:`GEOMETRIC_OPS`; e.g. ``("erase",)`` for tests and figures).
    """

    margin: tuple[int, int] | None = (5, 24)
    flip_p: float = 0.5
    one_of_p: float = 0.5
    ops: tuple[str, ...] = GEOMETRIC_OPS
    crop_percent: int = 14
    scale_limit: float = 0.15
    erase_area: tuple[float, float] = (0.02, 0.33)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(GEOMETRIC_OPS)
        if unknown or not self.ops:
            raise ValueError(f"GeometricAugmentation.ops must be a non-empty subset of {GEOMETRIC_OPS}, "
                             f"got {self.ops}")
        if self.margin is not None and not 0 <= self.margin[0] <= self.margin[1]:
            raise ValueError(f"GeometricAugmentation.margin must be (lo, hi) with 0 <= lo <= hi, "
                             f"got {self.margin}")

    @cached_property
    def transform(self) -> A.Compose:
        """The albumentations pipeline of step 2 (built once; seeded per item)."""
        choices = {
            "crop": lambda: KeepFractionCrop(self.crop_percent, p=1.0),
            "scale": lambda: A.RandomScale(scale_limit=self.scale_limit, interpolation=cv2.INTER_LINEAR,
                                           mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            "erase": lambda: A.Erasing(scale=self.erase_area, ratio=self.erase_ratio, fill=0, fill_mask=0,
                                       p=1.0),
        }
        ops = [A.HorizontalFlip(p=self.flip_p), A.OneOf([choices[op]() for op in self.ops], p=self.one_of_p)]
        return A.Compose(ops, additional_targets={"fake": "image"}, seed=None)

    def __call__(self, real: np.ndarray, fake: np.ndarray, masks: Sequence[np.ndarray],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Augment a pair and its ``(H, W)`` masks alike; all randomness from ``rng``.

        Returns:
            ``(real, fake, masks)``, all of the same (new) height and width.
        """
        masks = list(masks)
        if self.margin is not None:
            h, w = real.shape[:2]
            m = round(int(rng.integers(self.margin[0], self.margin[1] + 1)) * max(h, w) / 256)
            m = min(m, (min(h, w) - 1) // 2)
            if m > 0:
                real, fake = real[m:h - m, m:w - m], fake[m:h - m, m:w - m]
                masks = [mask[m:h - m, m:w - m] for mask in masks]
        self.transform.set_random_seed(int(rng.integers(2**31)))
        out = self.transform(image=np.ascontiguousarray(real), fake=np.ascontiguousarray(fake),
                             masks=[np.ascontiguousarray(mask) for mask in masks])
        return out["image"], out["fake"], list(out["masks"])


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
        targets: LAA-Net's heatmap/consistency targets, ``"paper"`` (default) or ``"official"``
            (those of LAA-Net's released code; :func:`~dfattn.data.targets.laanet_targets`).
        geometric: ``True`` (or a :class:`GeometricAugmentation`) for SBI's margin crop and
            LAA-Net's joint flip + crop/scale/erasing of the images, the mask and the targets
            (training only; it replaces the flip of the face before blending). Default off.
    """

    def __init__(
        self,
        faces: FaceSource,
        image_size: int,
        method: str = "sbi",
        train: bool = True,
        seed: int = 0,
        sbi_config: SBIConfig | None = None,
        targets: str = "paper",
        geometric: bool | GeometricAugmentation | None = False,
    ):
        if method not in ("sbi", "bi"):
            raise ValueError(f"method must be 'sbi' or 'bi', got {method!r}")
        self.targets = check_targets_variant(targets)
        if geometric is True:
            geometric = GeometricAugmentation()
        if geometric not in (None, False) and not isinstance(geometric, GeometricAugmentation):
            raise TypeError(f"geometric must be a bool or a GeometricAugmentation, "
                            f"got {type(geometric).__name__}")
        self.geometric = geometric if (train and geometric) else None
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
        if self.train and self.geometric is None:
            face = _maybe_flip(face, rng)  # with geometric augmentation the flip is joint, after blending
        result = self._blend(face, rng)
        real, fake, mask, unscaled = result.real, result.fake, result.mask, result.mask_unscaled
        if self.geometric is not None:  # before the photometric step, as in LAA-Net's code
            real, fake, (mask, unscaled) = self.geometric(real, fake, (mask, unscaled), rng)
        if self.augment is not None:
            self.augment.set_random_seed(int(rng.integers(2**31)))
            out = self.augment(image=real, fake=fake)
            real, fake = out["image"], out["fake"]
        S, h = self.image_size, self.heatmap_size
        # B of the unscaled mask ("paper": times the ratio, the ring of the true transition; see targets.py).
        heatmap, consistency, _ = laanet_targets(unscaled, h, ratio=result.ratio, variant=self.targets)
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
