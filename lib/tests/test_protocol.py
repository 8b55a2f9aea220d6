"""The evaluation protocol's tables and the ablation summaries, on hand-made score tables; chapter_runs
on the smoke profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dfattn.ablations import ABLATIONS, ablation_config, as_text, summarise
from dfattn.config import PROFILES
from dfattn.data.synthetic import SyntheticFaces
from dfattn.protocol import cross_manipulation, cross_manipulation_table, quality, quality_table


def _frames(model: str, kinds_probs: dict[str, list[float]]) -> pd.DataFrame:
    rows = [(model, kind, p, int(kind != "real")) for kind, ps in kinds_probs.items() for p in ps]
    return pd.DataFrame(rows, columns=["model", "kind", "prob", "label"])


def test_cross_manipulation_table_scores_each_family_against_all_reals():
    frames = pd.concat([
        _frames("a", {"real": [0.1, 0.2, 0.3, 0.4], "face_swap": [0.9, 0.8], "region_swap": [0.15, 0.35],
                      "sbi": [0.25, 0.45]}),
        _frames("b", {"real": [0.5, 0.5, 0.5, 0.5], "face_swap": [0.5, 0.5], "region_swap": [0.9, 0.9]}),
    ])
    table = cross_manipulation_table(frames)
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "face_swap"] == 1.0
    # region_swap 0.15 beats 1 of 4 reals, 0.35 beats 3 of 4: (1 + 3) / 8
    assert table.loc["a", "region_swap"] == pytest.approx(0.5)
    assert table.loc["a", "mean"] == pytest.approx(0.75)  # over families only, not sbi
    assert table.loc["a", "sbi"] == pytest.approx((2 + 4) / 8)
    assert table.loc["b", "face_swap"] == 0.5 and table.loc["b", "region_swap"] == 1.0
    assert np.isnan(table.loc["b", "sbi"])


class Brightness(nn.Module):
    """Scores brightness: the same for every copy of an image, so two copies score identically."""

    def fake_logit(self, images):
        return images.mean((1, 2, 3)) * 10 - 5


def test_every_model_is_scored_on_the_same_images():
    faces = SyntheticFaces(3, 64, seed=1)
    models = {"x": Brightness(), "y": Brightness()}
    frames = cross_manipulation(models, faces, 64, progress=False)
    x, y = (frames[frames["model"] == m].reset_index(drop=True) for m in "xy")
    assert len(x) == 3 * 5 + 3  # reals and four families per face, then three SBI fakes
    assert np.array_equal(x["logit"], y["logit"]) and list(x["kind"]) == list(y["kind"])
    q = quality(models, faces, 64, strengths={"jpeg": [50], "blur": [1.0]}, degradations=["jpeg", "blur"],
                progress=False)
    table = quality_table(q)
    assert list(table.index) == [("jpeg", 50), ("blur", 1.0)] and list(table.columns) == ["x", "y"]
    assert (table["x"] == table["y"]).all()


def test_ablation_summary_mean_and_spread_over_seeds():
    results = pd.DataFrame({"ablation": ["r", "r", "s", "s"], "seed": [0, 1, 0, 1],
                            "mean": [0.8, 0.9, 0.6, 0.6], "sbi": [1.0, 1.0, 0.9, 0.7],
                            "quality": [0.7, 0.7, 0.5, 0.6]})
    summary = summarise(results)
    assert list(summary.index) == ["r", "s"]
    assert summary.loc["r", "mean"] == pytest.approx(0.85)
    assert summary.loc["r", "mean_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert summary.loc["s", "mean_std"] == 0.0 and summary.loc["s", "seeds"] == 2
    assert as_text(summary).loc["r", "held-out families AUC"] == "0.850 ± 0.071"
    one = summarise(results[results["seed"] == 0])
    assert np.isnan(one.loc["r", "mean_std"]) and as_text(one).loc["r", "held-out SBI AUC"] == "1.000"


def test_ablation_rows_change_what_they_say():
    budget = PROFILES["smoke"].ablation
    configs = {a.name: ablation_config(a, "smoke", seed=0).resolved() for a in ABLATIONS}
    assert configs["LAA-Net: no FPN"].model_config == {"fpn": "none"}
    assert configs["LAA-Net: BI instead of SBI"].blend == "bi"
    assert configs["MAT: no AGDA"].model_config == {"agda_weight": 0.0}
    assert all(c.image_size == budget.image_size and c.epochs == budget.epochs for c in configs.values())
    assert len({a.name for a in ABLATIONS}) == len(ABLATIONS)
    assert sum(a.reference for a in ABLATIONS) == 2


def test_chapter_runs_trains_then_reads_back_chapter_3s_runs(tmp_path):
    from dfattn.protocol import chapter_runs
    from dfattn.train import TrainConfig

    models = ["baseline", "mat"]
    configs, detectors, test_faces = chapter_runs(models, "smoke", tmp_path, seed=0)
    assert list(configs) == models == list(detectors)
    assert configs["mat"] == TrainConfig(model="mat", profile="smoke", seed=0, progress=False).resolved()
    assert all((tmp_path / m / "best.safetensors").exists() for m in models)
    assert all(not d.training for d in detectors.values())
    assert len(test_faces) == configs["baseline"].n_test
    _, again, faces_again = chapter_runs(models, PROFILES["smoke"], tmp_path, seed=0)  # read back
    for m in models:
        for (name, a), b in zip(detectors[m].state_dict().items(), again[m].state_dict().values()):
            assert torch.equal(a, b), (m, name)
    assert len(faces_again) == len(test_faces)


def test_cross_dataset_table_intervals_and_paired_differences():
    """Hand-made scores: a perfect model, the baseline at chance-ish, a copy of the baseline. The
    table brackets each value by its interval; the copy's paired difference is exactly 0, and the
    perfect model's AUC difference is positive with an interval above 0."""
    import pandas as pd

    from dfattn.protocol import cross_dataset_table, with_intervals

    rng = np.random.default_rng(0)
    n = 200
    label = np.r_[np.zeros(n), np.ones(n)].astype(int)
    paths = [f"{'rf'[y]}/{i}.jpg" for i, y in enumerate(label)]
    base = rng.random(2 * n) * 0.6 + 0.2 * label  # weakly informative
    frames = pd.concat([
        pd.DataFrame({"model": "laanet", "label": label, "prob": 0.1 + 0.8 * label, "path": paths}),
        pd.DataFrame({"model": "baseline", "label": label, "prob": base, "path": paths}),
        pd.DataFrame({"model": "copy", "label": label, "prob": base, "path": paths}),
    ], ignore_index=True)
    table, diffs = cross_dataset_table(frames, n_boot=200)
    assert table.loc["laanet", "auc"] == 1.0 and table.loc["laanet", "eer"] == 0.0
    for m in table.index:
        assert table.loc[m, "auc_low"] <= table.loc[m, "auc"] <= table.loc[m, "auc_high"]
    assert table.loc["baseline", "n"] == 2 * n
    assert diffs.loc["copy - baseline", "auc"] == 0 and diffs.loc["copy - baseline", "auc_high"] == 0
    assert diffs.loc["laanet - baseline", "auc_low"] > 0
    shown = with_intervals(table)
    assert shown.loc["laanet", "auc"] == "1.000 [1.000, 1.000]" and "n" in shown.columns
    shuffled = frames.copy()
    shuffled.loc[shuffled["model"] == "copy", "path"] = [p + "x" for p in paths]
    with pytest.raises(ValueError, match="same images"):
        cross_dataset_table(shuffled, n_boot=10)


