"""Loading configs: every class of bad input is a ConfigError naming file:line, the dotted key,
what is wrong and what is allowed; `--set` overrides follow DESIGN.md."""

import re
from pathlib import Path

import pytest
import yaml
from helpers import assert_clean_error

from nntrain.config import Config, to_yaml
from nntrain.config_file import parse_override
from nntrain.errors import ConfigError
from nntrain.metrics import monitor_mode
from nntrain.validate import config_from_dict, load_config

GOOD = """\
# nntrain fit good.yaml
name: cfgtest
seed: 0
data:
  dataset: {name: mnist_small}
  val_split: 0.1
  batch_size: 64
model: {name: mlp, hidden: [32], dropout: 0.1}
optimizer: {name: adam, lr: 0.001, betas: [0.9, 0.99]}
scheduler: {name: exponential, gamma: 0.9}
train:
  epochs: 2
  early_stopping: {monitor: val/loss, patience: 2}
log: {dir: runs, every_n_steps: 10}
"""
LINES = GOOD.splitlines()


def _write(folder: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _with_line(line: int, text: str) -> str:
    """GOOD with its 1-based `line` replaced by `text`."""
    lines = list(LINES)
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


# (id, line to replace, its new text, dotted key of the error, regex the message must match)
BAD = [
    ("unknown_top_level_key", 3, "sede: 0", "sede", r"unknown key 'sede'; did you mean 'seed'\? \(allowed: name, seed, data"),
    ("unknown_nested_key", 7, "  batch_sise: 64", "data.batch_sise", r"unknown key 'batch_sise'; did you mean 'batch_size'\?"),
    ("unknown_optimizer", 9, "optimizer: {name: adamm, lr: 0.001}", "optimizer.name",
     r"unknown optimizer 'adamm'; did you mean 'adam'\? \(choices: .*adam, adamw.*sgd\)"),
    ("unknown_model", 8, "model: {name: lenett}", "model.name", r"unknown model 'lenett'; did you mean 'lenet'\?"),
    ("unknown_activation", 8, "model: {name: mlp, activation: relux}", "model.activation.name",
     r"unknown activation 'relux'; did you mean 'relu'\?"),
    ("unknown_optimizer_kwarg", 9, "optimizer: {name: adam, lrr: 0.001}", "optimizer.lrr",
     r"unknown key 'lrr'; did you mean 'lr'\? \(allowed: lr, .*\) for optimizer 'adam'"),
    ("unknown_model_kwarg", 8, "model: {name: mlp, hiden: [32]}", "model.hiden", r"unknown key 'hiden'; did you mean 'hidden'\?"),
    ("unknown_scheduler_kwarg", 10, "scheduler: {name: exponential, gama: 0.9}", "scheduler.gama", r"did you mean 'gamma'\?"),
    ("wrong_type_int", 7, "  batch_size: lots", "data.batch_size", r"valid integer.*\(got 'lots'\)"),
    ("wrong_type_kwarg", 8, "model: {name: mlp, hidden: wide}", "model.hidden", r"valid list"),
    ("wrong_type_bool", 12, "  epochs: 2\n  compile: maybe", "train.compile", r"valid boolean"),
    ("negative_lr", 9, "optimizer: {name: sgd, lr: -0.1}", "optimizer.lr", r"must be >= 0 \(got -0.1\)"),
    ("dropout_one", 8, "model: {name: mlp, dropout: 1.0}", "model.dropout", r"less than 1 \(got 1.0\)"),
    ("val_split_zero", 6, "  val_split: 0", "data.val_split", r"greater than 0"),
    ("val_split_one", 6, "  val_split: 1.0", "data.val_split", r"less than 1"),
    ("val_split_negative", 6, "  val_split: -0.2", "data.val_split", r"greater than 0"),
    ("batch_size_zero", 7, "  batch_size: 0", "data.batch_size", r"greater than 0 \(got 0\)"),
    ("epochs_zero", 12, "  epochs: 0", "train.epochs", r"greater than 0"),
    ("gamma_above_one", 10, "scheduler: {name: exponential, gamma: 1.5}", "scheduler.gamma", r"less than or equal to 1"),
    ("unknown_monitor", 13, "  early_stopping: {monitor: val/accc}", "train.early_stopping.monitor",
     r"unknown metric 'val/accc'; did you mean 'val/acc'\?"),
    ("grad_clip_both", 12, "  epochs: 2\n  grad_clip: {norm: 1.0, value: 0.5}", "train.grad_clip", r"exactly one of 'norm'"),
    ("bad_device", 12, "  epochs: 2\n  device: gpu", "train.device", r"should match pattern"),
    ("bad_precision", 12, "  epochs: 2\n  precision: fp8", "train.precision", r"'fp32', 'bf16' or 'fp16'"),
    ("bad_run_name", 2, "name: my run/1", "name", r"should match pattern"),
    ("betas_out_of_range", 9, "optimizer: {name: adam, betas: [0.9, 1.5]}", "optimizer.betas",
     r"less than 1 \(got \[0.9, 1.5\]\)"),
    ("torch_rejects_nesterov", 9, "optimizer: {name: sgd, lr: 0.1, nesterov: true}", "optimizer",
     r"optimizer 'sgd' rejects these arguments: .*[Nn]esterov"),
    ("duplicate_key", 7, "  batch_size: 64\n  batch_size: 32", "data.batch_size", r"duplicate key"),
    # torch annotates lr as `float | Tensor`: the message asks for a number, not a Tensor
    ("lr_not_a_number", 9, "optimizer: {name: adam, lr: fast}", "optimizer.lr",
     r"Input should be a valid number, unable to parse string as a number \(got 'fast'\)"),
    ("empty_column_list", 5, "  dataset: {name: timeseries_csv, path: s.csv, columns: []}", "data.dataset.columns",
     r"List should have at least 1 item"),
]


@pytest.mark.parametrize("line, text, key, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_a_config_error_with_file_line_and_key(tmp_path, line, text, key, pattern):
    path = _write(tmp_path, _with_line(line, text))
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    message = str(info.value)
    # A replaced line holding two lines reports the second one.
    where = line + text.count("\n")
    assert f"{path}:{where} {key}: " in message, message


@pytest.mark.parametrize("line, text, key, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_through_the_cli(tmp_path, cli, monkeypatch, line, text, key, pattern):
    monkeypatch.chdir(tmp_path)  # GOOD logs to the relative `runs`: were a case valid, fit writes here
    path = _write(tmp_path, _with_line(line, text))
    for command in ("check", "fit"):
        stderr = assert_clean_error(cli(command, path))
        assert f"{path}:{line + text.count(chr(10))} {key}: " in stderr
        assert re.search(pattern, stderr), stderr


def test_missing_required_sections(tmp_path):
    path = _write(tmp_path, "name: x\ndata: {dataset: {name: mnist_small}}\n")
    with pytest.raises(ConfigError, match=r"model: Field required"):
        load_config(path)


def test_several_errors_reported_together_each_with_file_and_line(tmp_path):
    text = _with_line(3, "sede: 0")
    text = text.replace("  batch_size: 64", "  batch_size: 0")  # line 7
    text = text.replace("name: adam, lr: 0.001", "name: adamm, lr: 0.001")  # line 9
    text = text.replace("  epochs: 2", "  epochs: two")  # line 12
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    expected = {
        f"{path}:3 sede: unknown key",
        f"{path}:7 data.batch_size: ",
        f"{path}:9 optimizer.name: unknown optimizer 'adamm'",
        f"{path}:12 train.epochs: ",
    }
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"cfg\.yaml: the config is empty; it needs at least 'name', 'data' and 'model'"),
        ("# only a comment\n", r"the config is empty"),
        ("- name: x\n- data: y\n", r"cfg\.yaml:1: the config must be a mapping of sections .* not a list"),
        ("just a string\n", r"must be a mapping .* not a str"),
        ("name: x\ndata: {dataset: {name: mnist_small}\nmodel: {name: mlp}\n", r"cfg\.yaml:3: invalid YAML: "),
        ("name: x\n  bad indent: 1\n", r"cfg\.yaml:2: invalid YAML"),
        ("name: x\ndata: !!python/object/apply:os.system ['echo pwned']\n",
         r"cfg\.yaml:2: invalid YAML: .*python/object/apply.*only plain YAML is allowed"),
        ("name: !!python/name:os.system\n", r"cfg\.yaml:1: invalid YAML: .*tags that build Python objects are refused"),
    ],
    ids=["empty", "comment_only", "list", "scalar", "syntax_error", "bad_indent", "python_object_tag", "python_name_tag"],
)
def test_unreadable_yaml(tmp_path, cli, text, pattern):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)
    stderr = assert_clean_error(cli("check", path))
    assert str(path) in stderr


