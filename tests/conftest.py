"""Shared fixtures: real data from ../shared/data, a torchvision MNIST layout, small configs, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import MNIST_FILES, SHARED_DATA
from helpers import write_config as _write_config


@pytest.fixture(autouse=True)
def _image_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Image folders decoded by tests are cached under pytest's temporary folder, not ~/.cache."""
    monkeypatch.setenv("NNTRAIN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nntrain-image-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets (../shared/data, or $NNTRAIN_SHARED_DATA)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def write_config():
    """`write_config(tmp_path, optimizer={...}, ...)` -> path of a small mnist_small config there."""
    return _write_config


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A torchvision root, `<root>/MNIST/raw/`, linking the four real MNIST .gz files of SHARED_DATA/mnist.

    torchvision's `MNIST(root, download=True)` finds them (their MD5s match), unpacks them next to
    the links and fetches nothing.
    """
    source = SHARED_DATA / "mnist"
    missing = [f for f in MNIST_FILES if not (source / f).is_file()]
    if missing:
        pytest.skip(f"real MNIST not found: {source} lacks {', '.join(missing)} (set NNTRAIN_SHARED_DATA)")
    root = tmp_path_factory.mktemp("mnist_root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(source / name)
    return root


@pytest.fixture
def cli():
    """Runs the CLI in-process: `cli("check", path)` -> typer's testing Result (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from nntrain.cli import app

    runner = CliRunner()

    def invoke(*args: Any):
        return runner.invoke(app, [str(a) for a in args])

    return invoke
