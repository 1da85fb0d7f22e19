"""Hostile configs (issue 17, parts 1 and 2): parsing stays bounded in time and memory, and values
training would trip on are refused by `check` and `fit` alike: exit 2, one message naming the
place, the key and what is allowed, and no run folder."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import assert_clean_error

GOOD = """\
name: bad
data:
  dataset: {name: mnist_small}
  batch_size: 64
model: {name: mlp, hidden: [16]}
loss: {name: cross_entropy}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
train: {epochs: 1, device: cpu}
log: {dir: runs, tensorboard: false}
"""

# ------------------------------------------------------------------ 1. bounded parsing

_LAUGHS = "name: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)

# Runs the CLI in a child process whose address space may grow at most 2 GiB beyond what python,
# torch and nntrain take after import (a CUDA build of torch maps far more than a CPU one).
_LIMITED = textwrap.dedent("""\
    import resource, sys, time
    import nntrain.validate, nntrain.build
    from nntrain.cli import app
    size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))
    start = time.perf_counter()
    try:
        app(args=sys.argv[1:], prog_name="nntrain")
    finally:
        print(f"seconds={time.perf_counter() - start:.2f}")
""")


def _run_limited(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _LIMITED, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


BOUNDED = pytest.mark.parametrize(
    "text, pattern",
    [
        (_LAUGHS, r"bad\.yaml: the YAML is too large or too deep: more than 100,000 values once its aliases"),
        ("name: &x [*x]\n", r"bad\.yaml: .*an alias refers to a section that contains it \(line 1\)"),
        ("name: x\ndata: &d {dataset: *d}\n", r"an alias refers to a section that contains it \(line 2\)"),
        ("name: x\nmodel: " + "[" * 2000 + "]" * 2000 + "\n", r"bad\.yaml: the YAML is nested too deeply"),
        ("name: x\nmodel: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", r"bad\.yaml: the YAML is nested too deeply"),
        ("name: x\nmodel:\n" + "".join(" " * i + "a:\n" for i in range(1, 300)), r"nested deeper than 64 levels"),
        ("name: x\n" + "# padding\n" * 120_000, r"bad\.yaml: 1,200,008 bytes; a config may have at most 1,000,000"),
    ],
    ids=["billion_laughs", "self_alias", "alias_inside_itself", "deep_lists", "deep_mappings", "deep_block",
         "huge_file"],
)


@BOUNDED
def test_parsing_is_bounded(tmp_path, text, pattern):
    from nntrain.config_file import read_yaml
    from nntrain.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=pattern):
        read_yaml(path)


@pytest.mark.slow
@BOUNDED
def test_parsing_is_bounded_in_time_and_memory(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = _run_limited(tmp_path, "check", str(path))
    _assert_bounded_error(result, pattern)


@pytest.mark.slow
def test_set_value_built_from_aliases_is_bounded(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    layers = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcd", "bcde")
    )
    small = "model.hidden={" + layers.replace("e: &e", "e:") + "}"  # 10^5 values in 235-odd characters
    result = _run_limited(tmp_path, "check", "good.yaml", "--set", small)
    _assert_bounded_error(result, r"--set model\.hidden=\{a: .*: the YAML is too large .*than 100,000 values")
    shared = "model.hidden=[&a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], *a, *a, *a, *a, *a, *a, *a, *a, *a]"
    result = _run_limited(tmp_path, "check", "good.yaml", "--set", shared)
    _assert_bounded_error(result, r"model\.hidden: Input should be a valid integer \(got \[\[1, 2, 3")
    assert not (tmp_path / "runs").exists()


def _assert_bounded_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and result.stderr.startswith("error:"), result.stderr[-3000:]
    assert len(result.stderr) < 1000, f"{len(result.stderr)} characters: {result.stderr[:300]}..."
    assert re.search(pattern, result.stderr), result.stderr
    seconds = float(result.stdout.rsplit("seconds=", 1)[1])
    assert seconds < 20, seconds  # the unbounded versions ran for minutes or never finished


# ------------------------------------------------------------------ 2. values training trips on

# (id, line of GOOD to replace, its new text, the key named, what the message must say)
BAD = [
    ("bool_for_int", 8, "train: {epochs: true, device: cpu}", "train.epochs",
     "expected a number, not a boolean (got true)"),
    ("bool_in_list", 5, "model: {name: mlp, hidden: [true, 16]}", "model.hidden", "expected a number, not a boolean"),
    ("bool_for_lr", 7, "optimizer: {name: sgd, lr: true}", "optimizer.lr", "expected a number, not a boolean"),
    ("seed_too_big", 1, "name: bad\nseed: 100000000000000", "seed", "less than or equal to 4294967295"),
    ("seed_negative", 1, "name: bad\nseed: -1", "seed", "greater than or equal to 0"),
    ("lr_inf", 7, "optimizer: {name: sgd, lr: .inf}", "optimizer.lr", "must be a finite number (got inf)"),
    ("momentum_nan", 7, "optimizer: {name: sgd, lr: 0.1, momentum: .nan}", "optimizer.momentum",
     "finite number (got nan)"),
    ("label_smoothing_nan", 6, "loss: {name: cross_entropy, label_smoothing: .nan}", "loss.label_smoothing",
     "finite number (got nan)"),
    ("val_split_nan", 4, "  batch_size: 64\n  val_split: .nan", "data.val_split", "finite number"),
    ("grad_clip_inf", 8, "train: {epochs: 1, grad_clip: {norm: .inf}}", "train.grad_clip.norm", "finite number"),
    ("label_smoothing_above_1", 6, "loss: {name: cross_entropy, label_smoothing: 1.5}", "loss.label_smoothing",
     "less than or equal to 1 (got 1.5)"),
    ("huber_negative_delta", 6, "loss: {name: huber, delta: -1.0}", "loss.delta", "greater than 0 (got -1.0)"),
    ("loss_reduction_none", 6, "loss: {name: cross_entropy, reduction: none}", "loss.reduction", "'mean' or 'sum'"),
    ("betas_of_one", 7, "optimizer: {name: adam, betas: [0.9, 1.0]}", "optimizer.betas",
     "less than 1 (got [0.9, 1.0])"),
    ("negative_eps", 7, "optimizer: {name: adam, eps: -1.0e-8}", "optimizer.eps", "must be >= 0"),
    ("rho_above_1", 7, "optimizer: {name: adadelta, rho: 1.5}", "optimizer.rho", "less than or equal to 1"),
    ("negative_init_std", 5, "model: {name: mlp, init: {name: normal, std: -1.0}}", "model.init",
     "init 'normal' rejects these arguments: normal expects std >= 0"),
    ("gelu_approximate", 5, "model: {name: mlp, activation: {name: gelu, approximate: fast}}",
     "model.activation.approximate", "'none' or 'tanh'"),
    ("threads_beyond_reason", 8, "train: {epochs: 1, threads: 100000}", "train.threads", "less than or equal to 1024"),
    ("int_overflow", 4, "  batch_size: 1.0e+30", "data.batch_size", "(got 1e+30)"),
    ("int_key", 8, "train: {epochs: 1, 1: 2}", "train", "keys must be names, not 1"),
    ("bool_key", 8, "train:\n  epochs: 1\n  on: 2", "train", "keys must be names, not on"),
    ("null_key", 1, "name: bad\n~: 2", "<top level>", "keys must be names, not ~"),
    ("list_key", 1, "name: bad\nseed: {[a, b]: 1}", "seed", "keys must be names, not a list or mapping"),
]


def _with_line(line: int, text: str) -> str:
    lines = GOOD.splitlines()
    lines[line - 1] = text
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("line, text, key, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_and_fit_refuse_what_training_would_trip_on(tmp_path, cli, monkeypatch, line, text, key, expected):
    monkeypatch.chdir(tmp_path)  # a run folder, were one made, would appear here under runs/
    path = tmp_path / "bad.yaml"
    path.write_text(_with_line(line, text), encoding="utf-8")
    where = line + text.count("\n")  # the line of the last key written
    for command in ("check", "fit"):
        stderr = assert_clean_error(cli(command, path))
        assert f"{path}:{where} {key}: " in stderr, stderr
        assert expected in stderr, stderr
    assert not (tmp_path / "runs").exists()


# (id, --set, the place and key the message starts with, what it must say)
BAD_SETS = [
    ("index_into_mapping", "optimizer.0=1", "--set optimizer.0=1: ", "'optimizer' is a mapping: its keys are names"),
    ("index_into_missing_list", "data.augment.0=1", "--set data.augment.0=1: ", "'data.augment' is not set"),
    ("int_key_in_value", "optimizer={1: 2}", "--set optimizer={1: 2} optimizer: ", "keys must be names, not int 1"),
    ("section_error_names_the_set", "optimizer.nesterov=true", "--set optimizer.nesterov=true optimizer: ",
     "optimizer 'sgd' rejects these arguments: Nesterov momentum requires a momentum"),
    ("nan_value", "optimizer.lr=.nan", "--set optimizer.lr=.nan optimizer.lr: ", "finite number"),
    ("bool_value", "data.batch_size=yes", "--set data.batch_size=yes data.batch_size: ", "not a boolean"),
    ("long_value_quoted_short", "name=" + "x" * 300, "--set name=xxxx", "at most 100 characters"),
]


@pytest.mark.parametrize("override, start, expected", [b[1:] for b in BAD_SETS], ids=[b[0] for b in BAD_SETS])
def test_bad_set_names_the_set(tmp_path, cli, monkeypatch, override, start, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("momentum: 0.9", "momentum: 0.0"), encoding="utf-8")
    for command in ("check", "fit"):
        stderr = assert_clean_error(cli(command, path, "--set", override))
        assert stderr.removeprefix("error: ").startswith(start), stderr
        assert expected in stderr, stderr
        assert len(stderr) < 500, stderr  # a long value is quoted by its first characters
    assert not (tmp_path / "runs").exists()


def test_log_dir_expands_the_home_folder(tmp_path, monkeypatch):
    from nntrain.validate import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("dir: runs", "dir: ~/experiments"), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.log.dir == str(tmp_path / "home" / "experiments")
    assert load_config(path, ["log.dir=~/other"]).log.dir == str(tmp_path / "home" / "other")
    assert not (tmp_path / "~").exists()
