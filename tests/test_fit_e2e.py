"""End to end: `nntrain fit` LeNet-5 on mnist_small for 2 epochs, then read back everything the run left.

One training run (a subprocess, as users run it) is shared by the module's tests.
"""

import json
import math
import re
import subprocess

import pytest
import torch
from helpers import REPO, assert_clean_error, nntrain_cmd

from nntrain.validate import load_config

pytestmark = pytest.mark.slow

EPOCHS, BATCH, EVERY = 2, 64, 20
TRAIN = 5400  # mnist_small: 6,000 training images, val_split 0.1
STEPS_PER_EPOCH = math.ceil(TRAIN / BATCH)  # 85
TOTAL = EPOCHS * STEPS_PER_EPOCH
EPOCH_STEPS = [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]  # [85, 170]
LOG_STEPS = list(range(EVERY, TOTAL + 1, EVERY))  # [20, 40, ..., 160]
LR, GAMMA = 2e-3, 0.7
OVERRIDES = [f"train.epochs={EPOCHS}", f"log.every_n_steps={EVERY}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, write_config):
    folder = tmp_path_factory.mktemp("e2e")
    path = write_config(
        folder,
        name="e2e",
        scheduler={"name": "exponential", "gamma": GAMMA},
        train={"epochs": 1, "device": "cpu", "checkpoint": {"monitor": "val/acc"},
               "early_stopping": {"monitor": "val/loss", "patience": 5}},
    )
    args = ["fit", path]
    for override in OVERRIDES:
        args += ["--set", override]
    result = subprocess.run(nntrain_cmd(*args), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    runs = list((folder / "runs" / "e2e").iterdir())
    assert len(runs) == 1, runs
    return {"config": path, "dir": runs[0], "stdout": result.stdout, "stderr": result.stderr}


def _jsonl(run):
    return [json.loads(line) for line in (run["dir"] / "metrics.jsonl").read_text().splitlines()]


def _summary(run):
    return json.loads((run["dir"] / "summary.json").read_text())


def test_run_folder_layout(run):
    d = run["dir"]
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", d.name)
    for name in ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "summary.json"):
        assert (d / name).is_file(), name
    assert len(list(d.glob("events.out.tfevents.*"))) == 1
    assert not list(d.rglob("*.tmp")), "a temporary checkpoint file was left behind"
    assert str(d) in run["stdout"]  # the summary names the run folder
    assert "Traceback" not in run["stderr"]


def test_checkpoints_load_safely_and_hold_the_training_state(run):
    last = torch.load(run["dir"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    best = torch.load(run["dir"] / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    for ckpt in (last, best):
        for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "callbacks",
                    "config", "config_hash", "seed", "provenance"):
            assert key in ckpt, key
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
        assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
        assert ckpt["provenance"]["torch"] == str(torch.__version__)
        assert ckpt["provenance"]["nntrain"]
    assert (last["epoch"], last["step"]) == (EPOCHS, TOTAL)
    assert last["seed"] == 0
    cfg = load_config(run["dir"] / "config.yaml")
    assert last["config"] == cfg.to_dict() and last["config_hash"] == cfg.hash()
    assert last["scheduler"] is not None and last["optimizer"]["state"]  # Adam moments are saved
    assert "EarlyStopping" in last["callbacks"] and "ModelCheckpoint" in last["callbacks"]
    summary = _summary(run)
    assert best["epoch"] == summary["best"]["epoch"]
    assert last["callbacks"]["ModelCheckpoint"]["best"] == pytest.approx(summary["best"]["value"])

    from nntrain.models import build_model

    model = build_model(cfg.model.model_dump(), {"in_features": 784, "in_channels": 1, "image_size": 28,
                                                 "num_classes": 10})
    model.load_state_dict(best["model"])  # the weights fit the model the config builds


def test_tensorboard_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run["dir"]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "lr", "val/loss", "val/acc"} <= tags, tags
    steps = lambda tag: sorted(e.step for e in events.Scalars(tag))  # noqa: E731
    # x-axis is the optimizer step: every `every_n_steps` updates; epoch means of the same
    # quantities go to `<tag>_epoch` (one tag, one series).
    assert steps("train/loss") == steps("lr") == LOG_STEPS
    assert steps("train/loss_epoch") == steps("val/loss") == steps("val/acc") == EPOCH_STEPS
    lr = {e.step: e.value for e in events.Scalars("lr")}
    # exponential decays per epoch: epoch 1 trains at LR, epoch 2 at LR * GAMMA.
    assert lr[80] == pytest.approx(LR) and lr[100] == pytest.approx(LR * GAMMA)
    epochs = [r for r in _jsonl(run) if r["kind"] == "epoch"]
    val_acc = [e.value for e in sorted(events.Scalars("val/acc"), key=lambda e: e.step)]
    assert val_acc == pytest.approx([r["val/acc"] for r in epochs], abs=1e-6)
    assert all(math.isfinite(e.value) for e in events.Scalars("train/loss"))


def test_metrics_jsonl(run):
    records = _jsonl(run)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == LOG_STEPS
    assert [r["step"] for r in epochs] == EPOCH_STEPS and [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert {"train/loss", "val/loss", "val/acc", "lr"} <= set(r)
    assert steps[-1]["train/loss"] < steps[0]["train/loss"]  # it learns


def test_summary(run):
    summary = _summary(run)
    assert summary["epochs"] == EPOCHS and summary["steps"] == TOTAL
    assert summary["test"]["test/acc"] >= 0.9  # LeNet-5, 2 epochs on 5,400 images
    epochs = [r for r in _jsonl(run) if r["kind"] == "epoch"]
    assert summary["best"]["monitor"] == "val/acc"
    assert summary["best"]["value"] == max(r["val/acc"] for r in epochs)
    assert summary["final"]["val/acc"] == epochs[-1]["val/acc"]
    assert summary["samples_per_s"] > 0


def test_config_yaml_is_the_resolved_config(run):
    saved = load_config(run["dir"] / "config.yaml")
    assert saved == load_config(run["config"], OVERRIDES)
    assert saved.train.epochs == EPOCHS and saved.log.every_n_steps == EVERY


def test_eval_val_reproduces_the_best_val_acc(run, cli):
    best = run["dir"] / "checkpoints" / "best.pt"
    result = cli("eval", best, "--split", "val")
    assert result.exit_code == 0, result.stderr
    record = json.loads((best.parent / "best.val.json").read_text())
    # Same weights, same data, same batches in eval mode on CPU: the same computation, bit for bit.
    assert record["val/acc"] == _summary(run)["best"]["value"]
    assert record["split"] == "val" and record["epoch"] == _summary(run)["best"]["epoch"]
    assert f"{record['val/acc']:.4f}" in result.stdout


def test_eval_test_writes_json_next_to_the_checkpoint(run, cli):
    best = run["dir"] / "checkpoints" / "best.pt"
    result = cli("eval", best, "--split", "test")
    assert result.exit_code == 0, result.stderr
    record = json.loads((best.parent / "best.test.json").read_text())
    assert record["test/acc"] == _summary(run)["test"]["test/acc"]  # the test at the end of fit, again
    assert record["checkpoint"] == str(best)


def test_eval_out_and_set(run, cli, tmp_path):
    out = tmp_path / "sub" / "metrics.json"
    out.parent.mkdir()
    best = run["dir"] / "checkpoints" / "best.pt"
    result = cli("eval", best, "--split", "val", "--out", out, "--set", "data.eval_batch_size=128")
    assert result.exit_code == 0, result.stderr
    record = json.loads(out.read_text())
    # Other batch boundaries change float sums, not predictions: the accuracy stays.
    assert record["val/acc"] == _summary(run)["best"]["value"]
    bad = cli("eval", best, "--set", "data.eval_batch_size=0")
    assert "data.eval_batch_size" in assert_clean_error(bad)


def test_fit_on_real_mnist(tmp_path, cli, mnist_root, write_config):
    """One epoch of the course's MLP on the full MNIST of ../shared/data (60,000 + 10,000 images)."""
    path = write_config(
        tmp_path,
        name="real_mnist",
        data={"dataset": {"name": "mnist", "root": str(mnist_root), "download": True},
              "val_split": 0.1, "batch_size": 128, "normalize": {"name": "standardize"}},
        model={"name": "mlp", "hidden": [128]},
        optimizer={"name": "adam", "lr": 1e-3},
        train={"epochs": 1, "device": "cpu", "checkpoint": {"monitor": "val/acc"}},
        log={"dir": str(tmp_path / "runs"), "every_n_steps": 100, "tensorboard": False},
    )
    result = cli("fit", path)
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    (run_dir,) = (tmp_path / "runs" / "real_mnist").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == math.ceil(54_000 / 128)
    # One epoch of 784-128-10 with Adam gives 0.946 at seed 0; a broken pipeline stays near 0.1.
    assert summary["test"]["test/acc"] >= 0.93
