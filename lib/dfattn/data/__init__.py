"""Data: face sources, self-blending, LAA-Net targets, held-out manipulations, torch datasets.

Never imports :mod:`dfattn.models`.
"""

from dfattn.data.faces import Face, FaceList, FaceSource, flip_landmarks
from dfattn.data.manipulations import (
    DEGRADATIONS,
    FAMILIES,
    Manipulation,
    apply_family,
    degrade_image,
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
    "degrade_image",
    "pick_donor",
]
from dfattn.data.folder import FolderFaces, detect_landmarks  # noqa: E402
from dfattn.data.synthetic import SyntheticFaces, render_face  # noqa: E402

__all__ += ["FolderFaces", "detect_landmarks", "SyntheticFaces", "render_face"]
from dfattn.data.blending import (  # noqa: E402
    BIConfig,
    BlendResult,
    NearestLandmarkIndex,
    SBIConfig,
    blend_images,
    self_blend,
)
from dfattn.data.masks import MASK_TYPES, hull_mask, region_mask, with_forehead  # noqa: E402
from dfattn.data.targets import LAANetTargets, blending_boundary, laanet_targets  # noqa: E402

__all__ += [
    "BIConfig",
    "BlendResult",
    "NearestLandmarkIndex",
    "SBIConfig",
    "blend_images",
    "self_blend",
    "MASK_TYPES",
    "hull_mask",
    "region_mask",
    "with_forehead",
    "LAANetTargets",
    "blending_boundary",
    "laanet_targets",
]