def test_python_tag_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"name: x\ndata: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert not marker.exists()


def test_missing_file_and_folder(tmp_path, cli):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"not a file"):
        load_config(tmp_path)
    assert "config file not found" in assert_clean_error(cli("check", tmp_path / "nope.yaml"))


# ------------------------------------------------------------------ --set


def test_set_dotted_key_is_yaml_parsed_and_keeps_siblings(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ["optimizer.lr=0.01", "train.epochs=5", "data.shuffle=false"])
    assert cfg.optimizer.model_dump() == {"name": "adam", "lr": 0.01, "betas": [0.9, 0.99]}
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.data.shuffle is False


def test_set_mapping_replaces_the_whole_section(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ["optimizer={name: sgd, lr: 0.1}"])
    assert cfg.optimizer.model_dump() == {"name": "sgd", "lr": 0.1}  # no Adam betas left behind


def test_set_null_removes_an_optional_section(tmp_path):
    path = _write(tmp_path, GOOD)
    assert load_config(path).scheduler is not None
    assert load_config(path, ["scheduler=null"]).scheduler is None
    assert load_config(path, ["train.early_stopping=null"]).train.early_stopping is None


def test_set_later_wins_and_reaches_list_items(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ["train.epochs=3", "train.epochs=4", "model.hidden.0=7",
                                               "data.augment=[{name: horizontal_flip, p: 0.3}]"])
    assert cfg.train.epochs == 4
    assert cfg.model.model_dump()["hidden"] == [7]
    assert [a.model_dump() for a in cfg.data.augment] == [{"name": "horizontal_flip", "p": 0.3}]


