"""Operating points and calibration: known answers on hand-made scores, and the trainer's choice
stored with best.safetensors."""

import math

import numpy as np
import pytest

from dfattn.evaluate import (OperatingPoint, choose_operating_point, expected_calibration_error,
                             fit_temperature, operating_metrics, tpr_at_fpr)

# four reals and four fakes; one real (0.9) outscores three fakes
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.8, 0.95])


def test_tpr_at_fpr_reads_the_roc_curve_without_interpolating():
    assert tpr_at_fpr(LABELS, SCORES, 0.25) == 1.0  # threshold 0.4: one real of four above
    assert tpr_at_fpr(LABELS, SCORES, 0.2) == 0.25  # no real allowed: only 0.95 is caught
    assert tpr_at_fpr(LABELS, SCORES, 0.0) == 0.25
    assert tpr_at_fpr(LABELS, SCORES, 1.0) == 1.0
    assert math.isnan(tpr_at_fpr([1, 1], [0.2, 0.3], 0.05))
    with pytest.raises(ValueError, match="fpr must be in"):
        tpr_at_fpr(LABELS, SCORES, 1.5)


def test_expected_calibration_error_known_values():
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.8, 0.8]) == pytest.approx(0.25)
    assert expected_calibration_error([1] * 5, [0.0] * 5) == pytest.approx(1.0)
    # 7 fakes in 10 scored 0.7: calibrated, whatever the bin count
    y = [1] * 7 + [0] * 3
    assert expected_calibration_error(y, [0.7] * 10) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(y, [0.7] * 10, bins=3) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # p = 1 falls in the last bin
    metrics = operating_metrics(LABELS, SCORES)
    assert set(metrics) == {"tpr_at_fpr_1", "tpr_at_fpr_5", "ece"} and metrics["tpr_at_fpr_5"] == 0.25


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / 3.0))).astype(int)  # true P(fake) = sigmoid(z / 3)
    t = fit_temperature(y, z)
    assert t == pytest.approx(3.0, rel=0.05)
    before = expected_calibration_error(y, 1 / (1 + np.exp(-z)))
    after = expected_calibration_error(y, 1 / (1 + np.exp(-z / t)))
    assert after < 0.02 < before
    with pytest.raises(ValueError, match="real and fake"):
        fit_temperature([1, 1], [0.1, 0.2])


def test_best_balanced_accuracy_threshold_sits_between_two_validation_scores():
    point = choose_operating_point(LABELS, SCORES)  # the scores stand in for logits
    assert point.logit == pytest.approx(0.35)  # between 0.3 (a real) and 0.4 (a fake)
    assert (point.tpr, point.fpr, point.balanced_acc) == (1.0, 0.25, 0.875)
    assert point.rule == "balanced_acc" and point.n == 8 and point.n_fake == 4
    decisions = [point.decide(s) for s in SCORES]
    assert decisions == ["real", "real", "real", "fake", "fake", "fake", "fake", "fake"]


def test_target_fpr_threshold_admits_no_more_false_positives_than_asked():
    point = choose_operating_point(LABELS, SCORES, rule="fpr", target_fpr=0.2)
    assert point.logit == pytest.approx(0.925) and point.fpr == 0.0 and point.tpr == 0.25
    loose = choose_operating_point(LABELS, SCORES, rule="fpr", target_fpr=0.3)
    assert loose.logit == pytest.approx(0.35) and loose.fpr == 0.25
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    z = rng.normal(y * 1.5, 1.0)
    for target in (0.01, 0.05, 0.2):
        p = choose_operating_point(y, z, rule="fpr", target_fpr=target)
        assert ((z >= p.logit) & (y == 0)).sum() / (y == 0).sum() <= target
    with pytest.raises(ValueError, match="unknown operating-point rule"):
        choose_operating_point(LABELS, SCORES, rule="youden")
    with pytest.raises(ValueError, match="both real and fake"):
        choose_operating_point([0, 0], [0.1, 0.2])


def test_operating_point_decisions_bands_and_headers():
    point = OperatingPoint(logit=1.0, rule="balanced_acc", temperature=2.0, on="val")
    assert point.threshold == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert point.decide(1.0) == "fake" and point.decide(0.99) == "real"
    assert point.decide(1.1, band=0.05) == "uncertain" and point.decide(6.0, band=0.05) == "fake"
    assert OperatingPoint.from_header({"operating_point": point.to_dict()}) == point
    default = OperatingPoint.from_header({})
    assert default.threshold == 0.5 and "no operating point" in default.describe()
    with pytest.raises(ValueError, match="unknown fields"):
        OperatingPoint.from_header({"operating_point": {"logit": 0.0, "colour": "red"}}, "x.safetensors")
    with pytest.raises(ValueError, match="unusable"):
        OperatingPoint.from_header({"operating_point": {"logit": 0.0, "temperature": 0.0}})


def test_training_stores_the_operating_point_chosen_on_validation(tmp_path):
    """best.safetensors carries the threshold chosen on that epoch's val pseudo-fakes (here: at most
    25 % false positives, with a temperature), and it reproduces from the validation predictions."""
    from dfattn.checkpoint import read_checkpoint
    from dfattn.cli import train as train_cli
    from dfattn.evaluate import predict
    from dfattn.train import Trainer, TrainConfig

    run = tmp_path / "run"
    assert train_cli.main(["--model", "baseline", "--epochs", "1", "--face-size", "64", "--out", str(run),
                           "--operating-rule", "fpr", "--target-fpr", "0.25", "--temperature-scaling",
                           "--profile", "smoke", "--n-train", "8", "--n-val", "8", "--n-test", "4",
                           "--batch-size", "8", "--num-workers", "0", "--no-progress",
                           "--no-val-families"]) == 0
    _, header = read_checkpoint(run / "best.safetensors")
    point = OperatingPoint.from_header(header)
    assert point.rule == "fpr" and point.target_fpr == 0.25 and point.fpr <= 0.25
    assert point.n == 16 and point.n_fake == 8 and point.temperature != 1.0
    # the same choice from the validation predictions of the selected weights
    trainer = Trainer(TrainConfig(**{k: v for k, v in header["train_config"].items()}), run)
    df = predict(trainer.model, trainer.val_sets()["val"], progress=False)
    again = choose_operating_point(df["label"], df["logit"], "fpr", 0.25, True)
    assert again.logit == pytest.approx(point.logit, abs=1e-5)
    assert again.temperature == pytest.approx(point.temperature, rel=1e-4)
    with pytest.raises(ValueError, match="operating_rule must be one of"):
        TrainConfig(model="baseline", profile="smoke", operating_rule="youden").resolved()
