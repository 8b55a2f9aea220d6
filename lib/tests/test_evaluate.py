"""Evaluation: hand-computed metrics, prediction tables, video level, labelled folders."""

import logging
import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from torch import nn
from torch.utils.data import Dataset

from dfattn.data.datasets import PseudoFakePairs
from dfattn.data.labelled import LabelledFolder
from dfattn.data.synthetic import SyntheticFaces
from dfattn.models.base import Detector
from dfattn.evaluate import (
    binary_metrics,
    equal_error_rate,
    evaluate_frames,
    fake_logit,
    plot_roc,
    predict,
    roc_points,
    video_level,
)

# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_perfect_and_reversed_rankings():
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.7, 0.9]
    perfect = binary_metrics(labels, scores)
    assert perfect["auc"] == 1 and perfect["ap"] == 1 and perfect["eer"] == 0
    assert perfect["acc"] == 1 and perfect["balanced_acc"] == 1
    assert perfect["n"] == 5 and perfect["n_fake"] == 2
    reversed_ = binary_metrics(labels, [1 - s for s in scores])
    assert reversed_["auc"] == 0 and reversed_["eer"] == 1 and reversed_["acc"] == 0


def test_hand_computed_example():
    # Reals 0.1, 0.2, 0.7; one fake at 0.6.
    # AUC: the fake outranks 2 of 3 reals -> 2/3.
    # AP: ranked 0.7 (real), 0.6 (fake): the only recall step is at precision 1/2.
    # ROC (every threshold): (0,0) (1/3,0) (1/3,1) (2/3,1) (1,1); FPR = FNR on the vertical
    #   segment at FPR 1/3 where FNR falls from 1 to 0 -> EER 1/3.
    # At 0.5: called fake 0.7 and 0.6 -> 3/4 right; recalls: real 2/3, fake 1 -> balanced 5/6.
    m = binary_metrics([0, 0, 0, 1], [0.1, 0.2, 0.7, 0.6])
    assert m["auc"] == pytest.approx(2 / 3)
    assert m["ap"] == pytest.approx(1 / 2)
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["acc"] == pytest.approx(3 / 4)
    assert m["balanced_acc"] == pytest.approx(5 / 6)
    # The threshold only moves the accuracies: at 0.65 only 0.7 is called fake.
    m = binary_metrics([0, 0, 0, 1], [0.1, 0.2, 0.7, 0.6], threshold=0.65)
    assert m["acc"] == pytest.approx(1 / 2) and m["balanced_acc"] == pytest.approx(1 / 3)
    assert m["auc"] == pytest.approx(2 / 3)


def test_eer_interpolates_inside_a_diagonal_roc_segment():
    # Reals 0.3, 0.6; fakes 0.6, 0.9. ROC: (0,0) (0,1/2) (1/2,1) (1,1). On the diagonal from
    # (0, 1/2) to (1/2, 1), FPR = t/2 and FNR = 1/2 - t/2: equal at t = 1/2 -> EER 1/4.
    assert equal_error_rate([0, 0, 1, 1], [0.3, 0.6, 0.6, 0.9]) == pytest.approx(0.25)
    # The tie counts one half in the AUC: (1 + 1/2 + 2) / 4.
    assert binary_metrics([0, 0, 1, 1], [0.3, 0.6, 0.6, 0.9])["auc"] == pytest.approx(0.875)
    # All scores tied: the chance diagonal, EER 1/2.
    assert equal_error_rate([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)


def test_one_class_gives_nan_ranking_metrics_not_an_error():
    m = binary_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"])
    assert m["acc"] == pytest.approx(2 / 3) and m["balanced_acc"] == pytest.approx(2 / 3)
    assert m["n_fake"] == 3


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="probabilities"):
        binary_metrics([0, 1], [-2.0, 3.0])  # logits, not probabilities
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        binary_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no samples"):
        binary_metrics([], [])


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