def test_set_adds_a_section_the_file_lacks(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD), ["regularization.l2=0.001", "train.grad_clip.norm=1.0"])
    assert cfg.regularization.l2 == 0.001 and cfg.train.grad_clip.norm == 1.0


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("optimizer.lr", r"--set optimizer\.lr: expected KEY=VALUE with a dotted key"),
        ("=3", r"--set =3: expected KEY=VALUE"),
        ("optimizer..lr=1", r"expected KEY=VALUE"),
        ("optimizer lr=1", r"expected KEY=VALUE"),
        ("optimizer.lr=[1, 2", r"--set optimizer\.lr=\[1, 2: the value is not valid YAML"),
        ("name.sub=1", r"--set name\.sub=1: 'name' is not a section"),
        ("model.hidden.3=1", r"'model\.hidden' has 1 items"),
    ],
    ids=["no_equals", "no_key", "empty_part", "space_in_key", "bad_yaml_value", "into_a_scalar", "list_index"],
)
def test_bad_set_syntax(tmp_path, cli, override, pattern):
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path, [override])
    stderr = assert_clean_error(cli("check", path, "--set", override))
    assert "--set" in stderr


@pytest.mark.parametrize(
    "override, key, pattern",
    [
        ("optimizer.lrr=0.1", "optimizer.lrr", r"unknown key 'lrr'; did you mean 'lr'\?"),
        ("trian.epochs=3", "trian", r"unknown key 'trian'; did you mean 'train'\?"),
        ("train.epoch=3", "train.epoch", r"unknown key 'epoch'; did you mean 'epochs'\?"),
        ("train.epochs=-1", "train.epochs", r"greater than 0 \(got -1\)"),
        ("optimizer.name=adamm", "optimizer.name", r"did you mean 'adam'\?"),
        ("optimizer=null", "optimizer", r"valid dictionary"),
    ],
)
def test_set_is_validated_like_the_file_and_names_the_override(tmp_path, cli, override, key, pattern):
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path, [override])
    assert f"--set {override} {key}: " in str(info.value)
    assert f"--set {override} {key}: " in assert_clean_error(cli("check", path, "--set", override))


