"""Every shipped config in configs/ loads, and passes `nntrain check` where its data is on this machine."""

from pathlib import Path

import pytest
from helpers import CONFIGS, REPO, assert_clean_error

from nntrain.config_file import read_yaml
from nntrain.data.sources import DATASETS
from nntrain.errors import ConfigError
from nntrain.validate import load_config

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.yml"))
IDS = [p.name for p in CONFIG_FILES]
# torchvision sources: a file under `root` that is there once the data set is (either name will do).
TORCHVISION = {
    "mnist": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-images-idx3-ubyte.gz"),
    "fashion_mnist": ("FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/train-images-idx3-ubyte.gz"),
    "cifar10": ("cifar-10-batches-py/data_batch_1",),
}


def _raw(path: Path) -> dict:
    """The config as written, its bases merged in, not validated (collection must not fail on a bad config)."""
    try:
        raw = read_yaml(path)[0]
    except ConfigError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _get(raw: dict, *keys):
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=IDS)
def test_config_loads_and_says_how_to_run_it(path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(path.relative_to(REPO))
    assert cfg.name
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# nntrain ") and f"configs/{path.name}" in first, first


def _data_overrides(path: Path, request) -> list[str]:
    """`--set`s that point a config at this machine's copy of its data; skips if there is none."""
    dataset = _get(_raw(path), "data", "dataset") or {}
    name = dataset.get("name")
    if name == "mnist":
        root = request.getfixturevalue("mnist_root")
        return [f"data.dataset.root={root}", "data.dataset.download=true"]
    if name in TORCHVISION:
        root = REPO / dataset.get("root", "data")
        if not any((root / marker).is_file() for marker in TORCHVISION[name]):
            pytest.skip(f"{name} is not on this machine (it needs a download into {root})")
    return []


def _pretrained_overrides(path: Path, request, cli, folder: Path) -> list[str]:
    """For a config that starts from another config's run (`model.init_from: runs/<name>`), trains
    that config for one epoch into `folder` and points the config there."""
    checkpoint = _get(_raw(path), "model", "init_from", "checkpoint")
    if checkpoint is None:
        return []
    parts = Path(checkpoint).parts
    producer = next((p for p in CONFIG_FILES if len(parts) >= 2 and _raw(p).get("name") == parts[1]), None)
    assert producer is not None, f"no config in configs/ makes the run {checkpoint} that {path.name} starts from"
    # Just enough of a run to leave a checkpoint: one epoch on a tenth of the training data.
    quick = ["train.epochs=1", "data.val_split=0.9", "train.test_at_end=false", "log.tensorboard=false",
             f"log.dir={folder}"]
    args = ["fit", producer]
    for override in quick + _data_overrides(producer, request):
        args += ["--set", override]
    result = cli(*args)
    assert result.exit_code == 0, f"fit {producer.name}: {result.stderr}{result.exception!r}"
    return [f"model.init_from.checkpoint={folder / Path(*parts[1:])}"]


# Configs that start from another config's run need that run trained first: slow.
CHECKED = [
    pytest.param(p, marks=pytest.mark.slow) if _get(_raw(p), "model", "init_from") else p for p in CONFIG_FILES
]


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_config_passes_check(path, cli, request, monkeypatch, tmp_path):
    overrides = _data_overrides(path, request)
    monkeypatch.chdir(REPO)  # configs name data relative to the repository root
    overrides += _pretrained_overrides(path, request, cli, tmp_path / "runs")
    args = ["check", path.relative_to(REPO)]
    for override in overrides:
        args += ["--set", override]
    result = cli(*args)
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    assert "config OK" in result.stdout
    assert _raw(path)["model"]["name"] in result.stdout and "total params" in result.stdout


DOWNLOADED = [
    p for p in CONFIG_FILES
    if _get(_raw(p), "data", "dataset", "name") in DATASETS
    and "download" in DATASETS.parameters(_get(_raw(p), "data", "dataset", "name"))
]


@pytest.mark.parametrize("path", DOWNLOADED, ids=[p.name for p in DOWNLOADED])
def test_config_whose_data_is_missing_fails_check_with_advice(path, cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("check", path, "--set", f"data.dataset.root={empty}", "--set", "data.dataset.download=false")
    stderr = assert_clean_error(result, 2)
    name = _raw(path)["data"]["dataset"]["name"]
    assert name.replace("_", "") in stderr.lower().replace("_", ""), stderr  # names the dataset
    assert str(empty) in stderr and "download: true" in stderr  # says where and how to fix it
