"""Deepfake video benchmarks read from their official layouts, as lists of :class:`VideoRecord`.

Every adapter checks that the files it lists exist and raises an error naming the missing path
(and how many others are missing) instead of returning a partial benchmark. Labels are 0 real,
1 fake; splits are ``train``, ``val``, ``test``; ``video_id`` is unique across all benchmarks
(``<dataset>/<folder>/<name>``, no extension) and is the key video-level metrics average over.

FaceForensics++ (:func:`ffpp`, Rössler et al. 2019; ``dataset = "ffpp-<compression>"``)::

    <root>/
      original_sequences/youtube/<c0|c23|c40>/videos/000.mp4 ... 999.mp4     real
      manipulated_sequences/<method>/<c0|c23|c40>/videos/000_003.mp4 ...     fake, target_source
      splits/train.json, val.json, test.json                                 [["000", "003"], ...]

  ``<method>`` is Deepfakes, Face2Face, FaceSwap, NeuralTextures or FaceShifter. A split file
  lists pairs ``[a, b]``: the real videos ``a`` and ``b`` and the fakes ``a_b`` and ``b_a`` belong
  to that split (720 / 140 / 140 real videos). The official download script names the
  uncompressed folder ``raw``; ``c0`` and ``raw`` are both accepted.

DeepFakeDetection (:func:`dfd`, Google/Jigsaw, shipped inside FF++; ``dataset = "dfd-<comp>"``,
no official split: every video is ``test``)::

    <root>/
      original_sequences/actors/<comp>/videos/01__exit_phone_room.mp4 ...            real
      manipulated_sequences/DeepFakeDetection/<comp>/videos/01_02__exit_phone_room__YVGY8LOK.mp4

Celeb-DF v2 (:func:`celebdf`, Li et al. 2020; ``dataset = "celebdf"``)::

    <root>/
      Celeb-real/id0_0000.mp4 ...          real
      YouTube-real/00000.mp4 ...           real
      Celeb-synthesis/id0_id1_0000.mp4 ... fake
      List_of_testing_videos.txt           "1 YouTube-real/00170.mp4" per line; 1 = REAL here

  The 518 listed videos are ``test``, all others ``train``.

DFDC (:func:`dfdc`, Dolhansky et al. 2020; ``dataset = "dfdc"``)::

    <root>/
      dfdc_train_part_0/metadata.json      {"aaqaifqrwn.mp4": {"label": "FAKE", "split": "train"}}
      dfdc_train_part_0/aaqaifqrwn.mp4 ...
      test/labels.csv                      filename,label   (label 1 / FAKE = fake, 0 / REAL = real)
      test/aalscayrfi.mp4 ...              (or test/videos/aalscayrfi.mp4)

  Folders with a ``labels.csv`` are ``test``; the others take the ``split`` of their metadata.

DFDC Preview (:func:`dfdcp`; ``dataset = "dfdcp"``)::

    <root>/
      dataset.json     {"method_A/643049/643049_A/1955.mp4": {"label": "fake", "set": "train"}}
      method_A/..., method_B/...   fake
      original_videos/...          real

Any folder of videos (:func:`video_folder`; ``dataset`` is an option, ``"videos"`` by default)::

    <root>/
      labels.csv         path,label[,split][,method]   (label real/fake or 0/1; split default test)
      any/sub/folders/clip.mp4 ...

:func:`load_public_dataset` picks an adapter by name (``ffpp, celebdf, dfdc, dfdcp, dfd, videos``).
The labelling by folder follows LAA-Net's released test code (real and fake by the dataset's own
folder names or index files).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

__all__ = [
    "PUBLIC_DATASETS",
    "DFDC_PREVIEW_FAKE",
    "FFPP_METHODS",
    "SPLITS",
    "VideoRecord",
    "celebdf",
    "dfd",
    "dfdc",
    "dfdcp",
    "ffpp",
    "load_public_dataset",
    "parse_label",
    "video_folder",
]

SPLITS = ("train", "val", "test")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("c0", "c23", "c40")
CELEBDF_REAL = ("Celeb-real", "YouTube-real")
CELEBDF_FAKE = ("Celeb-synthesis",)
DFDC_PREVIEW_FAKE = ("method_A", "method_B")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a benchmark.

    Attributes:
        path: the video file.
        label: 0 real, 1 fake.
        split: ``"train"``, ``"val"`` or ``"test"``.
        dataset: the benchmark (``"ffpp-c23"``, ``"celebdf"``, ...).
        method: the manipulation (``"Deepfakes"``, ``"Celeb-synthesis"``, ...) or the real
            source (``"youtube"``, ``"Celeb-real"``, ...).
        video_id: unique key ``<dataset>/<folder>/<name>`` (no extension).
    """

    path: Path
    label: int
    split: str
    dataset: str
    method: str
    video_id: str

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"{self.path}: label must be 0 (real) or 1 (fake), got {self.label!r}")
        if self.split not in SPLITS:
            raise ValueError(f"{self.path}: split must be one of {SPLITS}, got {self.split!r}")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def parse_label(value: object, where: str) -> int:
    """0 / 1 from ``0``, ``1``, ``"real"``, ``"fake"`` (any case, also ``"0"`` / ``"1"``).

    Raises:
        ValueError: anything else (the message names ``where``).
    """
    text = str(value).strip().lower()
    if text in ("0", "real", "0.0"):
        return 0
    if text in ("1", "fake", "1.0"):
        return 1
    raise ValueError(f"{where}: label must be real/fake or 0/1, got {value!r}")


