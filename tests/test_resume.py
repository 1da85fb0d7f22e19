"""Exact resume: an interrupted and resumed run ends bitwise equal to the same run done in one go."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nntrain.checkpoint import load_checkpoint
from nntrain.errors import ConfigError, Interrupted
from nntrain.fit import fit
from nntrain.trainer import Trainer
from nntrain.validate import config_from_dict

# Shuffling, dropout, augmentation, a warmup+cosine schedule and accumulation with a short last group.
BASE = {
    "name": "resume",
    "seed": 3,
    "data": {
        "dataset": {"name": "mnist_small"},
        "val_split": 0.9,  # 600 training images: 10 batches of 64 -> 4 updates/epoch (3+3+3+1)
        "batch_size": 64,
        "normalize": {"name": "standardize"},
        "augment": [{"name": "random_crop", "size": 28, "padding": 2}],
    },
    "model": {"name": "mlp", "hidden": [32], "dropout": 0.3},
    "optimizer": {"name": "adam", "lr": 0.003},
    "scheduler": {"name": "cosine", "warmup_steps": 3},
    "train": {"epochs": 3, "accumulate": 3, "test_at_end": False},
    "log": {"tensorboard": True, "every_n_steps": 1},
}


def _cfg(tmp_path: Path, model: dict | None = None, **train):
    raw = json.loads(json.dumps(BASE))
    raw["log"]["dir"] = str(tmp_path)
    raw["model"].update(model or {})
    raw["train"].update(train)
    return config_from_dict(raw)


# Averaged weights (issue 15): EMA every 2 updates; SWA from epoch 2 (SWALR replaces the cosine
# schedule, BatchNorm statistics recomputed for the average); stopped inside the SWA phase (step 6)
# and at the boundary before it (step 4, SWALR then starts in the resumed run).
EMA = {"train": {"ema": {"decay": 0.9, "every_n_steps": 2}}}
SWA = {"model": {"batch_norm": True},
       "train": {"swa": {"start_epoch": 2, "lr": 1.0e-3, "anneal_epochs": 1, "anneal_strategy": "linear"}}}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _interrupt_at(monkeypatch, step: int) -> None:
    """Acts as SIGINT's handler would, when the run reaches optimizer update `step`."""
    original = Trainer.update

    def update(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.step == step and self.interrupted is None:
            self.interrupted = signal.SIGINT

    monkeypatch.setattr(Trainer, "update", update)


def _run_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "resume").iterdir())


@pytest.mark.parametrize(
    ("stop_step", "extra"),
    [(6, {}), (4, {}), (6, EMA), (6, SWA), (4, SWA)],
    ids=["mid-epoch", "epoch-boundary", "ema-mid-epoch", "swa-mid-epoch", "swa-epoch-boundary"],
)
def test_resume_is_bitwise_equal(tmp_path, monkeypatch, stop_step, extra):
    def cfg(folder: Path):
        return _cfg(folder, extra.get("model"), **extra.get("train", {}))

    straight = tmp_path / "straight"
    fit(cfg(straight), progress=False)
    expected = _weights(_run_dirs(straight)[0])

    parted = tmp_path / "parted"
    with monkeypatch.context() as m:
        _interrupt_at(m, stop_step)
        with pytest.raises(Interrupted) as info:
            fit(cfg(parted), progress=False)
    assert info.value.exit_code == 130
    run_dir = _run_dirs(parted)[0]
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved["step"] == stop_step
    # Step 6 is inside epoch 2 (4 updates per epoch); step 4 ends epoch 1.
    assert saved["batch_in_epoch"] == (6 if stop_step == 6 else 10)

    # TensorBoard orders event files by name, whose first field is the creation second: a real resume
    # comes later than the interruption; in a test it could fall in the same second.
    time.sleep(1.1)
    fit(cfg(parted), progress=False, resume=run_dir)
    resumed = _weights(run_dir)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    if extra:  # the averaged weights above, the trained ones and the averaging state here
        ends = [load_checkpoint(d / "checkpoints" / "last.pt") for d in (_run_dirs(straight)[0], run_dir)]
        for key in ends[0]["raw_model"]:
            assert torch.equal(ends[0]["raw_model"][key], ends[1]["raw_model"][key]), key
        assert ends[0]["averaging"] == ends[1]["averaging"]
        assert ends[0]["optimizer"]["param_groups"][0]["lr"] == ends[1]["optimizer"]["param_groups"][0]["lr"]

    # The metrics stream has each step once, in order, like the uninterrupted one.
    def steps(folder: Path) -> list[tuple[str, int]]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"], r.get("train/loss")) for r in map(json.loads, lines)]

    assert steps(run_dir) == steps(_run_dirs(straight)[0])

    # TensorBoard: the resumed stream purges what the interrupted run logged after its checkpoint.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = [e.step for e in events.Scalars("train/loss")]
    assert logged == list(range(1, 13))  # 3 epochs x 4 updates, logged every step, each once


