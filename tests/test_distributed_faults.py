"""torchrun jobs under faults (issue 16, items 1-6): signals stop the whole job cleanly, resume is
exact and refuses another number of processes, unshuffled shards of unequal size train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from nntrain.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "job",
    "seed": 1,
    "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.1, "batch_size": 20,
             "normalize": {"name": "standardize"}},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "test_at_end": False},
    "log": {"every_n_steps": 5, "tensorboard": False},
}


def _config(tmp_path: Path, **sections) -> Path:
    raw = {**CONFIG, "log": {**CONFIG["log"], "dir": str(tmp_path / "runs")}}
    for key, value in sections.items():
        raw[key] = {**raw[key], **value}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    # A session of its own, as a shell's job: signals reach only the process they are sent to.
    return subprocess.Popen(
        [sys.executable, "-m", "nntrain", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=env,
    )


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _wait_for_training(tmp_path: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    """The run folder, once both ranks are past a few updates (metrics.jsonl has a step line)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for metrics in (tmp_path / "runs").glob("*/*/metrics.jsonl"):
            if metrics.read_text().strip():
                return metrics.parent
        time.sleep(0.2)
    raise AssertionError("training did not start")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_parent_stops_every_worker_after_saving(tmp_path, sig):
    config = _config(tmp_path, train={"epochs": 50})
    proc = _start("fit", str(config), "--nproc", "2")
    run_dir = _wait_for_training(tmp_path, proc)
    job = _descendants(proc.pid)
    assert len(job) >= 3  # torchrun and its two workers
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    time.sleep(0.5)
    assert not [pid for pid in job if _alive(pid)], "workers outlived the job"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 50 * 135 and state["world_size"] == 2
    # Rank 0 speaks for the job: one notice, one resume command, and it keeps --nproc.
    assert err.count("finishing this step") == 1, err[-3000:]
    assert err.count("resume with:") == 1, err[-3000:]
    resume_line = next(line for line in err.splitlines() if "resume with:" in line)
    assert "--nproc 2" in resume_line and str(run_dir) in resume_line


def test_sigint_to_torchrun_ends_with_130_and_no_traceback(tmp_path):
    config = _config(tmp_path, train={"epochs": 50})
    proc = _start("fit", str(config), "--nproc", "2")
    run_dir = _wait_for_training(tmp_path, proc)
    launcher = [pid for pid in _descendants(proc.pid)
                if b"nntrain.launch" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(launcher) == 1
    os.kill(launcher[0], signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "SignalException" not in err, err[-3000:]
    assert (run_dir / "checkpoints" / "last.pt").exists()


def _interrupting_hook(tmp_path: Path, step: int) -> dict:
    """An environment whose workers act as a signal would at optimizer update `step` (every rank)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import signal
        from nntrain.trainer import Trainer
        original = Trainer.update
        def update(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if self.step == {step} and self.interrupted is None:
                self.interrupted = signal.SIGINT
        Trainer.update = update
    """))
    return {**os.environ, "PYTHONPATH": str(hook)}


def _step_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if r["kind"] == "step"}


def test_resume_under_ddp_logs_the_losses_of_the_straight_run(tmp_path):
    """Resume under torchrun: the run ends where the uninterrupted one does, and as the interval
    loss sums are saved per rank, the first logged loss after the resume (its interval straddles
    the interruption) equals the uninterrupted run's."""
    straight = _config(tmp_path / "a", train={"epochs": 1})
    result = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(straight), "--nproc", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = _step_losses(next((tmp_path / "a" / "runs" / "job").iterdir()))

    config = _config(tmp_path / "b", train={"epochs": 1})
    stopped = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(config), "--nproc", "2"],
                             capture_output=True, text=True, timeout=300, env=_interrupting_hook(tmp_path, 23))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    run_dir = next((tmp_path / "b" / "runs" / "job").iterdir())
    resumed = subprocess.run(
        [sys.executable, "-m", "nntrain", "fit", str(config), "--nproc", "2", "--resume", str(run_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight_state = load_checkpoint(next((tmp_path / "a" / "runs" / "job").iterdir()) / "checkpoints" / "last.pt")
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (straight_state["epoch"], straight_state["step"]) == (1, 135)
    got = _step_losses(run_dir)
    assert got.keys() == expected.keys()
    assert got[25] == pytest.approx(expected[25], rel=1e-5)  # the interval of updates 21-25
    assert got == pytest.approx(expected, rel=1e-5)


def test_resume_with_another_number_of_processes_is_refused_unless_allowed(tmp_path):
    config = _config(tmp_path, train={"epochs": 1})
    stopped = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(config), "--nproc", "2"],
                             capture_output=True, text=True, timeout=300, env=_interrupting_hook(tmp_path, 40))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / "job").iterdir())
    one = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(config), "--resume", str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 2
    assert "processes (--nproc): 2 -> 1" in one.stderr and "--allow-config-change" in one.stderr
    allowed = subprocess.run(
        [sys.executable, "-m", "nntrain", "fit", str(config), "--resume", str(run_dir), "--allow-config-change"],
        capture_output=True, text=True, timeout=300,
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    # 5,400 samples: 135 updates of 40 in two processes, 270 of 20 in one. Update 40 of 135 is
    # 29.6% of the epoch: the single process continues at batch 80 and the schedule-free run ends
    # after 40 + (270 - 80) updates.
    assert state["epoch"] == 1 and state["step"] == 40 + 270 - 80 and state["world_size"] == 1


def test_unshuffled_shards_of_unequal_size_train(tmp_path):
    """5,401 training samples in batches of 100: ranks of 2,701 and 2,700 samples would run 28 and
    27 updates (a collective mismatch); the shards are padded to one length instead."""
    config = _config(tmp_path, data={"shuffle": False, "val_split": 599 / 6000, "batch_size": 100})
    result = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(config), "--nproc", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(next((tmp_path / "runs" / "job").iterdir()) / "checkpoints" / "last.pt")
    assert state["step"] == 28
