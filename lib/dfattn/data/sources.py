"""Face sources by name, split into disjoint train / val / test people.

A *data spec* names where the real faces come from:

- ``"synthetic"``: the built-in generated faces (:class:`~dfattn.data.synthetic.SyntheticFaces`).
  Each split has its own identity range (train from 0, val from 1,000,000, test from 2,000,000),
  so changing the number of training faces never changes the validation or test people.
- ``"folder:PATH"``: a folder of real face photos (:class:`~dfattn.data.folder.FolderFaces`),
  split by identity with a seeded permutation (test and val first, the rest for training). The
  face detector that finds their landmarks is the ``detector`` argument of :func:`face_splits`
  (``"dlib"``, ``"mtcnn"`` or ``"mediapipe"``; the command-line tools' ``--face-detector``).
- ``"preprocessed:PATH"``: the output of ``dfattn-preprocess`` (real frames of a benchmark's own
  train / val / test split; :mod:`dfattn.data.preprocessed`).
- ``"SPEC+SPEC"``: several of these together (``"folder:A+folder:B"``). Each part is split on its
  own (so each keeps its held-out people and its own caps), the val and test splits are the
  parts' together, and training takes a seeded sample of ``sizes.train`` faces from the parts'
  training splits together (all of them where they hold fewer). Identities are kept apart
  (part ``k`` adds ``k * 10**8``), so two folders never share a person.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfattn.data.faces import Face, FaceSource

VAL_IDENTITY, TEST_IDENTITY = 1_000_000, 2_000_000
_JOIN = re.compile(r"\+(?=synthetic$|synthetic\+|folder:|preprocessed:)")  # a "+" that starts a spec
SPLITS = ("train", "val", "test")


class FaceSubset:
    """The faces of ``source`` at ``indices`` (a lazy view: nothing is loaded here)."""

    def __init__(self, source: FaceSource, indices: Sequence[int]):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Face:
        return self.source[self.indices[i]]

    def __repr__(self) -> str:
        return f"FaceSubset({self.source!r}, n={len(self)})"


class ConcatFaces:
    """The faces of several sources one after the other; the ``k``-th source's identities are
    offset by ``k * IDENTITY_STRIDE`` so that different sources never share a person."""

    IDENTITY_STRIDE = 10**8

    def __init__(self, sources: Sequence[FaceSource]):
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Face:
        if not 0 <= i < len(self):
            raise IndexError(f"face {i} of {len(self)}")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        face = self.sources[k][i - int(self.offsets[k])]
        return dataclasses.replace(face, identity=face.identity + k * self.IDENTITY_STRIDE) if k else face

    def __repr__(self) -> str:
        return f"ConcatFaces({self.sources!r})"


@dataclass(frozen=True)
class SplitSizes:
    """Faces per split (at most: a folder may hold fewer)."""

    train: int
    val: int
    test: int


def split_by_identity(identities: Sequence[int], sizes: SplitSizes, seed: int = 0
                      ) -> dict[str, list[int]]:
    """Indices per split with no identity in two splits.

    Identities are shuffled with ``seed``; test and val take whole identities until they hold
    ``sizes.test`` and ``sizes.val`` faces, but never more than 20 % of the faces each (so a small
    folder still trains on most of it); training takes up to ``sizes.train`` of the rest.
    """
    identities = np.asarray(identities)
    people = np.unique(identities)
    order = np.random.default_rng(seed).permutation(people)
    n = len(identities)
    want = {"test": min(sizes.test, n // 5), "val": min(sizes.val, n // 5), "train": sizes.train}
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    split_iter = iter(("test", "val", "train"))
    current = next(split_iter)
    for person in order:
        while current != "train" and len(out[current]) >= want[current]:
            current = next(split_iter)
        members = np.flatnonzero(identities == person).tolist()
        if current == "train":
            members = members[: max(0, want["train"] - len(out["train"]))]
        out[current].extend(members)
    return {s: sorted(v) for s, v in out.items()}


def face_splits(spec: str, sizes: SplitSizes, face_size: int = 256, seed: int = 0,
                workers: int = 1, detector: str = "dlib") -> dict[str, FaceSource]:
    """``{"train", "val", "test"}`` face sources for a data spec (module docstring).

    ``detector`` is the face detector of a ``folder:`` spec (one of
    :data:`~dfattn.data.detectors.FACE_DETECTORS`; checked for every spec, used by ``folder:``
    only: synthetic faces need none, preprocessed ones were detected when they were made).
    """
    from dfattn.data.detectors import check_detector

    check_detector(detector)
    specs = _JOIN.split(spec)
    if len(specs) > 1:
        parts = [face_splits(part, sizes, face_size, seed, workers, detector) for part in specs]
        train = ConcatFaces([p["train"] for p in parts])
        if len(train) > sizes.train:
            train = FaceSubset(train, np.sort(np.random.default_rng(seed).choice(len(train), sizes.train,
                                                                                 replace=False)))
        return {"train": train, **{s: ConcatFaces([p[s] for p in parts]) for s in ("val", "test")}}
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        from dfattn.data.synthetic import SyntheticFaces

        return {
            "train": SyntheticFaces(sizes.train, face_size, seed=seed, first_identity=0),
            "val": SyntheticFaces(sizes.val, face_size, seed=seed, first_identity=VAL_IDENTITY),
            "test": SyntheticFaces(sizes.test, face_size, seed=seed, first_identity=TEST_IDENTITY),
        }
    if kind not in ("folder", "preprocessed"):
        raise ValueError(f"unknown data spec {spec!r}: use 'synthetic', 'folder:PATH' or 'preprocessed:PATH'")
    if not path:
        raise ValueError(f"data spec {spec!r} needs a path: 'folder:PATH' or 'preprocessed:PATH'")
    if kind == "folder":
        from dfattn.data.folder import FolderFaces

        faces = FolderFaces(path, size=face_size, workers=workers, detector=detector)
        if len(faces) == 0:
            raise ValueError(f"{path}: no usable face images (skipped: {len(faces.skipped)})")
        parts = split_by_identity(faces.identities, sizes, seed)
        return {s: FaceSubset(faces, parts[s]) for s in SPLITS}
    from dfattn.data.preprocessed import PreprocessedFaces

    def cap(source: FaceSource, n: int) -> FaceSource:
        if len(source) <= n:
            return source
        keep = np.sort(np.random.default_rng(seed).choice(len(source), n, replace=False))
        return FaceSubset(source, keep)

    return {s: cap(PreprocessedFaces(path, split=s, label=0, size=face_size), getattr(sizes, s))
            for s in SPLITS}