def _split_name(value: object, where: str) -> str:
    """A split name (``validation`` / ``valid`` read as ``val``), checked."""
    split = str(value).strip().lower()
    split = {"validation": "val", "valid": "val"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {value!r}")
    return split


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: missing folder ({what})")
    return path


def _file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file ({what})")
    return path


def _check_exist(records: Iterable[VideoRecord], what: str) -> None:
    """Raise if any listed video is missing, naming the first few and counting the rest."""
    missing = [str(r.path) for r in records if not r.path.is_file()]
    if missing:
        shown = ", ".join(missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(f"{what}: {len(missing)} listed videos are missing: {shown}{more}")


def _ordered(records: Iterable[VideoRecord]) -> list[VideoRecord]:
    """Records in a fixed order (split, then id), after checking that ids are unique."""
    out = sorted(records, key=lambda r: (SPLITS.index(r.split), r.video_id))
    for a, b in zip(out, out[1:]):
        if a.video_id == b.video_id:
            raise ValueError(f"video {a.video_id} is listed twice ({a.path}, {b.path})")
    return out


def _list_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursively, hidden files skipped), sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _stem_id(dataset: str, relative: str | Path) -> str:
    """``<dataset>/<relative path without extension>`` in POSIX form."""
    rel = Path(relative)
    return f"{dataset}/{rel.with_suffix('').as_posix()}"


def _compression_folder(parent: Path, compression: str) -> Path:
    """``parent/<compression>``; for ``c0`` the download script's ``raw`` name is accepted."""
    if compression not in COMPRESSIONS + ("raw",):
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    names = ("c0", "raw") if compression in ("c0", "raw") else (compression,)
    for name in names:
        if (parent / name / "videos").is_dir():
            return parent / name / "videos"
    return parent / names[0] / "videos"


def _dataset_name(prefix: str, compression: str) -> str:
    return f"{prefix}-{'c0' if compression == 'raw' else compression}"


# --------------------------------------------------------------------------------------------
# FaceForensics++ and DeepFakeDetection
# --------------------------------------------------------------------------------------------


def _read_ffpp_split(path: Path) -> list[tuple[str, str]]:
    """The ``[a, b]`` pairs of one official FF++ split file."""
    _file(path, "FaceForensics++ split file")
    try:
        pairs = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs
    ):
        raise ValueError(f"{path}: expected a list of [\"000\", \"003\"] pairs")
    return [(a, b) for a, b in pairs]


def ffpp(root: str | os.PathLike, compression: str = "c23",
         methods: Sequence[str] | None = None, splits: str | os.PathLike | None = None
         ) -> list[VideoRecord]:
    """FaceForensics++ with its official train / val / test split (layout: module docstring).

    Args:
        root: the dataset folder (holds ``original_sequences`` and ``manipulated_sequences``).
        compression: ``"c0"`` (or ``"raw"``), ``"c23"`` or ``"c40"``.
        methods: manipulations to include; ``None`` takes those of :data:`FFPP_METHODS` that
            are present (possibly none: real videos alone train SBI). A requested method that is
            missing is an error.
        splits: folder of ``train.json``, ``val.json``, ``test.json`` (default ``<root>/splits``).
    """
    root = _folder(Path(root), "FaceForensics++ root")
    split_dir = Path(splits) if splits is not None else root / "splits"
    dataset = _dataset_name("ffpp", compression)
    real_dir = _folder(_compression_folder(root / "original_sequences" / "youtube", compression),
                       "FaceForensics++ real videos")
    manipulated = root / "manipulated_sequences"
    if methods is None:
        methods = [m for m in FFPP_METHODS
                   if _compression_folder(manipulated / m, compression).is_dir()]
    method_dirs = {m: _folder(_compression_folder(manipulated / m, compression),
                              f"FaceForensics++ {m} videos") for m in methods}

    records = []
    for split in SPLITS:
        for a, b in _read_ffpp_split(split_dir / f"{split}.json"):
            for real in (a, b):
                records.append(VideoRecord(real_dir / f"{real}.mp4", 0, split, dataset, "youtube",
                                           f"{dataset}/youtube/{real}"))
            for method, folder in method_dirs.items():
                for name in (f"{a}_{b}", f"{b}_{a}"):
                    records.append(VideoRecord(folder / f"{name}.mp4", 1, split, dataset, method,
                                               f"{dataset}/{method}/{name}"))
    _check_exist(records, f"{root} (FaceForensics++ {compression})")
    return _ordered(records)


