"""Data: face sources, self-blending, LAA-Net targets, held-out manipulations, torch datasets.

Never imports :mod:`dfattn.models`.
"""

from dfattn.data.faces import Face, FaceList, FaceSource, flip_landmarks
from dfattn.data.manipulations import (
    DEGRADATIONS,
    FAMILIES,
    Manipulation,
    apply_family,
    degrade,
    pick_donor,
)

__all__ = [
    "Face",
    "FaceList",
    "FaceSource",
    "flip_landmarks",
    "DEGRADATIONS",
    "FAMILIES",
    "Manipulation",
    "apply_family",
    "degrade",
    "pick_donor",
]
