"""Every shipped config in configs/ loads, and passes `nntrain check` where its data is on this machine."""

from pathlib import Path

import pytest
import yaml

from helpers import CONFIGS, REPO, assert_clean_error
from nntrain.config import load_config
from nntrain.data.datasets import DATASETS

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.yml"))
# torchvision sources: the folder under `root` that holds each once downloaded.
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids(CONFIG_FILES))
def test_config_loads_and_says_how_to_run_it(path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(path.relative_to(REPO))
    assert cfg.name
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# nntrain ") and f"configs/{path.name}" in first, first


def _data_overrides(path: Path, request) -> list[str]:
    """`--set`s that point a config at this machine's copy of its data; skips if there is none."""
    dataset = load_config(path).data.dataset
    if dataset.name == "mnist":
        root = request.getfixturevalue("mnist_root")
        return [f"data.dataset.root={root}", "data.dataset.download=true"]
    if dataset.name in TORCHVISION:
        root = REPO / getattr(dataset, "root", "data")
        if not (root / TORCHVISION[dataset.name]).exists():
            pytest.skip(f"{dataset.name} is not on this machine (it needs a download into {root})")
    return []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids(CONFIG_FILES))
def test_config_passes_check(path, cli, request, monkeypatch):
    overrides = _data_overrides(path, request)
    monkeypatch.chdir(REPO)  # configs name data relative to the repository root
    args = ["check", path.relative_to(REPO)]
    for override in overrides:
        args += ["--set", override]
    result = cli(*args)
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    assert "config OK" in result.stdout
    cfg = load_config(path)
    assert cfg.model.name in result.stdout and "total params" in result.stdout




def _dataset_name(path: Path):
    """The config's dataset name, read without validating (collection must not fail on a bad config)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return raw["data"]["dataset"]["name"]
    except (TypeError, KeyError):
        return None


DOWNLOADED = [
    p for p in CONFIG_FILES
    if _dataset_name(p) in DATASETS and "download" in DATASETS.parameters(_dataset_name(p))
]


@pytest.mark.parametrize("path", DOWNLOADED, ids=_ids(DOWNLOADED))
def test_config_whose_data_is_missing_fails_check_with_advice(path, cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("check", path, "--set", f"data.dataset.root={empty}", "--set", "data.dataset.download=false")
    stderr = assert_clean_error(result, 2)
    name = load_config(path).data.dataset.name
    assert name.replace("_", "") in stderr.lower().replace("_", ""), stderr  # names the dataset
    assert str(empty) in stderr and "download: true" in stderr  # says where and how to fix it