def test_false_alarms_by_group_uses_each_models_threshold():
    import pandas as pd

    from dfattn.evaluate import OperatingPoint
    from dfattn.protocol import false_alarms_by_group

    logits = np.array([-2.0, -0.5, 0.5, 2.0])
    frames = pd.concat([pd.DataFrame({"model": m, "label": 0, "logit": logits}) for m in ("a", "b")])
    points = {"a": OperatingPoint(logit=0.0, rule="balanced_acc"), "b": OperatingPoint(logit=1.0, rule="balanced_acc")}
    table = false_alarms_by_group(frames, points, {"gender": ["male", "male", "female", "female"]})
    assert table.loc[("all", "all"), "a"] == 0.5 and table.loc[("all", "all"), "b"] == 0.25
    assert table.loc[("gender", "female"), "a"] == 1.0 and table.loc[("gender", "male"), "a"] == 0.0
    assert table.loc[("gender", "female"), "n"] == 2
    with pytest.raises(ValueError, match="real images only"):
        false_alarms_by_group(frames.assign(label=1), points, {"gender": ["m"] * 4})


def test_kept_makes_each_item_once_and_serves_the_same_tensors():
    from dfattn.protocol import Kept

    class Counting(torch.utils.data.Dataset):
        calls = 0

        def __len__(self):
            return 3

        def __getitem__(self, i):
            Counting.calls += 1
            return {"image": torch.full((3, 4, 4), float(i) / 7), "index": i}

    kept = Kept(Counting())
    first = [kept[i]["image"] for i in range(3)]
    again = [kept[i]["image"] for i in range(3)]
    assert Counting.calls == 3 and len(kept) == 3
    assert all(a is b for a, b in zip(first, again))
    assert torch.equal(first[2], torch.full((3, 4, 4), 2 / 7))  # exactly as made: no uint8 round trip