class ColumnWeights(Detector):
    """Logit = weighted mean over image columns: changes under a horizontal flip. Records the
    mode and whether gradients were on at each call."""

    def __init__(self, width: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-2.0, 3.0, width))
        self.norm = nn.BatchNorm1d(1)  # a sub-module whose mode must be restored too
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled)

    def fake_logit(self, images):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return (images.mean(dim=(1, 2)) * self.w).sum(-1)  # (B, 3, H, W) -> (B, W) -> (B,)


class MeanBrightness(Detector):
    """Logit = 4 * (mean intensity - 1/2): invariant under a horizontal flip."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def fake_logit(self, images):
        return self.scale * (images.mean(dim=(1, 2, 3)) - 0.5)


class Items(Dataset):
    """Random images with the kinds of fields real datasets carry."""

    def __init__(self, n: int, size: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.labels = torch.arange(n) % 2

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "label": self.labels[i].float(),
            "mask": torch.zeros(1, 8, 8),  # not per-image metadata: left out
            "index": i,
            "family": torch.tensor(i % 3),
            "video_id": f"v{i // 3}",
        }


def test_flip_tta_is_the_mean_of_the_two_logits():
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = ColumnWeights(8)
    with torch.no_grad():
        plain = model.fake_logit(images)
        flipped = model.fake_logit(images.flip(-1))
        assert not torch.allclose(plain, flipped)  # the toy model does see the flip
        torch.testing.assert_close(fake_logit(model, images, flip_tta=True), (plain + flipped) / 2)
        invariant = MeanBrightness()
        torch.testing.assert_close(fake_logit(invariant, images, flip_tta=True),
                                   invariant.fake_logit(images))


def test_predict_keeps_order_and_metadata_and_restores_modes():
    data = Items(10)
    model = ColumnWeights(8).train()
    model.norm.eval()  # a frozen sub-module stays frozen
    df = predict(model, data, batch_size=3, progress=False)
    assert model.calls == [(False, False)] * 4  # 4 batches, eval mode, no gradients
    assert model.training and not model.norm.training  # each module's mode restored
    assert list(df.columns) == ["logit", "prob", "label", "index", "family", "video_id"]
    assert df["index"].tolist() == list(range(10))
    assert df["label"].tolist() == [i % 2 for i in range(10)]
    assert df["family"].tolist() == [i % 3 for i in range(10)]
    assert df["video_id"].tolist() == [f"v{i // 3}" for i in range(10)]
    with torch.no_grad():
        expected = model.fake_logit(data.images).double().numpy()
    np.testing.assert_allclose(df["logit"], expected, rtol=1e-6)
    np.testing.assert_allclose(df["prob"], expit(expected), rtol=1e-6)


def test_predict_flip_tta():
    data = Items(7)
    model = ColumnWeights(8)
    tta = predict(model, data, batch_size=4, flip_tta=True, progress=False)
    with torch.no_grad():
        expected = ((model.fake_logit(data.images) + model.fake_logit(data.images.flip(-1))) / 2)
    np.testing.assert_allclose(tta["logit"], expected.double().numpy(), rtol=1e-6)
    plain = predict(model, data, batch_size=2, progress=False)
    assert not np.allclose(plain["logit"], tta["logit"])


def test_predict_flattens_pair_items():
    pairs = PseudoFakePairs(SyntheticFaces(3, 64, seed=0), 32, train=False)
    df = predict(MeanBrightness(), pairs, batch_size=2, progress=False)
    assert len(df) == 6
    assert df["label"].tolist() == [0, 1] * 3
    assert df["index"].tolist() == [0, 0, 1, 1, 2, 2]


def test_predict_rejects_a_model_with_the_wrong_output_shape():
    class Column(Detector):
        def fake_logit(self, images):
            return images.mean(dim=(1, 2, 3))[:, None]  # (B, 1), not (B,)

    with pytest.raises(ValueError, match="must return \\(B,\\)"):
        predict(Column(), Items(3), progress=False)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def test_video_level_means_logits_per_video():
    frames = pd.DataFrame({
        "logit": [1.0, 3.0, 0.0, -3.0, 6.0, -1.0],
        "label": [1, 1, 0, 0, 0, 0],
        "video_id": ["a", "a", "b", "b", "b", "c"],
        "family": ["x", "x", "real", "real", "real", "real"],  # constant per video: kept
        "index": [0, 1, 2, 3, 4, 5],  # varies within a video: dropped
    })
    frames["prob"] = expit(frames["logit"])
    videos = video_level(frames)
    assert list(videos.columns) == ["video_id", "logit", "prob", "label", "n_frames", "family"]
    assert videos["video_id"].tolist() == ["a", "b", "c"]
    assert videos["logit"].tolist() == [2.0, 1.0, -1.0]
    np.testing.assert_allclose(videos["prob"], expit([2.0, 1.0, -1.0]))  # not the mean of probs
    assert videos["label"].tolist() == [1, 0, 0] and videos["n_frames"].tolist() == [2, 3, 1]
    assert videos["family"].tolist() == ["x", "real", "real"]

    frames.loc[2, "label"] = 1
    with pytest.raises(ValueError, match="both real and fake frames.*'b'"):
        video_level(frames)
    with pytest.raises(KeyError, match="no column \\['clip'\\]"):
        video_level(frames, by="clip")


def test_evaluate_frames_per_group_with_and_without_pooled_reals():
    df = pd.DataFrame({
        "prob": [0.4, 0.6, 0.7, 0.8, 0.1, 0.2],
        "label": [0, 0, 1, 1, 1, 1],
        "kind": ["real", "real", "a", "a", "b", "b"],
    })
    pooled = evaluate_frames(df, "kind", pool_reals=True)
    assert pooled.index.tolist() == ["a", "b", "all"] and pooled.index.name == "kind"
    assert pooled.loc["a", "auc"] == 1  # a's fakes all above both reals
    assert pooled.loc["b", "auc"] == 0  # b's fakes all below
    assert pooled.loc["all", "auc"] == pytest.approx(0.5)  # 4 of the 8 fake-real pairs right
    assert pooled.loc["a", "n"] == 4 and pooled.loc["a", "n_fake"] == 2
    plain = evaluate_frames(df, "kind")
    assert plain.index.tolist() == ["real", "a", "b", "all"]
    assert plain[["auc", "ap", "eer"]].iloc[:3].isna().all().all()  # one class per group
    assert plain.loc["real", "acc"] == pytest.approx(1 / 2)  # 0.6 is called fake
    overall = evaluate_frames(df)
    assert overall.index.tolist() == ["all"]
    pd.testing.assert_series_equal(overall.loc["all"], plain.loc["all"])


def test_evaluate_frames_by_two_columns():
    df = pd.DataFrame({
        "prob": [0.2, 0.9, 0.8, 0.3],
        "label": [0, 1, 0, 1],
        "degradation": ["none", "none", "jpeg", "jpeg"],
        "size": [64, 64, 64, 64],
    })
    table = evaluate_frames(df, ["degradation", "size"])
    assert table.index.names == ["degradation", "size"]
    assert table.loc[("none", 64), "auc"] == 1 and table.loc[("jpeg", 64), "auc"] == 0
    assert table.loc[("all", "all"), "n"] == 4


def test_roc_points_and_plot():
    df = pd.DataFrame({"prob": [0.1, 0.2, 0.7, 0.6], "label": [0, 0, 0, 1]})
    points = roc_points(df)
    assert points[["fpr", "tpr"]].iloc[0].tolist() == [0, 0]
    assert points[["fpr", "tpr"]].iloc[-1].tolist() == [1, 1]
    assert points["fpr"].is_monotonic_increasing and points["tpr"].is_monotonic_increasing
    with pytest.raises(ValueError, match="real and fake"):
        roc_points(df[df["label"] == 0])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perfect = pd.DataFrame({"prob": [0.1, 0.9], "label": [0, 1]})
    ax = plot_roc({"toy": df, "perfect": perfect})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["toy (AUC 0.667)", "perfect (AUC 1.000)"]
    plt.close(ax.figure)


# ---------------------------------------------------------------------------------------------
# Labelled folders
# ---------------------------------------------------------------------------------------------


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture
def folder(tmp_path):
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, axis=2)
    _write(tmp_path / "real" / "vid1" / "000.png", red)
    _write(tmp_path / "real" / "vid1" / "001.png", checker)
    _write(tmp_path / "real" / "loose.jpg", red)
    _write(tmp_path / "fake" / "m1" / "vid1" / "000.png", checker)
    (tmp_path / "fake" / "notes.txt").write_text("not an image")  # other extensions: ignored
    return tmp_path


def test_labelled_folder_items(folder):
    ds = LabelledFolder(folder, 8)
    assert ds.paths == ["real/loose.jpg", "real/vid1/000.png", "real/vid1/001.png",
                        "fake/m1/vid1/000.png"]
    assert ds.labels.tolist() == [0, 0, 0, 1]
    assert ds.video_ids == ["real/loose.jpg", "real/vid1", "real/vid1", "fake/m1/vid1"]
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["label"].item() == 0 and ds[3]["label"].item() == 1
    assert item["index"] == 1 and item["path"] == "real/vid1/000.png"
    assert item["image"][0].min() == 1 and item["image"][1:].max() == 0  # RGB order kept
    # INTER_AREA averages the 1-pixel checkerboard to grey (nearest or bilinear would not).
    grey = ds[2]["image"]
    assert (grey - 0.5).abs().max() <= 1 / 255
    assert len(LabelledFolder(folder, 8, extensions=("PNG",))) == 3


def test_labelled_folder_feeds_video_level(folder):
    frames = predict(MeanBrightness(), LabelledFolder(folder, 8), batch_size=3, progress=False)
    assert frames["path"].tolist()[1] == "real/vid1/000.png"
    videos = video_level(frames)
    assert videos["video_id"].tolist() == ["real/loose.jpg", "real/vid1", "fake/m1/vid1"]
    assert videos["n_frames"].tolist() == [1, 2, 1] and videos["label"].tolist() == [0, 0, 1]
    assert videos["logit"].iloc[1] == pytest.approx(frames["logit"].iloc[1:3].mean())


def test_labelled_folder_bad_images(folder, caplog):
    (folder / "real" / "vid1" / "002.png").write_bytes(b"garbage, not a PNG")
    (folder / "fake" / "m1" / "vid1" / "001.png").write_bytes(b"")
    ds = LabelledFolder(folder, 8)
    assert len(ds) == 6  # found, not decoded yet
    with pytest.raises(ValueError, match="real/vid1/002.png"):
        ds[ds.paths.index("real/vid1/002.png")]
    with caplog.at_level(logging.WARNING, logger="dfattn.data.labelled"):
        ds = LabelledFolder(folder, 8, skip_bad=True, workers=2)
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 0, 1]
    assert [p for p, _ in ds.skipped] == ["real/vid1/002.png", "fake/m1/vid1/001.png"]
    assert all("002.png" in r or "001.png" in r for _, r in ds.skipped)
    assert "skipped 2 unreadable" in caplog.text
    (folder / "fake" / "m1" / "vid1" / "000.png").write_bytes(b"broken too")
    with pytest.raises(ValueError, match="fake: no readable images"):
        LabelledFolder(folder, 8, skip_bad=True)


def test_labelled_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        LabelledFolder(tmp_path / "missing", 8)
    (tmp_path / "real").mkdir()
    with pytest.raises(FileNotFoundError, match="no 'fake' sub-folder"):
        LabelledFolder(tmp_path, 8)
    (tmp_path / "fake").mkdir()
    _write(tmp_path / "fake" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="real: no images"):
        LabelledFolder(tmp_path, 8)
    with pytest.raises(ValueError, match="extensions must be among"):
        LabelledFolder(tmp_path, 8, extensions=(".tiff",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no 'real' or 'fake' sub-folder"):
        LabelledFolder(empty, 8)
