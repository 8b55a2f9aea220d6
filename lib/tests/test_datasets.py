"""Torch datasets: pairs with targets, held-out benchmarks, determinism across workers."""

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from dfattn.data.datasets import (
    Degradation,
    HeldOutFamilies,
    PseudoFakePairs,
    collate_pairs,
    loader_kwargs,
)
from dfattn.data.manipulations import FAMILIES, degrade_image
from dfattn.data.synthetic import SyntheticFaces

SIZE = 64


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(6, 128, seed=3)


def test_pair_layout_and_targets(faces):
    item = PseudoFakePairs(faces, SIZE, seed=1)[2]
    assert item["image"].shape == (2, 3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"].tolist() == [0.0, 1.0]
    h = SIZE // 4
    for key in ("heatmap", "consistency"):
        assert item[key].shape == (2, 1, h, h)
        assert item[key][0].abs().max() == 0  # real: all-zero targets
    assert item["mask"][0].abs().max() == 0 and item["mask"][1].max() > 0
    assert item["heatmap"][1].max() == pytest.approx(1.0)  # Gaussians of peak exactly 1


def test_without_augmentation_the_fake_differs_only_inside_its_mask(faces):
    ds = PseudoFakePairs(faces, 128, train=False, seed=0)  # 128 = face size: no resampling
    for i in range(len(faces)):
        item = ds[i]
        changed = (item["image"][1] - item["image"][0]).abs().amax(0) > 0
        assert changed.any()
        assert not changed[item["mask"][1, 0] == 0].any()


def test_same_seed_same_bytes_and_new_fakes_each_epoch(faces):
    a, b = PseudoFakePairs(faces, SIZE, seed=5), PseudoFakePairs(faces, SIZE, seed=5)
    for key, value in a[1].items():
        assert torch.equal(value, b[1][key]), key
    before = a[1]["image"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["image"], before)
    assert not torch.equal(PseudoFakePairs(faces, SIZE, seed=6)[1]["image"], before)


def test_workers_do_not_change_the_data(faces):
    ds = PseudoFakePairs(faces, SIZE, seed=2)
    batches = [
        next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_pairs, **loader_kwargs(n))))
        for n in (0, 2)
    ]
    for key in batches[0]:
        assert torch.equal(batches[0][key], batches[1][key]), key
    assert batches[0]["image"].shape[0] == 6 and batches[0]["label"].sum() == 3


def test_bi_pairs_take_a_donor_of_another_identity():
    faces = SyntheticFaces(6, 128, seed=4, views=2)  # three people, two views each
    item = PseudoFakePairs(faces, SIZE, method="bi", train=False)[0]
    assert item["label"].tolist() == [0.0, 1.0] and item["heatmap"][1].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'sbi' or 'bi'"):
        PseudoFakePairs(faces, SIZE, method="x")


def test_benchmark_lists_every_family_after_each_real(faces):
    bench = HeldOutFamilies(faces, SIZE)
    n = 1 + len(FAMILIES)
    assert len(bench) == len(faces) * n
    kinds = [bench.kind(i) for i in range(n)]
    assert kinds == ["real", *FAMILIES]
    for i in range(n):
        item = bench[n + i]
        assert item["label"] == (i > 0) and item["family"] == i and item["index"] == 1
        assert (item["mask"].max() > 0) == (i > 0)


def test_benchmark_degrades_real_images_too(faces):
    bench = HeldOutFamilies(faces, 128, families=["region_swap"], degradation=Degradation("jpeg", 30))
    real = bench[0]["image"]
    expected = degrade_image(faces[0].image, "jpeg", 30)
    torch.testing.assert_close(
        real, torch.from_numpy(expected.transpose(2, 0, 1).copy()).float() / 255, atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="unknown degradation"):
        Degradation("sepia", 1)
    with pytest.raises(ValueError, match="unknown manipulation families"):
        HeldOutFamilies(faces, SIZE, families=["morph"])


REAL_FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_faces"


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason="shared real faces absent")
def test_self_blended_real_photos(tmp_path):
    """The real-photo path end to end: a folder of photos -> landmarks -> SBI pairs with targets."""
    from dfattn.data.folder import FolderFaces

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(REAL_FACES.glob("*.jpg"))[:4]:
        shutil.copy(path, folder / path.name)
    faces = FolderFaces(folder, size=128, cache_dir=tmp_path / "cache")
    assert len(faces) >= 3
    ds = PseudoFakePairs(faces, SIZE, train=False)
    for i in range(len(faces)):
        item = ds[i]
        assert item["heatmap"][1].max() == pytest.approx(1.0)
        assert item["mask"][1].sum() > 0.05 * SIZE * SIZE  # the blend covers a face, not a speck
