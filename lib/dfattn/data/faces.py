"""Faces with 68 landmarks: the one record every data module speaks.

Landmarks follow the dlib / iBUG-300W 68-point layout, as ``(68, 2)`` float32 arrays of ``(x, y)``
pixel coordinates in the image they belong to. Index groups below name the parts of that layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

# iBUG-68 index groups (0-based, half-open ranges).
JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))  # subject's right, image left
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_BOTTOM = tuple(range(31, 36))
NOSE = NOSE_BRIDGE + NOSE_BOTTOM
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS

LANDMARK_GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": JAW,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "nose": NOSE,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "mouth": MOUTH,
}


def _flip_permutation() -> np.ndarray:
    """Index map for a horizontal flip: point ``i`` of the flipped face is point ``perm[i]``."""
    perm = np.arange(68)
    perm[0:17] = np.arange(16, -1, -1)  # jaw reversed
    perm[17:27] = np.arange(26, 16, -1)  # brows swap and reverse
    perm[31:36] = np.arange(35, 30, -1)  # nose wings
    # eyes: 36..41 <-> 45,44,43,42,47,46 (outer corner to outer corner, clockwise kept)
    perm[36:42] = [45, 44, 43, 42, 47, 46]
    perm[42:48] = [39, 38, 37, 36, 41, 40]
    perm[48:55] = np.arange(54, 47, -1)  # upper outer lip
    perm[55:60] = np.arange(59, 54, -1)  # lower outer lip
    perm[60:65] = np.arange(64, 59, -1)  # upper inner lip
    perm[65:68] = np.arange(67, 64, -1)  # lower inner lip
    return perm


FLIP_PERMUTATION = _flip_permutation()


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image (mirrored x, left/right groups swapped)."""
    out = landmarks[FLIP_PERMUTATION].copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out


@dataclass
class Face:
    """One face image with its landmarks.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        landmarks: ``(68, 2)`` float32 ``(x, y)`` pixel coordinates.
        identity: who this is; pseudo-fakes of other identities (BI) and held-out splits use it.
        name: where it came from (a file name, or ``synthetic/<seed>/<index>``), for error messages.
    """

    image: np.ndarray
    landmarks: np.ndarray
    identity: int
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"{self.name or 'face'}: image must be (H, W, 3) uint8 RGB, "
                f"got {self.image.shape} {self.image.dtype}"
            )
        if self.landmarks.shape != (68, 2):
            raise ValueError(
                f"{self.name or 'face'}: landmarks must be (68, 2), got {self.landmarks.shape}"
            )
        self.landmarks = self.landmarks.astype(np.float32, copy=False)


@runtime_checkable
class FaceSource(Protocol):
    """Anything indexable that yields :class:`Face` records (synthetic faces, a folder, a dataset)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Face: ...


class FaceList:
    """A :class:`FaceSource` over an in-memory sequence of faces (handy for tests and subsets)."""

    def __init__(self, faces: Sequence[Face]):
        self.faces = list(faces)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> Face:
        return self.faces[index]