def test_parse_override():
    assert parse_override("a.b=1") == (("a", "b"), 1)
    assert parse_override("a.0.c={x: [1, 2]}") == (("a", 0, "c"), {"x": [1, 2]})
    assert parse_override("a=") == (("a",), None)
    assert parse_override("a=null") == (("a",), None)
    assert parse_override("a='1e-3'") == (("a",), "1e-3")
    assert parse_override("a=1e-3") == (("a",), 0.001)  # YAML 1.2: no dot needed


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-3` as a string; torch's Adam then failed on `'<=' between float and str`.
    path = _write(tmp_path, GOOD.replace("lr: 0.001", "lr: 1e-3").replace("batch_size: 64", "batch_size: 6.4E+1"))
    cfg = load_config(path, ["scheduler.gamma=9e-1"])
    assert cfg.optimizer.lr == 0.001 and cfg.data.batch_size == 64 and cfg.scheduler.gamma == 0.9
    assert load_config(path, ["name=1e3x"]).name == "1e3x"


# ------------------------------------------------------------------ the schema


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(_write(tmp_path, "name: minimal\ndata: {dataset: {name: mnist_small}}\nmodel: {name: mlp}\n"))
    assert cfg.loss.name == "cross_entropy"
    assert cfg.optimizer.model_dump() == {"name": "adam", "lr": 1e-3}
    assert cfg.scheduler is None and cfg.train.accumulate == 1 and cfg.train.precision == "fp32"
    assert cfg.data.val_split == 0.1
    # The resolved config (as written to a run folder and stored in checkpoints) reloads equal.
    again = load_config(_write(tmp_path, to_yaml(cfg), "resolved.yaml"))
    assert again == cfg and again.hash() == cfg.hash()
    assert config_from_dict(cfg.to_dict()) == cfg


def test_hash_changes_with_the_config(tmp_path):
    path = _write(tmp_path, GOOD)
    assert load_config(path).hash() == load_config(path).hash()
    assert load_config(path).hash() != load_config(path, ["optimizer.lr=0.002"]).hash()


def test_config_from_dict_errors_name_the_checkpoint():
    raw = yaml.safe_load(GOOD)
    with pytest.raises(ConfigError, match=r"^--set optimizer\.lr=-1 optimizer\.lr: must be >= 0"):
        config_from_dict(raw, ["optimizer.lr=-1"], where="ckpt.pt (stored config)")
    with pytest.raises(ConfigError, match=r"^ckpt\.pt train\.epochs: "):
        config_from_dict({**raw, "train": {"epochs": 0}}, where="ckpt.pt")


@pytest.mark.parametrize(
    "monitor, mode, expected",
    [("val/acc", None, "max"), ("val/loss", None, "min"), ("train/loss", None, "min"), ("val/loss", "max", "max")],
)
def test_monitor_mode(monitor, mode, expected):
    assert monitor_mode(monitor, mode) == expected


def test_config_is_strict_at_every_level():
    assert Config.model_config["extra"] == "forbid"
    with pytest.raises(ConfigError, match=r"log\.evry_n_steps: unknown key 'evry_n_steps'; did you mean 'every_n_steps'"):
        config_from_dict({"name": "x", "data": {"dataset": {"name": "mnist_small"}}, "model": {"name": "mlp"},
                          "log": {"evry_n_steps": 3}})


def test_errors_carry_their_key_and_get_the_place_from_it(tmp_path):
    from nntrain.errors import DataError

    path = _write(tmp_path, GOOD)
    cfg = load_config(path, ["optimizer.lr=0.5"])
    assert str(ConfigError("too large", key=("optimizer", "lr"))) == "optimizer.lr: too large"
    assert str(cfg.locate(ConfigError("too large", key=("optimizer", "lr")))) == (
        "--set optimizer.lr=0.5 optimizer.lr: too large"
    )
    # A problem of a section an override changed is that override's doing, not the section's line.
    assert cfg.where(("optimizer",)) == "--set optimizer.lr=0.5"
    assert str(cfg.locate(DataError("not found", key=("data", "dataset", "path")))) == (
        f"{path}:5 data.dataset.path: not found"
    )
    assert str(cfg.locate(DataError("a.csv: not a table"))) == "a.csv: not a table"  # no key: as it is
