"""Hostile inputs around runs (issue 17, parts 3 to 5): sizes that can't be allocated, a batch-norm
model's one-sample last batch, damaged checkpoints and sweep folders, two writers of one run
folder, temporaries of killed writers, output paths, and runs whose every update is skipped.

Each class: the exit code, the message, and that nothing was written (no run folder, no output
file, no change to the folder a refused command was pointed at)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import assert_clean_error, base_config

from nntrain.checkpoint import FORMAT, load_checkpoint
from nntrain.data.loaders import TensorLoader, min_train_batch
from nntrain.errors import CheckpointError, ConfigError


def _raw(folder: Path, **train) -> dict:
    """A tiny, quick config: an MLP on 600 of mnist_small's samples (the rest validates)."""
    raw = base_config(folder)
    raw["data"]["val_split"] = 0.9
    raw["model"] = {"name": "mlp", "hidden": [8]}
    raw["train"] = {"epochs": 1, "device": "cpu", "test_at_end": False, **train}
    raw["log"].update(tensorboard=False, report=False)
    return raw


def _write(folder: Path, raw: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: 'nothing was written' is this, unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every reader but Python's does."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


# ------------------------------------------------------------------ 3. sizes that can't be allocated


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.new("L", (4, 4), 128).save(root / label / "x.png")
    return root


def _texts(folder: Path) -> Path:
    path = folder / "texts.csv"
    path.write_text("text,label\n" + "".join(f"word {i} here,{i % 2}\n" for i in range(20)), encoding="utf-8")
    return path


SIZES = pytest.mark.parametrize(
    "case, message",
    [
        ("mlp_of_a_trillion", r"model: 'mlp' needs 3\.6 TiB for its weights \(1,000,796,000,010 parameters x 4 bytes"),
        ("images_of_100000_pixels", r"data\.dataset\.size: 2 images of 100000x100000 pixels.* needs 93\.1 GiB"),
        ("texts_of_a_billion_tokens", r"data\.dataset\.max_len: 20 texts of 1,000,000,000 tokens .*needs 149\.0 GiB"),
    ],
    ids=["mlp_of_a_trillion", "images_of_100000_pixels", "texts_of_a_billion_tokens"],
)


@SIZES
@pytest.mark.parametrize("command", ["check", "fit"])
def test_what_cannot_be_allocated_says_the_size_it_needs(tmp_path, cli, monkeypatch, case, message, command):
    monkeypatch.setattr("nntrain.memory.host_memory", lambda: (16 * 2**30, "this machine has"))
    raw = _raw(tmp_path)
    if case == "mlp_of_a_trillion":
        raw["model"] = {"name": "mlp", "hidden": [1_000_000, 1_000_000]}
    elif case == "images_of_100000_pixels":
        raw["data"] = {"dataset": {"name": "image_folder", "root": str(_image_folder(tmp_path / "img")),
                                   "size": 100_000, "grayscale": True, "cache": False}, "val_split": 0.5}
    else:
        raw["data"] = {"dataset": {"name": "text_csv", "path": str(_texts(tmp_path)), "max_len": 10**9},
                       "val_split": 0.1}
        raw["model"] = {"name": "lstm"}
    stderr = assert_clean_error(cli(command, _write(tmp_path, raw)))
    assert re.search(message, stderr), stderr
    assert "this machine has 16.0 GiB" in stderr
    assert not (tmp_path / "runs").exists()


def test_an_allocation_that_fails_anyway_is_a_clean_error(tmp_path, cli, monkeypatch):
    """Memory unknown (no estimate to refuse with), and the real allocation fails: the same message."""
    from nntrain.registries import MODELS

    real = MODELS.build

    def build(spec, **kw):
        if torch.empty(0).device.type == "meta":
            return real(spec, **kw)
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 4003184000000 bytes.")

    monkeypatch.setattr("nntrain.memory.host_memory", lambda: (None, ""))
    monkeypatch.setattr(MODELS, "build", build)
    stderr = assert_clean_error(cli("check", _write(tmp_path, _raw(tmp_path))))
    assert "model: 'mlp' needs" in stderr and "allocating them failed (" in stderr and "not enough memory" in stderr


@pytest.mark.parametrize("command, when", [("check", "in the first training step"), ("fit", "in epoch 1, step 0")])
def test_memory_running_out_while_training_says_what_to_lower(tmp_path, cli, monkeypatch, command, when):
    def forward_backward(self, x, y, weight):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("nntrain.trainer.Trainer._forward_backward", forward_backward)
    stderr = assert_clean_error(cli(command, _write(tmp_path, _raw(tmp_path))), code=1)
    assert f"out of memory {when} (CUDA out of memory. Tried to allocate 2.00 GiB); lower data.batch_size" in stderr


# ------------------------------------------------------------------ 3. batch norm and a one-sample last batch


@pytest.mark.parametrize(
    "samples, batch, world, sizes, plain",
    [(10, 3, 1, [3, 3, 4], [3, 3, 3, 1]), (10, 9, 1, [10], [9, 1]), (9, 4, 1, [4, 5], [4, 4, 1]),
     (8, 4, 1, [4, 4], [4, 4]), (7, 3, 2, [4], [3, 1])],
    ids=["merged", "one_batch", "one_left", "even", "per_rank"],
)
def test_a_one_sample_last_batch_joins_the_one_before(samples, batch, world, sizes, plain):
    x, y = torch.arange(samples).float().unsqueeze(1), torch.arange(samples)
    for shuffle in (False, True):
        loader = TensorLoader(x, y, batch, shuffle=shuffle, world=world, min_batch=2)
        assert loader.batch_sizes() == sizes and len(loader) == len(sizes)
        assert loader.updates_per_epoch() == len(sizes)  # the one owner of the count agrees
        assert [len(b) for b, _ in loader.epoch(0)] == sizes
        if world == 1:  # every sample is used, once
            assert sorted(torch.cat([yb for _, yb in loader.epoch(1)]).tolist()) == list(range(samples))
    assert TensorLoader(x, y, batch, world=world).batch_sizes() == plain  # without batch norm nothing changes


def test_only_models_whose_batch_norm_sees_one_value_per_sample_need_two():
    from nntrain.models import build_model

    images = {"in_channels": 1, "image_size": [8, 8], "num_classes": 3, "in_features": 64}
    x = torch.randn(4, 1, 8, 8)
    assert min_train_batch(build_model({"name": "mlp", "hidden": [4]}, images), x) == 1
    assert min_train_batch(build_model({"name": "mlp", "hidden": [4], "batch_norm": True}, images), x) == 2
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))  # 36 values per sample
    assert min_train_batch(model, x) == 1


