"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# Real data for tests lives next to the checkout (DESIGN.md, "Data"); NNTRAIN_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("NNTRAIN_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def base_config(folder: Path) -> dict[str, Any]:
    """A small, fast config on the embedded MNIST subset (6,000 train / 1,000 test), runs under `folder`."""
    return {
        "name": "test_run",
        "seed": 0,
        "data": {
            "dataset": {"name": "mnist_small"},
            "val_split": 0.1,
            "batch_size": 64,
            "eval_batch_size": 1000,
            "normalize": {"name": "standardize"},
        },
        "model": {"name": "lenet", "activation": "relu"},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adam", "lr": 2.0e-3},
        "train": {"epochs": 1, "device": "cpu"},
        "log": {"dir": str(Path(folder) / "runs"), "every_n_steps": 20},
    }


def write_config(folder: Path, filename: str = "config.yaml", **sections: Any) -> Path:
    """Writes `base_config(folder)` to `folder/filename` with top-level `sections` replaced.

    A section given as None is removed. Returns the file's path.
    """
    raw = base_config(folder)
    for key, value in sections.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = Path(folder) / filename
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def assert_clean_error(result, code: int = 2) -> str:
    """Asserts a CliRunner result is a user error: exit `code`, one message on stderr, no traceback.

    Returns stderr.
    """
    assert result.exit_code == code, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{result.exception!r}"
    )
    # Anything but SystemExit means an exception escaped the command (CliRunner hides its traceback).
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.lstrip().startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


def nntrain_cmd(*args: Any) -> list[str]:
    """argv running this environment's nntrain CLI in a subprocess."""
    return [sys.executable, "-m", "nntrain", *map(str, args)]
