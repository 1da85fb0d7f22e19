"""Safe loading (no pickled code, no YAML tags), sanitized run names, NaN handling, determinism."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

from nntrain.checkpoint import load_checkpoint, save_atomic
from nntrain.errors import CheckpointError, ConfigError, RunError
from nntrain.fit import fit
from nntrain.validate import config_from_dict, load_config


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "nntrain/1", "model": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    save_atomic({"format": "nntrain/1", "w": torch.ones(1000)}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an nntrain checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    assert load_checkpoint(good)["w"].sum() == 1000


def test_atomic_save_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"format": "nntrain/1", "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RunError, match="No space left on device"):
        save_atomic({"format": "nntrain/1", "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        "name: x\n"
        f"seed: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    with pytest.raises(ConfigError, match=r"evil.yaml:2: invalid YAML.*only plain YAML"):
        load_config(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "/abs", ""])
def test_run_names_cannot_escape_the_log_dir(name):
    raw = {"name": name, "data": {"dataset": {"name": "mnist_small"}}, "model": {"name": "mlp"}}
    with pytest.raises(ConfigError, match="name: String should"):
        config_from_dict(raw)


def _cfg(tmp_path, **train):
    return config_from_dict(
        {
            "name": "nan",
            "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.9, "batch_size": 100},
            "model": {"name": "mlp", "hidden": [16], "dropout": 0.2},
            "optimizer": {"name": "sgd", "lr": 0.05},
            "train": {"epochs": 2, "test_at_end": False, **train},
            "log": {"dir": str(tmp_path), "every_n_steps": 2, "tensorboard": False},
        }
    )


def _poison_batch(monkeypatch, at_step: int) -> None:
    """Makes the loss of the batches after update `at_step` NaN."""
    from nntrain.trainer import Trainer

    original = Trainer.update

    def update(self, micro_batches, *args, **kwargs):
        if self.step >= at_step and self.epoch == 1:
            micro_batches = [(x * math.nan, y) for x, y in micro_batches]
        return original(self, micro_batches, *args, **kwargs)

    monkeypatch.setattr(Trainer, "update", update)


def test_nan_stop_names_epoch_and_step_and_keeps_good_checkpoints(tmp_path, monkeypatch):
    _poison_batch(monkeypatch, at_step=7)  # epoch 2 starts at step 6 (6 updates/epoch)
    with pytest.raises(RunError, match=r"epoch 2, at or before step 8"):
        fit(_cfg(tmp_path), progress=False)
    run_dir = next((tmp_path / "nan").iterdir())
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_nan_skip_drops_updates_and_counts_them(tmp_path, monkeypatch):
    _poison_batch(monkeypatch, at_step=9)
    summary = fit(_cfg(tmp_path, on_nan="skip"), progress=False)
    assert summary["nan_skipped"] == 3  # steps 9, 10, 11 of 12 were poisoned
    run_dir = next((tmp_path / "nan").iterdir())
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert math.isfinite(summary["final"]["train/loss"])


def test_two_seeded_deterministic_runs_are_identical(tmp_path):
    runs = []
    for i in range(2):
        cfg = _cfg(tmp_path / str(i), deterministic=True)
        summary = fit(cfg, progress=False)
        run_dir = pathlib.Path(summary["run_dir"])
        lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs.append((lines, load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]))
    (curve_a, weights_a), (curve_b, weights_b) = runs
    assert curve_a == curve_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_log_dir_that_is_a_file_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for log_dir in (blocker, blocker / "deeper"):
        cfg = _cfg(log_dir)  # the run folder cannot be created under a file: a config mistake (exit 2)
        with pytest.raises(ConfigError, match=r"log\.dir: '.*file' is a file, so no run folder can be made"):
            fit(cfg, progress=False)
    assert blocker.read_text() == "not a folder"


def test_unwritable_run_folder_is_a_clear_run_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    cfg = _cfg(tmp_path / "runs")
    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)  # as on a read-only filesystem
    with pytest.raises(RunError, match="cannot create the run folder .*Permission denied"):
        fit(cfg, progress=False)


def test_data_errors_found_while_building_name_the_file_and_line(tmp_path):
    from nntrain.errors import DataError
    from nntrain.fit import check

    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata:\n  dataset: {name: csv, path: missing.csv, target: y}\nmodel: {name: mlp}\n")
    with pytest.raises(DataError, match=r"c.yaml:3 data.dataset.path: 'missing.csv' not found"):
        check(load_config(path))
    with pytest.raises(DataError, match=r"--set data.dataset.path=gone.csv data.dataset.path: 'gone.csv'"):
        check(load_config(path, ["data.dataset.path=gone.csv"]))
