"""Data-parallel training with torchrun on CPU (gloo, 2 processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from nntrain.checkpoint import load_checkpoint
from nntrain.data.loaders import TensorLoader
from nntrain.fit import fit
from nntrain.validate import config_from_dict

pytestmark = pytest.mark.slow

# 5,400 training images: 54 batches of 100 in one process, or 54 batches of 50 on each of 2 ranks.
CONFIG = {
    "name": "ddp",
    "seed": 1,
    "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.1, "batch_size": 50,
             "normalize": {"name": "standardize"}},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1},
    "log": {"every_n_steps": 10},
}


def _write(tmp_path: Path, **overrides) -> Path:
    raw = {**CONFIG, "log": {**CONFIG["log"], "dir": str(tmp_path / "runs")}}
    raw["data"] = {**raw["data"], **overrides}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _nntrain(*args: str, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nntrain", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def test_shards_are_disjoint_and_cover_the_epoch():
    x = torch.arange(10).float()
    shards = [TensorLoader(x, x, 2, shuffle=True, seed=0, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([xb for xb, _ in s.epoch(3)]) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 5
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    whole = torch.cat([xb for xb, _ in TensorLoader(x, x, 4, shuffle=True, seed=0).epoch(3)])
    # Batch i of the single process holds exactly batch i of both ranks (same data order).
    assert set(whole[:4].tolist()) == set(seen[0][:2].tolist()) | set(seen[1][:2].tolist())


def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    config = _write(tmp_path)
    result = _nntrain("fit", str(config), "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / "ddp").iterdir())
    ddp = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ddp["step"] == 54

    single = fit(config_from_dict({**CONFIG, "data": {**CONFIG["data"], "batch_size": 100},
                                   "log": {"dir": str(tmp_path / "single")}}), progress=False)
    ref = load_checkpoint(Path(single["run_dir"]) / "checkpoints" / "last.pt")
    assert ref["step"] == 54
    # Same samples in each update; only the order of float additions differs (gradients are summed
    # across ranks in another order), so after 54 SGD updates the weights agree to ~1e-6.
    for key in ref["model"]:
        torch.testing.assert_close(ddp["model"][key], ref["model"][key], atol=1e-5, rtol=1e-4)

    # The DDP checkpoint loads in a single-process eval.
    evaluated = _nntrain("eval", str(run_dir / "checkpoints" / "best.pt"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test/acc" in evaluated.stdout


def test_a_failing_rank_fails_the_job_instead_of_hanging(tmp_path):
    config = _write(tmp_path)
    hook = tmp_path / "hook"
    hook.mkdir()
    # Injected into every worker: rank 1 dies at its 5th update, in the middle of the epoch.
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        if os.environ.get("RANK") == "1":
            from nntrain.trainer import Trainer
            original = Trainer._step
            def _step(self, log_now):
                if self.step == 4:
                    raise RuntimeError("rank 1 exploded")
                original(self, log_now)
            Trainer._step = _step
    """))
    env = {**__import__("os").environ, "PYTHONPATH": str(hook)}
    result = _nntrain("fit", str(config), "--nproc", "2", env=env, timeout=180)
    assert result.returncode != 0
    assert "rank 1 exploded" in result.stderr


# Every scheduler with warmup: extra arguments each needs, and a warmup of one epoch.
SCHEDULES = {
    "step": {"step_size": 1, "gamma": 0.5},
    "multistep": {"milestones": [1], "gamma": 0.5},
    "exponential": {"gamma": 0.5},
    "cosine": {},
    "linear": {},
    "onecycle": {"max_lr": 0.1},
    "reduce_on_plateau": {"monitor": "val/loss", "patience": 0, "factor": 0.5},
    "newbob": {"monitor": "val/loss"},
}
SCHEDULE_SCRIPT = """
import json, sys
from nntrain.validate import config_from_dict
from nntrain.fit import fit
raw = json.loads(sys.argv[1])
for name, extra in json.loads(sys.argv[2]).items():
    cfg = dict(raw, name=name, scheduler={"name": name, "warmup_epochs": 1, **extra})
    fit(config_from_dict(cfg), progress=False)
"""


def _epoch_lrs(runs: Path, name: str) -> list[float]:
    run_dir = next((runs / name).iterdir())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["lr"] for r in map(__import__("json").loads, lines) if r["kind"] == "epoch"]


def test_every_schedule_runs_the_same_in_one_and_two_processes(tmp_path):
    """Issue 11: the updates per epoch come from this rank's loader, so a schedule built under
    torchrun spans the run's real updates (it used to count the whole split: twice too many)."""
    import json

    from nntrain.registries import SCHEDULERS

    assert set(SCHEDULES) == set(SCHEDULERS.names())  # a new scheduler joins this test
    raw = {**CONFIG, "data": {**CONFIG["data"], "val_split": 0.5}, "train": {"epochs": 3, "test_at_end": False},
           "log": {"every_n_steps": 10, "tensorboard": False, "dir": str(tmp_path / "two")}}
    script = tmp_path / "schedules.py"
    script.write_text(SCHEDULE_SCRIPT)
    # 2,700 training samples: 27 batches of 100 in one process, 27 of 50 on each of two ranks.
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
         json.dumps(raw), json.dumps(SCHEDULES)],
        capture_output=True, text=True, timeout=400,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = {**raw, "data": {**raw["data"], "batch_size": 100}, "log": {**raw["log"], "dir": str(tmp_path / "one")}}
    single = subprocess.run([sys.executable, str(script), json.dumps(one), json.dumps(SCHEDULES)],
                            capture_output=True, text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-3000:]
    base = CONFIG["optimizer"]["lr"]
    for name in SCHEDULES:
        lrs_one, lrs_two = _epoch_lrs(tmp_path / "one", name), _epoch_lrs(tmp_path / "two", name)
        assert lrs_two == pytest.approx(lrs_one, rel=1e-6), name
        if name in ("cosine", "linear"):
            assert lrs_one[-1] == pytest.approx(0.0, abs=1e-9), name  # decayed to the end, not halfway
        if name == "exponential":  # warmup_epochs 1 ends after one epoch: the first decay step follows
            assert lrs_one[0] == pytest.approx(base) and lrs_two[0] == pytest.approx(base)
