"""Averaged weights under torchrun (issue 15), on CPU with gloo and 2 processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nntrain.build import load_trained
from nntrain.checkpoint import load_checkpoint
from nntrain.fit import fit
from nntrain.validate import config_from_dict

pytestmark = pytest.mark.slow

# 5,400 training images: 54 batches of 100 in one process, or 54 batches of 50 on each of 2 ranks.
CONFIG = {
    "name": "ddp_avg",
    "seed": 1,
    "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.1, "batch_size": 50,
             "normalize": {"name": "standardize"}},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "test_at_end": False},
    "log": {"every_n_steps": 10, "tensorboard": False},
}


def _torchrun(tmp_path: Path, raw: dict) -> dict:
    raw = {**raw, "log": {**raw["log"], "dir": str(tmp_path / "runs")}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(path), "--nproc", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / raw["name"]).iterdir())
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_ema_in_two_processes_matches_one_process_with_twice_the_batch(tmp_path):
    raw = {**CONFIG, "train": {**CONFIG["train"], "ema": {"decay": 0.95}}}
    ddp = _torchrun(tmp_path, raw)
    assert ddp["averaging"]["n_averaged"] == 54
    single = fit(config_from_dict({**raw, "data": {**raw["data"], "batch_size": 100},
                                   "log": {**raw["log"], "dir": str(tmp_path / "single")}}), progress=False)
    ref = load_checkpoint(Path(single["run_dir"]) / "checkpoints" / "last.pt")
    # Each rank averages its own copy of the (equal) weights: the same average as one process, up
    # to the order of float additions in the gradients' all-reduce (as for the weights themselves).
    for entry in ("model", "raw_model"):
        for key in ref[entry]:
            torch.testing.assert_close(ddp[entry][key], ref[entry][key], atol=1e-5, rtol=1e-4)


def test_swa_batchnorm_statistics_cover_the_whole_training_split(tmp_path):
    """update_bn runs on each rank's shard; the ranks' statistics are averaged, so the running mean
    is the mean over the whole training split of the averaged model's pre-BN activations."""
    raw = {**CONFIG, "model": {"name": "mlp", "hidden": [32], "batch_norm": True},
           "train": {**CONFIG["train"], "epochs": 2, "swa": {"start_epoch": 1, "lr": 0.01}}}
    ddp = _torchrun(tmp_path, raw)
    assert ddp["averaging"]["n_averaged"] == 2
    run_dir = next((tmp_path / "runs" / raw["name"]).iterdir())
    trained = load_trained(run_dir / "checkpoints" / "last.pt")  # one process, the averaged weights
    x = trained.parts.data.train[0]
    with torch.no_grad():
        h = trained.model.fc1(x.flatten(1))
    torch.testing.assert_close(ddp["model"]["bn1.running_mean"], h.mean(0), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ddp["model"]["bn1.running_mean"], ddp["raw_model"]["bn1.running_mean"], atol=1e-3)