def test_early_stopping_counters_survive_resume(tmp_path, monkeypatch):
    # patience 1 with min_delta huge: stops after epoch 2 in one go; a resume after epoch 1 must agree.
    es = {"monitor": "val/loss", "patience": 1, "min_delta": 10.0}
    straight = tmp_path / "straight"
    summary = fit(_cfg(straight, epochs=5, early_stopping=es), progress=False)
    assert summary["epochs"] == 2 and "early stopping" in summary["stop_reason"]

    parted = tmp_path / "parted"
    with monkeypatch.context() as m:
        _interrupt_at(m, 4)
        with pytest.raises(Interrupted):
            fit(_cfg(parted, epochs=5, early_stopping=es), progress=False)
    run_dir = _run_dirs(parted)[0]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["callbacks"]["EarlyStopping"]["wait"] == 0
    summary = fit(_cfg(parted, epochs=5, early_stopping=es), progress=False, resume=run_dir)
    assert summary["epochs"] == 2 and "early stopping" in summary["stop_reason"]


def test_resume_refuses_a_changed_config(tmp_path):
    fit(_cfg(tmp_path, epochs=1), progress=False)
    run_dir = _run_dirs(tmp_path)[0]
    changed = _cfg(tmp_path, epochs=2)
    changed_lr = config_from_dict({**changed.to_dict(), "optimizer": {"name": "adam", "lr": 0.01}})
    with pytest.raises(ConfigError, match=r"optimizer.lr: 0.003 -> 0.01"):
        fit(changed_lr, progress=False, resume=run_dir)
    # With the flag it continues, keeping the original config.yaml beside the new one.
    summary = fit(changed, progress=False, resume=run_dir, allow_config_change=True)
    assert summary["epochs"] == 2
    assert (run_dir / "config.yaml").exists() and list(run_dir.glob("config.resumed-*.yaml"))


def test_resume_of_a_checkpoint_from_before_a_key_existed(tmp_path):
    """A key added to the schema later (here data.on_device) takes its default: not a change."""
    fit(_cfg(tmp_path, epochs=1), progress=False)
    run_dir = _run_dirs(tmp_path)[0]
    last = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["config"]["data"]["on_device"]
    torch.save(state, last)
    assert fit(_cfg(tmp_path, epochs=1), progress=False, resume=run_dir)["epochs"] == 1


def test_resume_of_folder_without_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint in this folder"):
        fit(_cfg(tmp_path), progress=False, resume=tmp_path)


def test_resume_of_a_checkpoint_outside_a_run_folder_is_refused(tmp_path):
    loose = tmp_path / "downloads" / "best.pt"  # fit would treat tmp_path as the run folder to write into
    loose.parent.mkdir()
    loose.write_bytes(b"weights")
    with pytest.raises(ConfigError, match=r"--resume .*best.pt: not in a run folder .*model.init_from"):
        fit(_cfg(tmp_path / "runs"), progress=False, resume=loose)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nntrain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _write_config(tmp_path: Path, epochs: int) -> Path:
    raw = json.loads(json.dumps(BASE))
    raw["log"]["dir"] = str(tmp_path / "runs")
    raw["train"]["epochs"] = epochs
    raw["data"]["val_split"] = 0.1  # 5,400 images: epochs long enough to be interrupted
    raw["log"]["every_n_steps"] = 5
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_for_training(run_root: Path, proc: subprocess.Popen, timeout: float = 60.0) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = list(run_root.glob("resume/*/metrics.jsonl"))
        if metrics and metrics[0].read_text().count("\n") >= 2:
            return metrics[0].parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resumes_exactly(tmp_path, signum):
    config = _write_config(tmp_path, epochs=2)
    straight = _cli("fit", str(config), "--set", f"log.dir={tmp_path / 'straight'}")
    assert straight.wait(timeout=300) == 0, straight.communicate()
    expected = _weights(next((tmp_path / "straight" / "resume").iterdir()))

    proc = _cli("fit", str(config))
    run_dir = _wait_for_training(tmp_path / "runs", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "resume with: nntrain fit" in err and "--resume" in err and "Traceback" not in err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] > 0

    resumed = _cli("fit", str(config), "--resume", str(run_dir))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    weights = _weights(run_dir)
    assert all(torch.equal(expected[k], weights[k]) for k in expected)


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    config = _write_config(tmp_path, epochs=20)
    for delay in (0.5, 1.3, 2.1):
        proc = _cli("fit", str(config), "--set", "train.checkpoint.every_n_steps=1")
        run_dir = _wait_for_training(tmp_path / "runs", proc)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        # Killed at an arbitrary moment (often mid-write): last.pt is the previous complete file.
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] > 0
        shutil.rmtree(run_dir)
