"""Early stopping on scripted metric sequences; checkpoint ranking; TensorBoard tags and hparams."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nntrain.callbacks import EarlyStopping, ModelCheckpoint, improved
from nntrain.checkpoint import load_checkpoint
from nntrain.fit import fit
from nntrain.validate import config_from_dict


def _stop_epoch(values, **kwargs) -> int | None:
    es = EarlyStopping(**{"monitor": "val/loss", "mode": "min", "patience": 2, **kwargs})
    for epoch, value in enumerate(values, start=1):
        if es._evaluate(value):
            return epoch
    return None


@pytest.mark.parametrize(
    "values, kwargs, expected",
    [
        ([1.0, 0.9, 0.8, 0.7], {}, None),  # always improving
        ([1.0, 0.9, 0.95, 0.96], {}, 4),  # two epochs without improvement
        ([1.0, 0.9, 0.95, 0.85, 0.9, 0.9], {}, 6),  # improvement resets the counter
        ([1.0, 0.99, 0.98, 0.97], {"min_delta": 0.05}, 3),  # improvements below min_delta don't count
        ([0.5, 0.6, 0.7], {"mode": "max", "monitor": "val/acc"}, None),
        ([0.5, 0.4, 0.3], {"mode": "max", "monitor": "val/acc", "patience": 1}, 2),
        ([1.0, math.nan], {}, 2),  # a non-finite value stops at once
    ],
)
def test_early_stopping_decisions(values, kwargs, expected):
    assert _stop_epoch(values, **kwargs) == expected


def test_early_stopping_reason_names_the_metric():
    es = EarlyStopping("val/loss", "min", patience=1)
    es._evaluate(1.0)
    es._evaluate(math.inf)
    assert es.reason == "val/loss is inf"


def test_nan_is_never_an_improvement():
    assert not improved(math.nan, None, "min")
    assert not improved(math.nan, 1.0, "max")
    assert improved(0.5, None, "min") and improved(0.5, 1.0, "min") and not improved(0.5, 0.4, "min")


def test_keep_top_k_ranking(tmp_path):
    ckpt = ModelCheckpoint(tmp_path, "val/acc", "max", keep_top_k=2)
    assert ckpt._rank(0.5, 1) == []
    assert ckpt._rank(0.7, 2) == []
    assert ckpt._rank(0.6, 3) == [(0.5, 1)]  # enters, evicts the worst
    assert ckpt._rank(0.1, 4) is None  # doesn't enter
    assert ckpt._rank(math.nan, 5) is None
    assert ckpt.top == [(0.7, 2), (0.6, 3)]


def _cfg(tmp_path: Path, **overrides):
    raw = {
        "name": "cb",
        "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.8, "batch_size": 100},
        "model": {"name": "mlp", "hidden": [32, 16]},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 3, "test_at_end": False, "grad_clip": {"norm": 0.5}},
        "log": {"dir": str(tmp_path), "every_n_steps": 4},
    }
    for key, value in overrides.items():
        raw[key].update(value)
    return config_from_dict(raw)


def test_tensorboard_tags_grad_norms_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = fit(_cfg(tmp_path, train={"checkpoint": {"monitor": "val/acc", "keep_top_k": 2}}), progress=False)
    run_dir = Path(summary["run_dir"])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    per_layer = {f"grad_norm/{layer}.{kind}" for layer in ("fc1", "fc2", "out") for kind in ("weight", "bias")}
    assert per_layer <= tags
    assert {"train/loss", "lr", "momentum", "train/grad_norm", "train/grad_norm_clipped", "val/loss",
            "val/acc", "train/loss_epoch", "hparam/best_val/acc"} <= tags
    # 1,200 images / 100 = 12 updates per epoch, 3 epochs, logged every 4 updates.
    assert [e.step for e in events.Scalars("train/loss")] == list(range(4, 37, 4))
    assert [e.step for e in events.Scalars("val/acc")] == [12, 24, 36]
    clipped = [e.value for e in events.Scalars("train/grad_norm_clipped")]
    raw = [e.value for e in events.Scalars("train/grad_norm")]
    assert all(c <= 0.5 + 1e-4 and c <= r + 1e-4 for c, r in zip(clipped, raw))
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")
    assert events.Tensors("config/text_summary")
    # keep_top_k=2: two epoch files besides last/best.
    assert len(list((run_dir / "checkpoints").glob("epoch-*.pt"))) == 2


def test_restore_best_puts_back_the_best_weights(tmp_path):
    es = {"monitor": "val/loss", "patience": 1, "min_delta": 0.0, "restore_best": True}
    raw = _cfg(tmp_path, train={"epochs": 4, "early_stopping": es, "grad_clip": None}).to_dict()
    # Too large a step: val/loss gets worse after a while, so the run stops and restores the best epoch.
    raw["optimizer"] = {"name": "sgd", "lr": 0.5, "momentum": 0.99}
    summary = fit(config_from_dict(raw), progress=False)
    run_dir = Path(summary["run_dir"])
    assert "early stopping" in summary["stop_reason"] and "restored" in summary["stop_reason"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)


def test_restore_best_keeps_best_pt_true_to_its_epoch(tmp_path):
    from nntrain.eval_checkpoint import evaluate_checkpoint

    es = {"monitor": "val/loss", "patience": 2, "restore_best": True}
    raw = _cfg(tmp_path, train={"epochs": 30, "early_stopping": es, "grad_clip": None,
                                "checkpoint": {"monitor": "val/acc"}}).to_dict()
    raw["optimizer"] = {"name": "sgd", "lr": 0.3, "momentum": 0.9}
    summary = fit(config_from_dict(raw), progress=False)
    assert "restored" in summary["stop_reason"]
    best = Path(summary["run_dir"]) / "checkpoints" / "best.pt"
    metrics, _ = evaluate_checkpoint(best, "val")
    assert metrics["val/acc"] == summary["best"]["value"]  # best.pt holds the weights of its epoch
    last, _ = evaluate_checkpoint(best.with_name("last.pt"), "val")
    assert last["val/loss"] == pytest.approx(summary["final"]["val/loss"])  # the restored weights
