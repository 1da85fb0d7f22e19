"""`nntrain runs`: a run's status from run.json (finished, interrupted, failed, running, stopped),
progress and metrics read back from its folder, sweeps as one row, and the listing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import assert_clean_error, nntrain_cmd, write_config

from nntrain import run_status
from nntrain.run_status import RunStatus, read_status, state
from nntrain.runs import collect, load_run, rows

NOW = datetime.now().astimezone()  # for relative times only: records get the time they are made


def _now() -> datetime:
    return datetime.now().astimezone()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _record(**changes) -> dict:
    record = {
        "status": "running", "pid": os.getpid(), "pid_start": run_status.process_start(os.getpid()),
        "host": socket.gethostname(), "started": _iso(_now()), "heartbeat": _iso(_now()), "ended": None,
        "reason": None, "epochs_planned": 5, "monitor": "val/acc", "mode": "max",
    }
    record.update(changes)
    return record


def make_run(folder: Path, name: str = "r", stamp: str = "20250101-000000", status: dict | None = None,
             epochs: list[dict] | None = None, summary: dict | None = None, config: dict | None = None) -> Path:
    """A run folder as fit leaves it, written by hand."""
    run_dir = folder / name / stamp
    run_dir.mkdir(parents=True)
    cfg = {"name": name, "seed": 0, "train": {"epochs": 5, "checkpoint": {"monitor": "val/acc"}}}
    cfg.update(config or {})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    if status is not None:
        (run_dir / "run.json").write_text(json.dumps(status), encoding="utf-8")
    lines = [json.dumps({"kind": "step", "epoch": 0, "step": 1, "train/loss": 2.0})]
    lines += [json.dumps({"kind": "epoch", "step": 10 * r["epoch"], **r}) for r in epochs or []]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run_dir


# ------------------------------------------------------------------------------ status, no training


def test_ended_runs_read_as_recorded():
    for status in ("finished", "interrupted", "failed"):
        assert state(_record(status=status, reason="why"))[0] == status


def test_running_with_live_process_and_fresh_heartbeat():
    assert state(_record()) == ("running", None)


def test_dead_process_on_this_host_reads_stopped():
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    status, reason = state(_record(pid=proc.pid, pid_start=None))
    assert status == "stopped" and str(proc.pid) in reason


def test_reused_pid_reads_stopped():
    """The pid is alive but started at another time: another process got the number."""
    start = run_status.process_start(os.getpid())
    if start is None:
        pytest.skip("no /proc on this system")
    assert state(_record(pid_start=start + 1))[0] == "stopped"


def test_stale_heartbeat_on_another_host_reads_stopped():
    old = _iso(_now() - timedelta(seconds=run_status.STALE_S + 5))
    status, reason = state(_record(host="elsewhere", pid=1, heartbeat=old))
    assert status == "stopped" and "heartbeat" in reason
    assert state(_record(host="elsewhere", pid=1))[0] == "running"  # fresh heartbeat: trusted


def test_status_writer_beats_and_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(run_status, "HEARTBEAT_S", 0.05)
    cfg = SimpleNamespace(train=SimpleNamespace(epochs=3, checkpoint=SimpleNamespace(monitor="val/acc", mode=None)))
    status = RunStatus(tmp_path, cfg)
    first = read_status(tmp_path)
    assert first["status"] == "running" and first["pid"] == os.getpid() and first["mode"] == "max"
    deadline = time.monotonic() + 10
    while read_status(tmp_path)["heartbeat"] == first["heartbeat"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_status(tmp_path)["heartbeat"] != first["heartbeat"]
    status.end("failed", "boom")
    ended = read_status(tmp_path)
    assert (ended["status"], ended["reason"]) == ("failed", "boom") and ended["ended"]
    time.sleep(0.2)  # the heartbeat thread stopped: nothing overwrites the end
    assert read_status(tmp_path) == ended
    RunStatus(tmp_path, cfg).end("finished")  # a resume in the same folder
    again = read_status(tmp_path)
    assert again["resumes"] == 1 and again["started"] == first["started"] and again["status"] == "finished"


# ------------------------------------------------------------------------------ reading folders


def test_unfinished_run_best_from_epoch_records(tmp_path):
    epochs = [{"epoch": 1, "val/acc": 0.5}, {"epoch": 2, "val/acc": 0.8}, {"epoch": 3, "val/acc": 0.7}]
    run = load_run(make_run(tmp_path, status=_record(), epochs=epochs))
    assert run.status == "running" and run.epochs_done == 3 and run.epochs_planned == 5
    assert (run.monitor, run.best, run.best_epoch) == ("val/acc", 0.8, 2)  # max: from run.json's mode
    assert run.final["val/acc"] == 0.7


def test_finished_run_from_summary(tmp_path):
    summary = {"epochs": 2, "final": {"val/acc": 0.9}, "best": {"monitor": "val/acc", "value": 0.91, "epoch": 1},
               "test": {"test/loss": 0.3, "test/acc": 0.88}, "time_s": 12.5, "samples_per_s": 1000.0}
    run = load_run(make_run(tmp_path, status=_record(status="finished"), summary=summary))
    assert run.status == "finished" and run.epochs_done == 2
    assert run.test_value() == ("test/acc", 0.88)
    assert run.duration_s == 12.5 and run.samples_per_s == 1000.0


def test_listing_sorted_filtered_and_sweeps(tmp_path):
    later, earlier = NOW, NOW - timedelta(hours=1)
    make_run(tmp_path, "b_run", status=_record(status="finished", started=_iso(later)))
    make_run(tmp_path, "a_run", status=_record(status="failed", reason="loss is nan", started=_iso(earlier)))
    sweep = tmp_path / "s" / "sweep-20250101-000000"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"study": "s", "created": _iso(earlier - timedelta(hours=1))}))
    (sweep / "summary.json").write_text(json.dumps({
        "metric": "val/acc", "trials_requested": 2, "counts": {"complete": 2},
        "best": {"number": 1, "value": 0.93},
    }))
    for n in range(2):
        make_run(sweep.parent, sweep.name, f"trial-{n}", status=_record(status="finished"))
    items = collect(tmp_path)
    assert [i.name for i in items] == ["s", "a_run", "b_run"]  # oldest first; the sweep is one row
    sweep_row = items[0].to_json()
    assert sweep_row["kind"] == "sweep" and sweep_row["trials"] == 2 and sweep_row["best_trial"] == 1
    assert sweep_row["status"] == "finished"
    assert [i.stamp for i in collect(sweep)] == ["trial-0", "trial-1"]  # a sweep folder lists its trials
    assert [i.name for i in collect(tmp_path, name="a_*")] == ["a_run"]
    header, cells = rows(items)
    assert cells[1][1] == "failed" and cells[1][-1] == "loss is nan"
    assert "2/2 trials" in cells[0]


def test_cli_json_and_bad_folder(cli, tmp_path):
    make_run(tmp_path, "x", status=_record(status="interrupted", reason="SIGINT: stopped"))
    result = cli("runs", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["name"], row["status"], row["reason"]) == ("x", "interrupted", "SIGINT: stopped")
    result = cli("runs", tmp_path)
    assert result.exit_code == 0 and "interrupted" in result.stdout
    assert "missing" in assert_clean_error(cli("runs", tmp_path / "missing"))


# ------------------------------------------------------------------------------ real runs


def _tiny(tmp_path: Path, epochs: int = 1, batch_size: int = 256, **sections) -> Path:
    """A small MLP on the embedded subset: one epoch is a few steps."""
    return write_config(
        tmp_path,
        model={"name": "mlp", "hidden": [16]},
        data={"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": batch_size,
              "normalize": {"name": "standardize"}},
        train={"epochs": epochs, "device": "cpu"},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False, "every_n_steps": 1},
        **sections,
    )


def _only_run(tmp_path: Path) -> dict:
    result = subprocess.run(nntrain_cmd("runs", tmp_path / "runs", "--json"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    return row


@pytest.mark.slow
def test_finished_and_failed_runs(cli, tmp_path):
    ok = cli("fit", _tiny(tmp_path))
    assert ok.exit_code == 0, ok.output
    row = _only_run(tmp_path)
    assert row["status"] == "finished" and (row["epochs"], row["epochs_planned"]) == (1, 1)
    assert row["best"] is not None and row["test"] is not None and row["samples_per_s"] > 0

    bad = tmp_path / "bad"
    bad.mkdir()
    failed = cli("fit", _tiny(bad, optimizer={"name": "sgd", "lr": 1.0e30}))
    assert failed.exit_code == 1, failed.output
    row = _only_run(bad)
    assert row["status"] == "failed" and "loss" in row["reason"].lower(), row


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A long run in a subprocess; returns once it has logged a training step."""
    config = _tiny(tmp_path, epochs=1000, batch_size=16)
    proc = subprocess.Popen(nntrain_cmd("fit", config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*/*/metrics.jsonl"))
        if found and found[0].stat().st_size > 0:
            return proc, found[0].parent
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run logged no step in 180 s")


@pytest.mark.slow
def test_sigint_reads_interrupted(tmp_path):
    proc, run_dir = _start(tmp_path)
    assert _only_run(tmp_path)["status"] == "running"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    row = _only_run(tmp_path)
    assert row["status"] == "interrupted" and row["reason"].startswith("SIGINT"), row
    assert (run_dir / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_kill_9_reads_stopped(tmp_path):
    proc, run_dir = _start(tmp_path)
    assert read_status(run_dir)["status"] == "running"
    proc.kill()  # SIGKILL: the run can record nothing
    proc.wait(timeout=60)
    assert read_status(run_dir)["status"] == "running"  # as the dead process left it
    row = _only_run(tmp_path)
    assert row["status"] == "stopped" and str(proc.pid) in row["reason"], row
