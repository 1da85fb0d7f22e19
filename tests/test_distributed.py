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
from nntrain.config import config_from_dict
from nntrain.data.loaders import TensorLoader
from nntrain.experiment import fit

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
            original = Trainer._update
            def _update(self):
                if self.step == 4:
                    raise RuntimeError("rank 1 exploded")
                original(self)
            Trainer._update = _update
    """))
    env = {**__import__("os").environ, "PYTHONPATH": str(hook)}
    result = _nntrain("fit", str(config), "--nproc", "2", env=env, timeout=180)
    assert result.returncode != 0
    assert "rank 1 exploded" in result.stderr


def test_resume_under_ddp(tmp_path):
    config = _write(tmp_path)
    assert _nntrain("fit", str(config), "--nproc", "2").returncode == 0
    run_dir = next((tmp_path / "runs" / "ddp").iterdir())
    result = _nntrain("fit", str(config), "--nproc", "2", "--set", "train.epochs=2",
                      "--resume", str(run_dir), "--allow-config-change")
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 108
