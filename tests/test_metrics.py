"""The metrics table: names per task, modes, monitors, and the computation against plain formulas."""

import math

import pytest
import torch
from torch import nn

from nntrain import metrics
from nntrain.metrics import Context, Meter


@pytest.mark.parametrize(
    "task, expected",
    [
        ("classification", ["loss", "acc"]),
        ("regression", ["loss", "mse", "rmse", "mae"]),
        ("reconstruction", ["loss", "mse"]),
        ("unlabeled", ["loss"]),
    ],
)
def test_metrics_of_each_task(task, expected):
    assert metrics.for_task(task) == expected
    assert metrics.measured(task) == ["train/loss", *(f"val/{m}" for m in expected)]


def test_everything_a_task_has():
    everything = ["loss", "acc", "top5", "precision_macro", "recall_macro", "f1_macro",
                  "precision_weighted", "recall_weighted", "f1_weighted", "auroc", "ece"]
    assert metrics.for_task("classification", everything=True, num_classes=10) == everything
    assert "top5" not in metrics.for_task("classification", everything=True, num_classes=5)
    assert metrics.for_task("regression", everything=True) == ["loss", "mse", "rmse", "mae", "r2"]
    assert metrics.for_task("reconstruction", everything=True) == ["loss", "mse", "psnr"]


@pytest.mark.parametrize(
    "key, mode", [("val/acc", "max"), ("test/acc", "max"), ("val/loss", "min"), ("train/loss", "min"),
                  ("val/mse", "min"), ("val/rmse", "min"), ("val/mae", "min"), ("lr", "min"),
                  ("val/f1_macro", "max"), ("val/top5", "max"), ("val/auroc", "max"), ("val/ece", "min"),
                  ("val/r2", "max"), ("val/psnr", "max")]
)
def test_mode_of_every_metric(key, mode):
    assert metrics.mode(key) == mode


def test_monitor_mode_prefers_the_explicit_one():
    assert metrics.monitor_mode("val/acc", None) == "max"
    assert metrics.monitor_mode("val/loss", "max") == "max"


def test_monitors_are_checked_with_a_suggestion():
    assert set(metrics.monitorable()) == {
        "train/loss", "val/loss", "val/acc", "val/mse", "val/rmse", "val/mae", "val/top5",
        "val/precision_macro", "val/recall_macro", "val/f1_macro", "val/precision_weighted",
        "val/recall_weighted", "val/f1_weighted", "val/auroc", "val/ece", "val/r2", "val/psnr",
    }
    assert metrics.check_monitor("val/acc") == "val/acc"
    with pytest.raises(ValueError, match=r"unknown metric 'val/accc'; did you mean 'val/acc'\? \(choices: train/loss"):
        metrics.check_monitor("val/accc")


def test_registering_twice_or_a_bad_mode_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        metrics.register(metrics.Metric("acc", ("classification",), "max", metrics.ClassSums))
    with pytest.raises(ValueError, match="mode must be min or max"):
        metrics.register(metrics.Metric("new_metric", ("classification",), "up", metrics.ClassSums))
    assert "new_metric" not in metrics.names()


def _run(ctx: Context, batches, names=None) -> dict[str, float]:
    meter = Meter(ctx, torch.device("cpu"), names)
    for out, target in batches:
        meter.update(out, target)
    return meter.compute("val")


def test_classification_loss_and_accuracy():
    torch.manual_seed(0)
    out, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    loss = nn.CrossEntropyLoss()
    got = _run(Context("classification", loss), [(out[:4], y[:4]), (out[4:], y[4:])])
    assert list(got) == ["val/loss", "val/acc"]
    assert got["val/acc"] == (out.argmax(1) == y).sum().item() / 10
    assert got["val/loss"] == pytest.approx(loss(out, y).item(), rel=1e-6)


def test_regression_errors_are_in_original_units():
    torch.manual_seed(0)
    out, y = torch.randn(8, 2), torch.randn(8, 2)
    scale, shift = [2.0, 10.0], [1.0, -5.0]
    ctx = Context("regression", nn.MSELoss(), target_shift=shift, target_scale=scale)
    got = _run(ctx, [(out[:5], y[:5]), (out[5:], y[5:])])
    s, t = torch.tensor(scale), torch.tensor(shift)
    err = (out * s + t) - (y * s + t)
    assert got["val/mse"] == pytest.approx(err.pow(2).mean().item(), rel=1e-6)
    assert got["val/rmse"] == pytest.approx(math.sqrt(got["val/mse"]))
    assert got["val/mae"] == pytest.approx(err.abs().mean().item(), rel=1e-6)


def test_reconstruction_compares_the_sigmoid_of_logits():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 6), torch.rand(4, 6)
    got = _run(Context("reconstruction", nn.BCEWithLogitsLoss(), sigmoid=True), [(logits, x)])
    assert list(got) == ["val/loss", "val/mse"]
    assert got["val/mse"] == pytest.approx((logits.sigmoid() - x).pow(2).mean().item(), rel=1e-6)


def test_only_the_asked_metrics_are_computed():
    out, y = torch.zeros(2, 1), torch.ones(2, 1)
    assert _run(Context("regression", nn.MSELoss()), [(out, y)], names=["mae"]) == {"val/mae": 1.0}
    with pytest.raises(ValueError, match="unknown metric 'maee'; did you mean 'mae'"):
        Meter(Context("regression"), torch.device("cpu"), ["maee"])


def test_update_never_reads_from_the_device(monkeypatch):
    """Per-batch host syncs would stall a GPU: updates may not call item/tolist/bool on tensors."""
    def refuse(*args, **kwargs):
        raise AssertionError("host sync in Meter.update")

    ctx = Context("regression", nn.MSELoss(), target_shift=[0.0], target_scale=[2.0])
    meter = Meter(ctx, torch.device("cpu"), metrics.for_task("regression", everything=True))
    cls = Context("classification", nn.CrossEntropyLoss(), num_classes=7)
    # Every classification metric but AUROC (it keeps the outputs and reads them once, at the end).
    names = [n for n in metrics.for_task("classification", everything=True, num_classes=7) if n != "auroc"]
    classes = Meter(cls, torch.device("cpu"), names)
    out, y = torch.randn(4, 7), torch.tensor([0, 3, 6, 1])
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    meter.update(torch.zeros(3, 1), torch.ones(3, 1))
    meter.update(torch.zeros(3, 1), torch.tensor([[1.0], [2.0], [3.0]]))
    classes.update(out, y)
    classes.update(out, y)
    monkeypatch.undo()
    got = meter.compute("test")
    # Scaled targets 1 1 1 1 2 3 against 0: squares 17/6; times 2**2 in original units.
    assert got["test/loss"] == pytest.approx(17 / 6) and got["test/mse"] == pytest.approx(4 * 17 / 6)
    assert got["test/mae"] == 3.0 and got["test/r2"] == pytest.approx(1 - 17 / 3.5)  # sst 3.5
    assert set(classes.compute("test")) == {f"test/{n}" for n in names}
