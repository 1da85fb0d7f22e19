"""The LR range test (`nntrain lr-find`) and the schedule preview (`nntrain check --plot-lr`)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from nntrain.build import build_parts, build_trainer
from nntrain.cli import app
from nntrain.lr_find import range_test, suggest
from nntrain.plots import sketch
from nntrain.validate import validate

CONFIG = {
    "name": "lrf",
    "seed": 0,
    "data": {"dataset": {"name": "mnist_small"}, "batch_size": 64, "val_split": 0.1,
             "normalize": {"name": "standardize"}},
    "model": {"name": "mlp", "hidden": [128]},
    "optimizer": {"name": "adam", "lr": 1.0e-3},
    "train": {"epochs": 2, "device": "cpu"},
}


@pytest.fixture(scope="module")
def parts():
    return build_parts(validate(CONFIG))


def test_adam_suggestion_is_plausible_and_the_model_is_left_untouched(parts):
    weights = {k: v.clone() for k, v in parts.model.state_dict().items()}
    rng = torch.get_rng_state()
    result = range_test(build_trainer(parts), start_lr=1e-7, end_lr=10.0, steps=100)

    assert 1e-4 <= result.suggestion <= 1e-1, result.suggestion
    assert result.suggestion < result.min_loss_lr  # the steepest descent comes before the minimum
    assert 1e-3 <= result.min_loss_lr <= 1.0
    # The sweep is exponential and the smoothing is a bias-corrected moving average (beta 0.98).
    n = len(result.lrs)
    assert result.lrs == pytest.approx([1e-7 * (1e8) ** (i / 99) for i in range(n)], rel=1e-9)
    avg, expected = 0.0, []
    for i, loss in enumerate(result.losses):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98 ** (i + 1)))
    assert result.smoothed == pytest.approx(expected, rel=1e-9)
    # It stops when the smoothed loss passes 4x its best (here: LR ~10 blows Adam up), not before.
    if result.stop_reason is not None:
        assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(result.losses[-1])
    assert all(s <= 4 * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1]))

    for key, value in parts.model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert parts.optimizer.state_dict()["state"] == {}  # Adam's moments from the sweep are gone
    assert [g["lr"] for g in parts.optimizer.param_groups] == [1e-3] * len(parts.optimizer.param_groups)
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_suggested_lr_trains(parts):
    """One epoch at the suggestion reaches a usable accuracy; one at a far too small LR does not."""
    suggestion = range_test(build_trainer(parts), steps=100).suggestion
    start = ({k: v.clone() for k, v in parts.model.state_dict().items()}, parts.optimizer.state_dict())
    accuracy = {}
    for lr in (suggestion, 1e-6):
        parts.model.load_state_dict(start[0])
        parts.optimizer.load_state_dict(start[1])
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        trainer = build_trainer(parts)
        trainer.train_epoch()
        accuracy[lr] = trainer.evaluate()["val/acc"]
    parts.model.load_state_dict(start[0])
    parts.optimizer.load_state_dict(start[1])
    assert accuracy[suggestion] > 0.85 > accuracy[1e-6], accuracy


def test_accumulation_counts_updates(parts):
    raw = {**CONFIG, "train": {**CONFIG["train"], "accumulate": 3}}
    acc_parts = build_parts(validate(raw))
    updates, forwards = [], []
    acc_parts.optimizer.register_step_post_hook(lambda *a: updates.append(1))
    acc_parts.model.register_forward_hook(lambda *a: forwards.append(1))
    result = range_test(build_trainer(acc_parts), start_lr=1e-5, end_lr=1e-2, steps=20)
    assert len(result.lrs) == len(updates) == 20 and len(forwards) == 60


def test_suggest_finds_the_steepest_descent_of_a_known_curve():
    x = np.linspace(-7, 1, 161)  # log10(lr)
    loss = 1 + 1 / (1 + np.exp(3 * (x + 3))) + 0.1 * np.exp(2 * x)  # steepest at 1e-3, min near 1e-1
    steepest, minimum = suggest(10**x, loss)
    assert steepest == pytest.approx(1e-3, rel=0.13)
    assert minimum == pytest.approx(10 ** x[np.argmin(loss)]) and minimum > steepest


def test_range_test_rejects_bad_ranges(parts):
    from nntrain.errors import ConfigError

    with pytest.raises(ConfigError, match="start-lr"):
        range_test(build_trainer(parts), start_lr=1.0, end_lr=0.1)


def test_sketch_marks_the_suggestion():
    text = sketch([1e-5, 1e-4, 1e-3, 1e-2], [2.0, 1.5, 1.0, 3.0], width=20, height=5, mark=1e-3)
    assert "|" in text and "*" in text and "1e-05" in text


# ---------------------------------------------------------------- CLI


def _write(tmp_path, **changes) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "log": {"dir": str(tmp_path / "runs")}, **changes}))
    return str(path)


def test_cli_lr_find_writes_the_curve(tmp_path):
    out = tmp_path / "curve.csv"
    result = CliRunner().invoke(app, ["lr-find", _write(tmp_path), "--steps", "40", "--start-lr", "1e-5",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "suggested lr" in result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["lr", "loss", "smoothed"] and 2 <= len(rows) - 1 <= 40


def test_cli_lr_find_bad_range_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["lr-find", _write(tmp_path), "--start-lr", "0"])
    assert result.exit_code == 2
    assert "start-lr" in result.output


def test_a_plot_path_under_a_file_names_that_file(tmp_path):
    from nntrain.errors import RunError
    from nntrain.plots import write_csv

    blocker = tmp_path / "notes"
    blocker.write_text("x")
    with pytest.raises(RunError, match=r"cannot write .*notes/sub/lr.csv: '.*notes' is a file, not a folder"):
        write_csv(blocker / "sub" / "lr.csv", ("lr",), [(0.1,)])
    assert blocker.read_text() == "x"


def test_cli_check_plot_lr_writes_every_update(tmp_path):
    config = _write(tmp_path, scheduler={"name": "cosine", "warmup_steps": 10})
    out = tmp_path / "schedule.csv"
    result = CliRunner().invoke(app, ["check", config, "--plot-lr", "--plot-out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))[1:]
    updates = math.ceil(5400 / 64) * 2
    assert len(rows) == updates and rows[0][:2] == ["0", "1"] and rows[-1][:2] == [str(updates - 1), "2"]
    assert float(rows[0][2]) == pytest.approx(1e-4) and float(rows[10][2]) == pytest.approx(1e-3)
    assert "warmup: the first 10 updates" in result.output


def test_lr_auto_runs_the_range_test_and_records_the_choice(tmp_path):
    from nntrain.fit import fit
    from nntrain.validate import config_from_dict, load_config

    cfg = config_from_dict({
        "name": "auto",
        "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 64},
        "model": {"name": "mlp", "hidden": [32]},
        "optimizer": {"name": "adam", "lr": "auto"},
        "train": {"epochs": 1, "test_at_end": False},
        "log": {"dir": str(tmp_path), "tensorboard": False},
    })
    summary = fit(cfg, progress=False)
    assert 1e-5 < summary["found_lr"] < 1.0
    saved = load_config(f"{summary['run_dir']}/config.yaml")
    assert saved.optimizer.lr == summary["found_lr"]
    assert summary["final"]["val/acc"] > 0.8