def dfd(root: str | os.PathLike, compression: str = "c23") -> list[VideoRecord]:
    """DeepFakeDetection (inside an FF++ download; layout: module docstring), all ``test``."""
    root = _folder(Path(root), "FaceForensics++ root holding DeepFakeDetection")
    dataset = _dataset_name("dfd", compression)
    folders = {
        ("actors", 0): root / "original_sequences" / "actors",
        ("DeepFakeDetection", 1): root / "manipulated_sequences" / "DeepFakeDetection",
    }
    records = []
    for (method, label), parent in folders.items():
        folder = _folder(_compression_folder(parent, compression), f"DeepFakeDetection {method}")
        for path in _list_videos(folder):
            records.append(VideoRecord(path, label, "test", dataset, method,
                                       _stem_id(dataset, Path(method) / path.relative_to(folder))))
    return _ordered(records)


# --------------------------------------------------------------------------------------------
# Celeb-DF v2
# --------------------------------------------------------------------------------------------


def celebdf(root: str | os.PathLike) -> list[VideoRecord]:
    """Celeb-DF v2: the videos of ``List_of_testing_videos.txt`` are ``test``, the rest ``train``.

    In that list label 1 means *real* (the opposite of ours); each listed label is checked
    against the folder of its video.
    """
    root = _folder(Path(root), "Celeb-DF v2 root")
    listing = _file(root / "List_of_testing_videos.txt", "Celeb-DF v2 test list")
    folders = {name: 0 for name in CELEBDF_REAL} | {name: 1 for name in CELEBDF_FAKE}
    for name in folders:
        _folder(root / name, "Celeb-DF v2 videos")

    def record(relative: str, split: str) -> VideoRecord:
        folder = Path(relative).parts[0]
        return VideoRecord(root / relative, folders[folder], split, "celebdf", folder,
                           _stem_id("celebdf", relative))

    tested = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{listing}:{number}"
        if len(fields) != 2:
            raise ValueError(
                f"{where}: expected '<1 real | 0 fake> <folder>/<video>.mp4', got {line!r}")
        real = parse_label(fields[0], where) == 1  # 1 = real in this file
        folder = Path(fields[1]).parts[0]
        if folder not in folders:
            raise ValueError(
                f"{where}: unknown folder {folder!r} (expected one of {list(folders)})")
        if real != (folders[folder] == 0):
            raise ValueError(f"{where}: listed as {'real' if real else 'fake'} but {folder} "
                             f"holds {'fake' if real else 'real'} videos")
        tested.append(Path(fields[1]).as_posix())
    records = [record(rel, "test") for rel in tested]
    _check_exist(records, f"{listing}")
    listed = set(tested)
    for name in folders:
        for path in _list_videos(root / name):
            rel = path.relative_to(root).as_posix()
            if rel not in listed:
                records.append(record(rel, "train"))
    return _ordered(records)


# --------------------------------------------------------------------------------------------
# DFDC and DFDC Preview
# --------------------------------------------------------------------------------------------


def _dfdc_video(folder: Path, name: str) -> Path:
    """A listed DFDC video: in its folder, or in its ``videos`` sub-folder."""
    for candidate in (folder / name, folder / "videos" / name):
        if candidate.is_file():
            return candidate
    return folder / name


def _json_dict(path: Path, shape: str) -> dict:
    """The JSON object in ``path``; errors name the file and the expected ``shape``."""
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected {shape}")
    return entries


def dfdc(root: str | os.PathLike) -> list[VideoRecord]:
    """DFDC: every folder (``root`` or a sub-folder) with ``labels.csv`` (test) or
    ``metadata.json`` (the split it gives). Layout: module docstring."""
    root = _folder(Path(root), "DFDC root")
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    records: list[VideoRecord] = []
    found = False
    for folder in folders:
        labels, metadata = folder / "labels.csv", folder / "metadata.json"
        if labels.is_file():
            found = True
            table = _read_table(labels, ("filename", "label"))
            for row in table.itertuples(index=False):
                where = f"{labels} ({row.filename})"
                label = parse_label(row.label, where)
                path = _dfdc_video(folder, row.filename)
                records.append(VideoRecord(path, label, "test", "dfdc", ("real", "fake")[label],
                                           _stem_id("dfdc", path.relative_to(root))))
        elif metadata.is_file():
            found = True
            entries = _json_dict(metadata, '{"name.mp4": {"label": ...}}')
            for name, entry in entries.items():
                where = f"{metadata} ({name})"
                if not isinstance(entry, dict) or "label" not in entry:
                    raise ValueError(f"{where}: entry needs a 'label'")
                label = parse_label(entry["label"], where)
                split = _split_name(entry.get("split", "train"), where)
                path = _dfdc_video(folder, name)
                records.append(VideoRecord(path, label, split, "dfdc", ("real", "fake")[label],
                                           _stem_id("dfdc", path.relative_to(root))))
    if not found:
        raise FileNotFoundError(f"{root}: no DFDC labels.csv or metadata.json in it or its folders")
    _check_exist(records, f"{root} (DFDC)")
    return _ordered(records)


