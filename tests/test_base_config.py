"""Configs that build on others (`base:`), and `nntrain config --explain`: merging rules, nested and
listed bases, cycles, errors located in the file (or --set) that wrote the value, and origins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO, assert_clean_error

from nntrain.config_file import read_yaml
from nntrain.errors import ConfigError
from nntrain.explain import explain
from nntrain.validate import load_config

BASE = """\
name: base_run
seed: 0
data:
  dataset: {name: mnist_small}
  val_split: 0.1
  batch_size: 64
  augment:
    - {name: random_crop, size: 28, padding: 2}
model: {name: mlp, hidden: [128, 64], activation: relu}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
scheduler: {name: step, step_size: 5}
train:
  epochs: 3
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_merge_rules(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        base: base.yaml
        name: child_run
        data:
          batch_size: 32          # a mapping merges key by key: dataset and val_split stay
          augment: []             # a list replaces
        model:
          hidden: [16]            # a list replaces, it is not appended to
        optimizer:
          lr: 0.01                # same optimizer: its other arguments stay
        scheduler: null           # null removes the base's section
        """)
    cfg = load_config(child)
    assert cfg.name == "child_run" and cfg.train.epochs == 3 and cfg.seed == 0
    assert cfg.data.dataset.name == "mnist_small" and cfg.data.val_split == 0.1 and cfg.data.batch_size == 32
    assert cfg.data.augment == [] and cfg.model.hidden == [16] and cfg.model.activation == "relu"
    assert cfg.optimizer.model_dump() == {"name": "sgd", "lr": 0.01, "momentum": 0.9}
    assert cfg.scheduler is None


def test_another_component_replaces_the_section(tmp_path):
    """optimizer: {name: adam} over an sgd with momentum: sgd's arguments do not carry over."""
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\noptimizer: {name: adam, lr: 0.001}\n")
    assert load_config(child).optimizer.model_dump() == {"name": "adam", "lr": 0.001}


def test_nested_and_listed_bases_relative_to_the_file_naming_them(tmp_path):
    write(tmp_path, "bases/root.yaml", BASE)
    write(tmp_path, "bases/fast.yaml", "base: root.yaml\ntrain: {epochs: 1}\ndata: {batch_size: 256}\n")
    write(tmp_path, "other/adam.yaml", "optimizer: {name: adam, lr: 0.002}\ndata: {batch_size: 128}\n")
    child = write(tmp_path, "exp/child.yaml", """\
        base: [../bases/fast.yaml, ../other/adam.yaml]   # later bases win over earlier ones
        name: nested
        """)
    cfg = load_config(child)
    assert cfg.name == "nested" and cfg.train.epochs == 1 and cfg.data.batch_size == 128
    assert cfg.optimizer.name == "adam" and cfg.model.hidden == [128, 64]


def test_cycle_is_an_error_naming_the_files(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "base: sub/c.yaml\n")
    write(tmp_path, "sub/c.yaml", "base: ../a.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    text = str(info.value)
    assert "cycle" in text and "a.yaml" in text and "b.yaml" in text and "c.yaml" in text
    assert text.startswith(f"{tmp_path / 'sub' / 'c.yaml'}:1")  # the base line that closes the cycle
    write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")


@pytest.mark.parametrize("value, message", [
    ("missing.yaml", "missing.yaml: config file not found"),
    ("[]", "expected a path"),
    ("{a: 1}", "expected a path"),
    ("[base.yaml, 3]", "expected a path"),
])
def test_bad_base_values_name_the_line(tmp_path, value, message):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", f"name: x\nbase: {value}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(child)
    assert str(info.value).startswith(f"{child}:2 base")


def test_errors_name_the_file_that_wrote_the_value(tmp_path):
    base = write(tmp_path, "base.yaml", BASE.replace("step_size: 5", "step_size: -5"))
    child = write(tmp_path, "child.yaml", "base: base.yaml\n\noptimizer: {name: adamm}\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{child}:3 optimizer.name: unknown optimizer 'adamm'") for line in lines), lines
    assert any(line.startswith(f"{base}:11 scheduler.step_size") for line in lines), lines
    with pytest.raises(ConfigError) as info:  # a --set names itself
        load_config(tmp_path / "base.yaml", ["scheduler.step_size=-5", "train.epochs=-1"])
    assert "--set train.epochs=-1 train.epochs" in str(info.value)
    assert "--set scheduler.step_size=-5 scheduler.step_size" in str(info.value)


def test_base_file_errors_name_the_base(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: a\nname: b\n")
    child = write(tmp_path, "child.yaml", "base: bad.yaml\n")
    with pytest.raises(ConfigError, match="duplicate key") as info:
        read_yaml(child)
    assert str(info.value).startswith(f"{bad}:2")


def test_explain_origins(tmp_path):
    base = write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child_run\noptimizer:\n  lr: 0.01\n")
    explained = explain(child, ["train.epochs=2"])
    o = explained.origins
    assert o[("name",)] == f"{child}:2"
    assert o[("optimizer", "lr")] == f"{child}:4"
    assert o[("optimizer", "momentum")] == f"{base}:10"  # the child merged over it
    assert o[("data", "batch_size")] == f"{base}:6"
    assert o[("data", "augment", 0, "size")] == f"{base}:8"
    assert o[("train", "epochs")] == "--set train.epochs=2"
    assert o[("train", "precision")] == "default"  # the schema's
    assert o[("optimizer", "nesterov")] == "default (optimizer 'sgd')"  # the builder's
    assert o[("model", "num_classes")] == "inferred from the data (mnist_small)"
    assert explained.values["model"]["num_classes"] == 10 and explained.values["model"]["in_features"] == 784
    assert explained.values["train"]["epochs"] == 2 and "base" not in explained.values


def test_config_command(cli, tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child_run\n")
    plain = cli("config", child, "--no-data")
    assert plain.exit_code == 0, plain.output
    assert "name: child_run\n" in plain.stdout and "#" not in plain.stdout and "base:" not in plain.stdout
    explained = cli("config", child, "--explain", "--set", "seed=3")
    assert explained.exit_code == 0, explained.output
    lines = explained.stdout.splitlines()
    assert any(line.startswith("seed: 3") and line.endswith("# --set seed=3") for line in lines)
    assert any(line.strip().startswith("epochs: 3") and line.endswith(f"# {tmp_path / 'base.yaml'}:13")
               for line in lines)
    assert any("in_features: 784" in line and "inferred from the data" in line for line in lines)
    assert "step_size" in assert_clean_error(cli("config", child, "--set", "scheduler.step_size=-1"))


def test_course_configs_share_a_base(monkeypatch):
    monkeypatch.chdir(REPO)
    for name in ("optimizers", "schedules", "overfitting", "deep_sigmoid_vs_relu"):
        raw, source = read_yaml(Path("configs") / f"{name}.yaml")
        assert any(path.endswith("course_base.yaml") for path in source.files.values()), name
    assert (CONFIGS / "course_base.yaml").is_file()


def test_sweep_config_with_a_base(tmp_path):
    """`nntrain sweep` reads configs the same way: the searched config merges its base."""
    from nntrain.sweep import load_plan

    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "search.yaml", """\
        base: base.yaml
        sweep:
          metric: val/acc
          params:
            optimizer.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
        """)
    plan = load_plan(child)
    assert plan.cfg.name == "base_run" and plan.cfg.optimizer.momentum == 0.9
    assert plan.config({"optimizer.lr": 0.01}).optimizer.lr == 0.01
    assert plan.source.where(("train", "epochs")) == f"{tmp_path / 'base.yaml'}:13"