def test_a_batch_norm_model_trains_through_a_one_sample_last_batch(tmp_path, cli):
    raw = _raw(tmp_path)
    raw["model"]["batch_norm"] = True
    raw["data"]["batch_size"] = 599  # 600 training samples: 599 + 1 -> one batch of 600
    result = cli("fit", _write(tmp_path, raw))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["steps"] == 1


@pytest.mark.parametrize(
    "data, message",
    [({"batch_size": 1}, "data.batch_size: 1: the model's batch norm needs more than one value per channel"),
     ({"val_split": 5999 / 6000}, "data.dataset: 1 training sample: the model's batch norm needs")],
    ids=["batch_of_one", "one_training_sample"],
)
def test_batch_norm_without_two_samples_a_batch_is_refused(tmp_path, cli, data, message):
    raw = _raw(tmp_path)
    raw["model"]["batch_norm"] = True
    raw["data"].update(data)
    for command in ("check", "fit"):
        assert message in assert_clean_error(cli(command, _write(tmp_path, raw)))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 4. checkpoints with entries missing or wrong


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run folder (1 epoch, tiny MLP)."""
    from nntrain.fit import fit
    from nntrain.validate import config_from_dict

    folder = tmp_path_factory.mktemp("trained")
    summary = fit(config_from_dict(_raw(folder)), progress=False)
    return Path(summary["run_dir"])


def _drop(key):
    return lambda ckpt: ckpt.pop(key)


def _put(key, value):
    return lambda ckpt: ckpt.__setitem__(key, value)


DAMAGE = pytest.mark.parametrize(
    "damage, message",
    [
        (_drop("config"), "no 'config' entry"),
        (_drop("epoch"), "no 'epoch' entry"),
        (_drop("model"), "no 'model' entry"),
        (_put("model", [1, 2]), "'model' is not a state dict (parameter names to tensors) (it holds list"),
        (_put("model", {"fc1.weight": "x"}), "'model' is not a state dict"),
        (_put("config", "name: x"), "'config' is not a mapping (the run's config) (it holds str"),
        (_put("epoch", -1), "'epoch' is not a count (an integer >= 0)"),
        (_put("step", "7"), "'step' is not a count"),
    ],
    ids=["no_config", "no_epoch", "no_model", "model_list", "model_of_strings", "config_text", "negative_epoch",
         "step_text"],
)


def _damaged_copy(trained: Path, folder: Path, damage) -> Path:
    """A copy of the run folder whose last.pt and best.pt are damaged alike."""
    run = folder / "runs" / "test_run" / "damaged"
    shutil.copytree(trained, run)
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        ckpt = torch.load(path, weights_only=True)
        damage(ckpt)
        torch.save(ckpt, path)
    return run


@DAMAGE
def test_a_damaged_checkpoint_is_one_message_on_load(tmp_path, trained, cli, damage, message):
    run = _damaged_copy(trained, tmp_path, damage)
    before = _tree(run)
    best = run / "checkpoints" / "best.pt"
    # eval
    stderr = assert_clean_error(cli("eval", best))
    assert f"{best}: a damaged nntrain checkpoint, it can't be used to evaluate" in stderr and message in stderr
    # --resume
    config = _write(tmp_path, {**_raw(tmp_path), "train": {**_raw(tmp_path)["train"], "epochs": 2}})
    stderr = assert_clean_error(cli("fit", config, "--resume", run, "--allow-config-change"))
    assert "can't be used to resume" in stderr and message in stderr
    # model.init_from (it needs the weights only)
    if message.startswith(("no 'model'", "'model'")):
        raw = _raw(tmp_path)
        raw["model"]["init_from"] = {"checkpoint": str(best)}
        stderr = assert_clean_error(cli("fit", _write(tmp_path, raw, "init.yaml")))
        assert "model.init_from.checkpoint" in stderr and "can't be used for its weights" in stderr
    assert _tree(run) == before  # nothing written: no metrics file, no run.json change, no lock left
    assert [p.name for p in (tmp_path / "runs" / "test_run").iterdir()] == ["damaged"]


def test_a_training_state_that_does_not_fit_is_a_checkpoint_error(tmp_path, trained, cli):
    run = _damaged_copy(trained, tmp_path, _put("counters", {"samples_seen": 1}))
    stderr = assert_clean_error(cli("fit", _write(tmp_path, _raw(tmp_path)), "--resume", run))
    assert "'counters' is not the counters (samples_seen, train_time, data_time, nan_skipped)" in stderr
    run2 = _damaged_copy(trained, tmp_path / "b", _put("optimizer", {"state": {}, "param_groups": []}))
    stderr = assert_clean_error(cli("fit", _write(tmp_path, _raw(tmp_path)), "--resume", run2, "--allow-config-change"))
    assert "the checkpoint's training state doesn't fit this run" in stderr


def test_load_checkpoint_checks_what_its_purpose_needs(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(2)}}, path)
    assert set(load_checkpoint(path, purpose="weights")) == {"format", "model"}
    with pytest.raises(CheckpointError, match=r"can't be used to resume: no 'config' entry; no 'optimizer' entry"):
        load_checkpoint(path, purpose="resume")


# ------------------------------------------------------------------ 4. one writer per run folder

_HOLD = textwrap.dedent("""\
    import sys, time
    from nntrain.run_dir import lock_run_dir
    lock_run_dir(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_run_folder_in_use_is_refused(tmp_path, trained, cli):
    run = tmp_path / "runs" / "test_run" / "copy"
    shutil.copytree(trained, run)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(run)
        config = _write(tmp_path, {**_raw(tmp_path), "train": {**_raw(tmp_path)["train"], "epochs": 2}})
        stderr = assert_clean_error(cli("fit", config, "--resume", run, "--allow-config-change"))
        assert f"{run} is in use by process {holder.pid} on {socket.gethostname()}" in stderr
        assert _tree(run) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed (-9): its lock is stale, and taken over.
    assert (run / "run.lock").exists()
    result = cli("fit", config, "--resume", run, "--allow-config-change")
    assert result.exit_code == 0, result.stderr
    assert not (run / "run.lock").exists()  # released at the end


def test_a_lock_of_another_host_is_not_taken_over(tmp_path):
    from nntrain.run_dir import LOCK_FILE, lock_run_dir

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "x"}))
    with pytest.raises(ConfigError, match="is in use by process 1 on elsewhere .*delete .*run.lock"):
        lock_run_dir(tmp_path)
    (tmp_path / LOCK_FILE).unlink()
    lock = lock_run_dir(tmp_path)
    with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):  # not twice, not even by itself
        lock_run_dir(tmp_path)
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_processes_resuming_one_run_at_once(tmp_path, trained):
    run = tmp_path / "runs" / "test_run" / "copy"
    shutil.copytree(trained, run)
    # Enough epochs that the first to take the lock still trains when the other asks for it (a
    # short run could finish, and release the lock, before the other process has started).
    config = _write(tmp_path, {**_raw(tmp_path), "train": {**_raw(tmp_path)["train"], "epochs": 100_000}})
    cmd = [sys.executable, "-m", "nntrain", "fit", str(config), "--resume", str(run), "--allow-config-change"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        (refused,) = [p for p in procs if p.poll() is not None]  # the other one trains on
        assert refused.returncode == 2, refused.stderr.read()
        assert "is in use by process" in refused.stderr.read()
        (holder,) = [p for p in procs if p is not refused]
        holder.send_signal(signal.SIGINT)  # it saves last.pt and stops
        assert holder.wait(timeout=120) == 130, holder.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one writer: the steps never go back


def test_resume_removes_the_temporaries_of_killed_writers(tmp_path, trained, cli):
    run = tmp_path / "runs" / "test_run" / "copy"
    shutil.copytree(trained, run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [run / "checkpoints" / f".last.pt.{dead.pid}.tmp", run / f".summary.json.tmp-{dead.pid}"]
    live = run / "checkpoints" / f".last.pt.{os.getppid()}.tmp"  # a writer that still runs: kept
    for path in [*stale, live]:
        path.write_bytes(b"\0" * 1000)
    config = _write(tmp_path, {**_raw(tmp_path), "train": {**_raw(tmp_path)["train"], "epochs": 2}})
    result = cli("fit", config, "--resume", run, "--allow-config-change")
    assert result.exit_code == 0, result.stderr
    assert not any(p.exists() for p in stale) and live.exists()


# ------------------------------------------------------------------ 4. output paths of eval and lr-find


@pytest.mark.parametrize(
    "out, message",
    [("missing/m.json", "the folder {tmp}/missing does not exist"), (".", "is a folder; give a file name"),
     ("file.txt/m.json", "{tmp}/file.txt is a file, not a folder")],
    ids=["missing_folder", "a_folder", "under_a_file"],
)
def test_eval_out_is_checked_before_the_work(tmp_path, trained, cli, monkeypatch, out, message):
    (tmp_path / "file.txt").write_text("x")
    before = _tree(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("evaluated before checking --out")

    monkeypatch.setattr("nntrain.eval_checkpoint.load_trained", no_work)
    stderr = assert_clean_error(cli("eval", trained / "checkpoints" / "best.pt", "--out", tmp_path / out))
    assert f"--out {tmp_path / out}: " + message.format(tmp=tmp_path) in stderr
    assert _tree(tmp_path) == before


def test_lr_find_out_onto_a_folder_writes_into_it(tmp_path, cli):
    config = _write(tmp_path, _raw(tmp_path))
    (tmp_path / "curves").mkdir()
    result = cli("lr-find", config, "--steps", "5", "--out", tmp_path / "curves")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "curves" / "lr_find.csv").is_file() and not (tmp_path / "curves.csv").exists()
    (tmp_path / "file.txt").write_text("x")
    stderr = assert_clean_error(cli("lr-find", config, "--steps", "5", "--out", tmp_path / "file.txt" / "c.csv"))
    assert "file.txt is a file, not a folder" in stderr


# ------------------------------------------------------------------ 4. sweep folders with damaged bookkeeping


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A finished one-trial sweep folder."""
    pytest.importorskip("optuna")
    from sweep_helpers import write_sweep

    from nntrain.sweep import run_sweep

    folder = tmp_path_factory.mktemp("swept")
    config = write_sweep(folder, trials=1)
    summary = run_sweep(config)
    return Path(summary["sweep_dir"])


def _damage_sweep(folder: Path, name: str, how: str) -> None:
    path = folder / name
    if how == "missing":
        path.unlink()
    elif how == "folder":
        path.unlink()
        path.mkdir()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(how.encode("utf-8", "surrogateescape") if isinstance(how, str) else how)


SWEEP_DAMAGE = pytest.mark.parametrize(
    "name, how, code, message",
    [
        ("sweep.json", "garbage", 2, "sweep.json: damaged (not readable JSON"),
        ("sweep.json", "[1]", 2, "sweep.json: damaged (not a JSON object)"),
        ("sweep.json", '{"study": "test_run"}', 2, "sweep.json: damaged (no storage"),
        ("sweep.json", '{"study": "other", "storage": null}', 2, "holds no study 'other' (it holds: test_run)"),
        ("study.db", "hello", 2, "study.db: the study database is damaged or unreadable (file is not a database)"),
        ("study.db", "truncated", 2, "study.db: the study database is damaged or unreadable"),
        ("study.db", "", 2, "study.db: the sweep's study database is empty"),
        ("study.db", "missing", 2, "study.db: the sweep's study database is missing"),
        ("study.db", "folder", 2, "study.db: the sweep's study database is a folder"),
        ("sweep.pid", "\udcff\udcfe", 0, None),
        ("sweep.pid", "99999999999999999999\n0\n", 0, None),
        ("summary.json", '{"best": 5, "counts": 7, "trials_requested": "x"}', 0, None),
        ("trials.csv", "\udcff\0", 0, None),
    ],
    ids=["meta_garbage", "meta_list", "meta_no_storage", "meta_other_study", "db_garbage", "db_truncated",
         "db_empty", "db_missing", "db_folder", "pid_bytes", "pid_huge", "summary_garbage", "trials_garbage"],
)


@SWEEP_DAMAGE
def test_a_damaged_sweep_folder_gets_a_clean_message(tmp_path, swept, cli, name, how, code, message):
    folder = tmp_path / "runs" / "test_run" / swept.name
    shutil.copytree(swept, folder)
    (folder / "trial-0" / "summary.json").write_text('{"best": {"value": "x"}, "time_s": "y", "epochs": "z"}')
    _damage_sweep(folder, name, how)
    before = _tree(folder)
    config = swept.parent.parent.parent / "sweep.yaml"
    result = cli("sweep", config, "--resume", folder)
    if code:
        stderr = assert_clean_error(result, code)
        assert message in stderr and "--storage" not in stderr  # no option the user did not pass
        assert _tree(folder) == before
    else:
        assert result.exit_code == 0, result.stderr
        assert sorted(p.name for p in folder.glob("trial-*")) == ["trial-0"]  # nothing ran again
        _strict_json((folder / "summary.json").read_text())
    listing = cli("runs", tmp_path / "runs")  # a listing never fails on one folder's files
    assert listing.exit_code == 0 and "Traceback" not in listing.stderr, listing.stderr


# ------------------------------------------------------------------ 5. a run whose every update is skipped


@pytest.mark.parametrize("epochs, message", [
    (1, "training ended with its last 9 updates skipped (train.on_nan: skip"),
    (2, "10 updates in a row, a whole epoch, were skipped (train.on_nan: skip"),
], ids=["one_epoch", "two_epochs"])
def test_a_run_that_skips_every_update_fails(tmp_path, cli, epochs, message):
    raw = _raw(tmp_path, on_nan="skip", epochs=epochs)
    raw["optimizer"] = {"name": "sgd", "lr": 1.0e30}
    stderr = assert_clean_error(cli("fit", _write(tmp_path, raw)), code=1)
    assert message in stderr and "Lower optimizer.lr" in stderr
    run = next((tmp_path / "runs" / "test_run").iterdir())
    assert not (run / "summary.json").exists() and not (run / "checkpoints" / "best.pt").exists()
    status = _strict_json((run / "run.json").read_text())
    assert status["status"] == "failed" and "skipped" in status["reason"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)  # val/loss NaN is written as null
    assert not (run / "run.lock").exists()


def test_json_files_never_hold_nan(tmp_path):
    from nntrain.callbacks import MetricsLog
    from nntrain.run_dir import write_json

    write_json(tmp_path / "s.json", {"final": {"val/loss": math.nan, "x": [math.inf, 1.0]}, "n": 2})
    assert _strict_json((tmp_path / "s.json").read_text()) == {"final": {"val/loss": None, "x": [None, 1.0]}, "n": 2}
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.on_epoch_end(type("T", (), {"epoch": 1, "step": 3})(), {"val/loss": -math.inf})
    assert _strict_json((tmp_path / "metrics.jsonl").read_text())["val/loss"] is None
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "epoch": 0, "step": 1}\n{"kind": "ep')  # killed mid-line
    MetricsLog(tmp_path / "metrics.jsonl", resume_step=5)  # a half-written line is dropped, not a traceback
    assert (tmp_path / "metrics.jsonl").read_text() == '{"kind": "step", "epoch": 0, "step": 1}\n'


def test_the_summary_counts_skipped_updates(trained):
    summary = _strict_json((trained / "summary.json").read_text())
    assert summary["nan_skipped"] == 0 and summary["updates_skipped"] == 0