def dfdcp(root: str | os.PathLike) -> list[VideoRecord]:
    """DFDC Preview from its ``dataset.json``; ``method_A/B`` fake, ``original_videos`` real
    (each label is checked against its folder)."""
    root = _folder(Path(root), "DFDC Preview root")
    listing = _file(root / "dataset.json", "DFDC Preview index")
    entries = _json_dict(listing, '{"method_A/.../x.mp4": {"label": ...}}')
    records = []
    for relative, entry in entries.items():
        where = f"{listing} ({relative})"
        if not isinstance(entry, dict) or "label" not in entry or "set" not in entry:
            raise ValueError(f"{where}: entry needs a 'label' and a 'set'")
        label = parse_label(entry["label"], where)
        method = Path(relative).parts[0]
        expected = 1 if method in DFDC_PREVIEW_FAKE else 0 if method == "original_videos" else None
        if expected is None:
            raise ValueError(f"{where}: unknown folder {method!r} "
                             f"(expected {DFDC_PREVIEW_FAKE} or 'original_videos')")
        if label != expected:
            raise ValueError(f"{where}: labelled {entry['label']!r} but {method} holds "
                             f"{'fake' if expected else 'real'} videos")
        records.append(VideoRecord(root / relative, label, _split_name(entry["set"], where),
                                   "dfdcp", method, _stem_id("dfdcp", relative)))
    _check_exist(records, f"{listing}")
    return _ordered(records)


# --------------------------------------------------------------------------------------------
# Any folder with a labels CSV
# --------------------------------------------------------------------------------------------


def _read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A CSV with (at least) the ``required`` columns, all read as strings."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from err
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(table.columns)})")
    return table


def video_folder(root: str | os.PathLike, labels: str | os.PathLike | None = None,
                 dataset: str = "videos") -> list[VideoRecord]:
    """Videos listed in a CSV ``path,label[,split][,method]``.

    ``path`` is relative to ``root`` (or absolute); ``label`` real/fake or 0/1; ``split``
    defaults to ``test``; ``method`` to ``real`` / ``fake``. ``labels`` defaults to
    ``<root>/labels.csv``; ``dataset`` names the dataset.
    """
    root = _folder(Path(root), "video folder")
    listing = _file(Path(labels) if labels is not None else root / "labels.csv", "video labels CSV")
    table = _read_table(listing, ("path", "label"))
    records = []
    for number, row in enumerate(table.to_dict("records"), 2):
        where = f"{listing}:{number}"
        label = parse_label(row["label"], where)
        split = _split_name(row.get("split") or "test", where)
        path = Path(row["path"])
        path = path if path.is_absolute() else root / path
        try:
            key = path.relative_to(root)
        except ValueError:  # an absolute path outside root: keep its own name
            key = Path(path.name)
        method = row.get("method") or ("real", "fake")[label]
        records.append(VideoRecord(path, label, split, dataset, method, _stem_id(dataset, key)))
    _check_exist(records, f"{listing}")
    return _ordered(records)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

PUBLIC_DATASETS: dict[str, Callable[..., list[VideoRecord]]] = {
    "ffpp": ffpp,
    "celebdf": celebdf,
    "dfdc": dfdc,
    "dfdcp": dfdcp,
    "dfd": dfd,
    "videos": video_folder,
}


def load_public_dataset(name: str, root: str | os.PathLike, /, **options) -> list[VideoRecord]:
    """The videos of benchmark ``name`` (a key of :data:`PUBLIC_DATASETS`) stored at ``root``.

    ``options`` go to the adapter (``ffpp``: ``compression, methods, splits``; ``dfd``:
    ``compression``; ``videos``: ``labels, dataset``).

    Raises:
        ValueError: unknown benchmark or option.
        FileNotFoundError: ``root``, a split / label file or a listed video is missing.
    """
    if name not in PUBLIC_DATASETS:
        raise ValueError(f"unknown benchmark {name!r}: use one of {sorted(PUBLIC_DATASETS)}")
    adapter = PUBLIC_DATASETS[name]
    accepted = list(inspect.signature(adapter).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"benchmark {name!r} takes options {accepted}, got {unknown}")
    return adapter(root, **options)
