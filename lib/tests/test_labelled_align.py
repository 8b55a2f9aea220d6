"""The aligned labelled evaluation: folders of face crops reach the model as training faces do."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfattn.data.folder import crop_face
from dfattn.data.labelled import LabelledFolder
from dfattn.data.synthetic import SyntheticFaces

N = 6


@pytest.fixture(scope="module")
def tight_and_loose(tmp_path_factory) -> Path:
    """The same built-in faces cropped tight (real/) and loose, off-centre (fake/), as two
    face detectors with different margins would, plus one image without a face."""
    root = tmp_path_factory.mktemp("labelled")
    faces = SyntheticFaces(N, size=320, seed=5)
    for sub in ("real", "fake"):
        (root / sub).mkdir()
    for i in range(N):
        f = faces[i]
        tight, _ = crop_face(f.image, f.landmarks, 224, margin=0.12)
        loose, _ = crop_face(f.image, f.landmarks + np.float32([9, -6]), 224, margin=0.42)
        cv2.imwrite(str(root / "real" / f"{i}.png"), cv2.cvtColor(tight, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "fake" / f"{i}.png"), cv2.cvtColor(loose, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "fake" / "blank.png"), np.full((200, 200, 3), 127, np.uint8))
    return root


def _centre(image) -> np.ndarray:
    a = image.numpy()
    s = a.shape[-1]
    return a[:, s // 5: -s // 5, s // 5: -s // 5]  # the face, away from reflected borders


def test_tight_and_loose_crops_reach_the_model_as_the_same_crop(tight_and_loose, tmp_path):
    plain = LabelledFolder(tight_and_loose, 64)
    aligned = LabelledFolder(tight_and_loose, 64, align="dlib", face_size=160, cache_dir=tmp_path)
    assert aligned.no_face == ["fake/blank.png"]  # found nowhere else, and listed
    assert sum(aligned.aligned) == 2 * N and len(aligned) == 2 * N + 1
    index = {p: i for i, p in enumerate(aligned.paths)}
    before, after = [], []
    for i in range(N):
        t, l = index[f"real/{i}.png"], index[f"fake/{i}.png"]
        before.append(np.abs(_centre(plain[t]["image"]) - _centre(plain[l]["image"])).mean())
        after.append(np.abs(_centre(aligned[t]["image"]) - _centre(aligned[l]["image"])).mean())
    # resized only, the two crops differ in scale and place; aligned, they nearly coincide
    assert np.mean(after) < 0.03 < np.mean(before)
    assert np.mean(after) < 0.25 * np.mean(before)
    # the fallback serves the blank image resized, as the plain folder does
    b = index["fake/blank.png"]
    np.testing.assert_array_equal(aligned[b]["image"].numpy(), plain[b]["image"].numpy())


def test_no_face_skip_leaves_the_image_out_and_counts_it(tight_and_loose, tmp_path):
    kept = LabelledFolder(tight_and_loose, 32, align="dlib", no_face="skip", cache_dir=tmp_path)
    assert "fake/blank.png" not in kept.paths and kept.no_face == ["fake/blank.png"]
    assert len(kept) == 2 * N and int(kept.labels.sum()) == N and all(kept.aligned)
    assert [kept[i]["path"] for i in range(len(kept))] == kept.paths
    with pytest.raises(ValueError, match="no_face"):
        LabelledFolder(tight_and_loose, 32, align="dlib", no_face="drop", cache_dir=tmp_path)


def test_cross_dataset_scores_every_model_on_the_same_aligned_images(tight_and_loose, runs):
    """protocol.cross_dataset on two smoke checkpoints: one row per (model, image), the counts of
    the folder, the aligned flag per image, and the paired table over the same paths."""
    from types import SimpleNamespace

    from dfattn.checkpoint import load_detector
    from dfattn.protocol import cross_dataset, cross_dataset_table

    models, configs = {}, {}
    for name in ("baseline", "laanet"):
        model, header = load_detector(runs[name])
        cfg = header["train_config"]
        models[name] = model
        configs[name] = SimpleNamespace(image_size=cfg["image_size"], face_size=cfg["face_size"],
                                        face_detector="dlib")
    frames, counts = cross_dataset(models, configs, tight_and_loose, batch_size=8, progress=False)
    assert counts == {"images": 2 * N + 1, "scored": 2 * N + 1, "no_face": 1, "unreadable": 0}
    assert len(frames) == 2 * (2 * N + 1) and set(frames["model"]) == {"baseline", "laanet"}
    blank = frames[frames["path"] == "fake/blank.png"]
    assert len(blank) == 2 and not blank["aligned"].any()
    assert frames["aligned"].sum() == 2 * 2 * N
    table, diffs = cross_dataset_table(frames, n_boot=50)
    assert list(table.index) == ["baseline", "laanet"] and list(diffs.index) == ["laanet - baseline"]
    skipped, counts = cross_dataset({"baseline": models["baseline"]}, configs, tight_and_loose, no_face="skip",
                                    batch_size=8, progress=False)
    assert counts["scored"] == 2 * N and counts["images"] == 2 * N + 1 and len(skipped) == 2 * N


def test_by_training_source_trains_each_source_and_scores_the_same_folder(tight_and_loose, tmp_path):
    """Two sources at the smoke scale: each model is trained once per source (read back the second
    time), every run scores the same images, and the stacked table holds each source's rows, its
    paired difference to the baseline and its number of training faces."""
    from dfattn.protocol import by_training_source, training_source_table

    sources = {"one": ("synthetic", tmp_path / "one"), "both": ("synthetic+synthetic", tmp_path / "both")}
    frames, info = by_training_source(["laanet", "baseline"], sources, "smoke", tight_and_loose,
                                      batch_size=8, progress=False)
    assert all((tmp_path / s / m / "best.safetensors").exists() for s in ("one", "both")
               for m in ("laanet", "baseline"))
    assert len(frames) == 2 * 2 * (2 * N + 1)
    assert frames.groupby(["source", "model"]).size().eq(2 * N + 1).all()
    assert info["one"]["training faces"] == info["both"]["training faces"] == 16  # the smoke n_train
    assert info["both"]["validation faces"] == 2 * info["one"]["validation faces"]
    assert info["one"]["scored"] == 2 * N + 1 and info["one"]["no_face"] == 1
    # different training data, different detectors: the two sources' scores differ
    one, both = (frames[(frames["source"] == s) & (frames["model"] == "laanet")] for s in ("one", "both"))
    assert not np.allclose(one["prob"].to_numpy(), both["prob"].to_numpy())
    table = training_source_table(frames, info, n_boot=50)
    assert list(table.index) == [(s, r) for s in ("one", "both")
                                 for r in ("laanet", "baseline", "laanet - baseline")]
    assert table.loc[("one", "laanet"), "n"] == 2 * N + 1 and table["training faces"].eq(16).all()
    again, _ = by_training_source(["laanet", "baseline"], sources, "smoke", tight_and_loose,
                                  batch_size=8, progress=False)  # train-or-load: read back
    np.testing.assert_array_equal(again["prob"].to_numpy(), frames["prob"].to_numpy())
