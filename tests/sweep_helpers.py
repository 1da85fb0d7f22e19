"""A tiny sweep config for the sweep tests (test_sweep_faults.py, test_sweep_postgres.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helpers import base_config

from nntrain.config import LogConfig


def write_sweep(folder: Path, trials: int = 2, epochs: int = 1, train_part: float = 0.1, threads: int | None = 1,
                **sweep: Any) -> Path:
    """`folder/sweep.yaml`: an MLP on `train_part` of mnist_small's 6,000 training samples (the rest
    validates), random search over optimizer.lr and model.hidden, no pruning.

    One CPU thread by default: a tiny model gains nothing from more, and the tests' processes
    running at once would only contend for the cores.
    """
    raw = base_config(folder)
    raw["data"]["val_split"] = round(1 - train_part, 4)
    raw["model"] = {"name": "mlp", "hidden": [16]}
    raw["train"] = {"epochs": epochs, "device": "cpu", "test_at_end": False, "threads": threads}
    raw["log"]["tensorboard"] = False
    if "report" in LogConfig.model_fields:  # no report (figures) per trial: the tests do not read them
        raw["log"]["report"] = False
    raw["sweep"] = {
        "metric": "val/acc", "sampler": "random", "pruner": "none", "trials": trials,
        "params": {
            "optimizer.lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2},
            "model.hidden": {"type": "choice", "values": [[8], [16, 8]]},
        },
        **sweep,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
