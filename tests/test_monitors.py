"""Any metric eval computes can be monitored (issue 15): checkpoints, early stopping and plateau
schedules on val/f1_macro, val/auroc, val/top5..., their mode known, logged each epoch; costly
metrics computed only when something asks for them (`log.metrics` or a monitor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import base_config

from nntrain.build import build_callbacks, build_parts
from nntrain.errors import ConfigError
from nntrain.fit import fit
from nntrain.validate import config_from_dict


def _raw(tmp_path: Path) -> dict:
    raw = base_config(tmp_path)
    raw["data"].update(val_split=0.9, batch_size=100)
    raw["model"] = {"name": "mlp", "hidden": [16]}
    raw["train"].update(epochs=2)
    return raw


def test_costly_metrics_are_monitored_and_logged_each_epoch(tmp_path):
    raw = _raw(tmp_path)
    raw["train"]["checkpoint"] = {"monitor": "val/f1_macro"}  # no mode: f1 is better higher
    raw["train"]["early_stopping"] = {"monitor": "val/auroc", "patience": 5}
    raw["scheduler"] = {"name": "reduce_on_plateau", "monitor": "val/top5", "patience": 0}
    raw["log"]["metrics"] = ["ece", "val/recall_macro"]
    cfg = config_from_dict(raw)
    assert cfg.log.metrics == ["ece", "recall_macro"]

    parts = build_parts(cfg)
    assert parts.metric_names == ["loss", "acc", "ece", "recall_macro", "f1_macro", "auroc", "top5"]
    assert parts.schedule.plateau.mode == "max"
    callbacks, checkpointer = build_callbacks(cfg, tmp_path / "run", progress=False)
    assert checkpointer.mode == "max" and callbacks[0].mode == "max"  # EarlyStopping on val/auroc

    summary = fit(cfg, progress=False)
    run_dir = Path(summary["run_dir"])
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for record in epochs:
        for key in ("val/f1_macro", "val/auroc", "val/top5", "val/ece", "val/recall_macro"):
            assert 0.0 <= record[key] <= 1.0, key
        assert "val/precision_macro" not in record  # not asked for: not computed
    best = max(epochs, key=lambda r: r["val/f1_macro"])
    assert summary["best"] == {"monitor": "val/f1_macro", "value": best["val/f1_macro"], "epoch": best["epoch"]}
    assert "test/f1_macro" in summary["test"]  # the test at the end measures what was monitored too

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("val/f1_macro")) == 2 and len(events.Scalars("val/ece")) == 2


def test_without_monitors_only_the_default_metrics_are_computed(tmp_path):
    assert build_parts(config_from_dict(_raw(tmp_path))).metric_names == ["loss", "acc"]


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("log", {"metrics": ["r2"]}, r"log.metrics.0: 'r2' is not measured on classification data"),
        ("train", {"checkpoint": {"monitor": "val/psnr"}}, r"train.checkpoint.monitor: 'val/psnr' is not measured"),
    ],
)
def test_a_metric_of_another_task_is_refused(tmp_path, section, value, message):
    raw = _raw(tmp_path)
    raw[section].update(value)
    with pytest.raises(ConfigError, match=message):
        build_parts(config_from_dict(raw))


def test_an_unknown_metric_name_suggests_the_closest(tmp_path):
    raw = _raw(tmp_path)
    raw["log"]["metrics"] = ["f1_makro"]
    with pytest.raises(ConfigError, match=r"log.metrics.0: unknown metric 'f1_makro'; did you mean 'f1_macro'\?"):
        config_from_dict(raw)
