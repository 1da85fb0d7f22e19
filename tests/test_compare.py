"""`nntrain compare`: the config keys that differ, seed groups as mean ± sample sd against a hand
computation, the plot; and `nntrain fit --seeds` making one run folder per seed."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import assert_clean_error, nntrain_cmd, write_config

from nntrain.compare import compare, differing_keys, flatten
from nntrain.errors import ConfigError
from nntrain.seeds import parse_seeds

BASE = {
    "name": "exp", "seed": 0,
    "data": {"dataset": {"name": "mnist_small"}, "batch_size": 64, "augment": [{"name": "hflip"}]},
    "model": {"name": "mlp", "hidden": [128], "activation": "relu"},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "scheduler": None,
    "train": {"epochs": 3, "checkpoint": {"monitor": "val/acc"}},
    "log": {"dir": "runs"},
}


def make_run(root: Path, stamp: str, acc: list[float], test_acc: float, **changes) -> Path:
    """A finished run folder written by hand: `acc` is val/acc after each epoch."""
    config = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        node = config
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    run_dir = root / config["name"] / stamp
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    records = [{"kind": "epoch", "epoch": e + 1, "step": 10 * (e + 1), "val/acc": a, "val/loss": 1 - a}
               for e, a in enumerate(acc)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    best = max(range(len(acc)), key=lambda e: (acc[e], -e))
    summary = {
        "epochs": len(acc), "final": {"val/acc": acc[-1], "val/loss": 1 - acc[-1]},
        "best": {"monitor": "val/acc", "value": acc[best], "epoch": best + 1},
        "test": {"test/acc": test_acc}, "time_s": 10.0, "samples_per_s": 100.0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps({"status": "finished"}), encoding="utf-8")
    return run_dir


# ------------------------------------------------------------------------------ differing keys


def test_flatten_dotted_keys_lists_whole_and_null_sections():
    flat = flatten(BASE)
    assert flat["optimizer.lr"] == 0.1 and flat["model.hidden"] == [128]
    assert flat["data.augment"] == [{"name": "hflip"}] and flat["scheduler"] is None


def test_only_differing_keys():
    a = json.loads(json.dumps(BASE))
    b = json.loads(json.dumps(BASE))
    b["optimizer"]["lr"] = 0.01
    b["model"]["hidden"] = [128, 64]
    b["scheduler"] = {"name": "step", "step_size": 5}
    b["log"]["dir"] = "elsewhere"  # where a run was written is no setting
    keys = differing_keys([a, b])
    assert keys == ["model.hidden", "optimizer.lr", "scheduler", "scheduler.name", "scheduler.step_size"]
    assert differing_keys([a, json.loads(json.dumps(a))]) == []


def test_compare_table_keys_and_metrics(tmp_path):
    make_run(tmp_path, "1", [0.5, 0.7, 0.6], 0.65)
    make_run(tmp_path, "2", [0.4, 0.8, 0.9], 0.85, optimizer__lr=0.01, seed=1)
    c = compare([str(tmp_path / "exp" / "*")], "none")
    assert [c.label for c in c.cols] == ["exp/1", "exp/2"]  # same name: told apart by stamp
    assert dict(c.config) == {"seed": ["0", "1"], "optimizer.lr": ["0.1", "0.01"]}
    metrics = {label: [s.values for s in stats] for label, stats in c.metrics}
    assert metrics["best val/acc"] == [[0.7], [0.9]] and metrics["best epoch"] == [[2.0], [3.0]]
    assert metrics["final val/acc"] == [[0.6], [0.9]] and metrics["test/acc (best.pt)"] == [[0.65], [0.85]]


# ------------------------------------------------------------------------------ seed groups


def test_seed_group_mean_and_sample_sd_by_hand(tmp_path):
    finals = [0.90, 0.92, 0.97]
    for seed, final in enumerate(finals):
        make_run(tmp_path, f"s{seed}", [0.5, final], final - 0.01, seed=seed)
    make_run(tmp_path, "other", [0.5, 0.6], 0.55, optimizer__lr=0.5)
    c = compare([str(tmp_path)])  # auto: three runs differ only by seed
    assert c.grouped and [len(col.runs) for col in c.cols] == [1, 3]
    assert dict(c.config)["seed"] == ["0", "0, 1, 2"] and dict(c.config)["optimizer.lr"] == ["0.5", "0.1"]
    stat = dict(c.metrics)["final val/acc"][1]
    mean = (0.90 + 0.92 + 0.97) / 3  # 0.93
    sd = math.sqrt(((0.90 - mean) ** 2 + (0.92 - mean) ** 2 + (0.97 - mean) ** 2) / (3 - 1))  # ddof=1: 0.0361
    assert stat.n == 3 and stat.mean == pytest.approx(mean) and stat.sd == pytest.approx(sd)
    assert stat.text(True) == "0.9300 ± 0.036 (n=3)"
    assert dict(c.metrics)["final val/acc"][0].text(True) == "0.6 (n=1)"
    assert dict(c.metrics)["best epoch"][1].text(True) == "2 (n=3)"  # all equal: one value

    ungrouped = compare([str(tmp_path)], "none")
    assert not ungrouped.grouped and len(ungrouped.cols) == 4


def test_cli_compare_json_plot_and_errors(cli, tmp_path):
    for seed, curve in enumerate([[0.5, 0.7, 0.8], [0.6, 0.7, 0.9]]):
        make_run(tmp_path, f"s{seed}", curve, 0.8, seed=seed)
    result = cli("compare", tmp_path / "exp" / "s0", tmp_path / "exp" / "s1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["grouped_by_seed"] and data["columns"][0]["seeds"] == [0, 1]
    assert data["metrics"]["final val/acc"][0]["sd"] == pytest.approx(math.sqrt(((0.8 - 0.85) ** 2) * 2))

    table = cli("compare", str(tmp_path / "exp" / "*"), "--plot", tmp_path / "curves.png")
    assert table.exit_code == 0, table.output
    assert "0.8500 ± 0.071 (n=2)" in table.stdout and "ddof=1" in table.stdout
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    page = cli("compare", tmp_path / "exp", "--plot", tmp_path / "curves.html", "--metric", "val/loss")
    assert page.exit_code == 0, page.output
    assert "<svg" in (tmp_path / "curves.html").read_text(encoding="utf-8")

    assert "no such run folder" in assert_clean_error(cli("compare", tmp_path / "nothing"))
    assert "matches nothing" in assert_clean_error(cli("compare", str(tmp_path / "nothing*")))
    assert "--group-by" in assert_clean_error(cli("compare", tmp_path, "--group-by", "lr"))
    assert ".png or an .html" in assert_clean_error(cli("compare", tmp_path, "--plot", tmp_path / "x.pdf"))


# ------------------------------------------------------------------------------ fit --seeds


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5,9") == [3, 4, 5, 9]
    for bad in ("a", "1,1", "5-3", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_seeds_option_errors(cli, tmp_path):
    config = write_config(tmp_path)
    assert "--seeds" in assert_clean_error(cli("fit", config, "--workers", "2"))
    assert "seed" in assert_clean_error(cli("fit", config, "--seeds", "0,1", "--set", "seed=3"))
    assert "--resume" in assert_clean_error(cli("fit", config, "--seeds", "0,1", "--resume", tmp_path))


def _tiny(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        model={"name": "mlp", "hidden": [16]},
        data={"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 256,
              "normalize": {"name": "standardize"}},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False},
    )


def _seeds_of(tmp_path: Path) -> dict[int, Path]:
    found = {}
    for config in (tmp_path / "runs" / "test_run").glob("*/config.yaml"):
        found[yaml.safe_load(config.read_text(encoding="utf-8"))["seed"]] = config.parent
    return found


@pytest.mark.slow
def test_seeds_sequential_one_folder_per_seed(cli, tmp_path):
    result = cli("fit", _tiny(tmp_path), "--seeds", "3,4")
    assert result.exit_code == 0, result.output
    folders = _seeds_of(tmp_path)
    assert sorted(folders) == [3, 4]
    assert "(n=2)" in result.stdout  # the seeds' comparison
    c = compare([str(p) for p in folders.values()])
    assert c.grouped and len(c.cols) == 1


@pytest.mark.slow
def test_seeds_parallel_workers(tmp_path):
    result = subprocess.run(
        nntrain_cmd("fit", _tiny(tmp_path), "--seeds", "0-2", "--workers", "2"),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    folders = _seeds_of(tmp_path)
    assert sorted(folders) == [0, 1, 2]
    assert "[seed 2]" in result.stdout
    for seed, folder in folders.items():
        assert json.loads((folder / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_seeds_failures_aggregate(tmp_path):
    """Every seed diverges: each is recorded as failed, and the exit code is 1."""
    config = write_config(
        tmp_path, model={"name": "mlp", "hidden": [16]}, optimizer={"name": "sgd", "lr": 1.0e30},
        data={"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 256},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False},
    )
    result = subprocess.run(nntrain_cmd("fit", config, "--seeds", "0,1", "--workers", "2"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 of 2 seeds failed" in result.stderr
    assert sorted(_seeds_of(tmp_path)) == [0, 1]


@pytest.mark.slow
def test_seed_workers_die_with_their_parent(tmp_path):
    """kill -9 of `fit --seeds --workers`: each worker gets SIGTERM, saves last.pt, records interrupted."""
    import os
    import signal
    import time

    config = write_config(
        tmp_path, model={"name": "mlp", "hidden": [16]}, train={"epochs": 1000, "device": "cpu"},
        data={"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 16},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False},
    )
    parent = subprocess.Popen(nntrain_cmd("fit", config, "--seeds", "0,1", "--workers", "2"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    status = lambda: [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/run.json")]  # noqa: E731
    while time.monotonic() < deadline and not (len(status()) == 2 and all(s["status"] == "running" for s in status())):
        assert parent.poll() is None, "the seeds ended early"
        time.sleep(0.2)
    workers = [s["pid"] for s in status()]
    assert len(workers) == 2, "the workers did not start in 240 s"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(s["status"] == "running" for s in status()):
        time.sleep(0.2)
    assert sorted(s["status"] for s in status()) == ["interrupted", "interrupted"], status()
    assert all(s["reason"].startswith("SIGTERM") for s in status()), status()
    assert len(list((tmp_path / "runs").glob("*/*/checkpoints/last.pt"))) == 2


@pytest.mark.slow
def test_course_script_small_subset(tmp_path):
    """benchmarks/course.py on one comparison, two seeds, one epoch: its tables come from
    `nntrain fit --seeds`, `nntrain runs --json` and `nntrain compare --json`."""
    from helpers import REPO

    result = subprocess.run(
        [*nntrain_cmd()[:1], str(REPO / "benchmarks" / "course.py"), "--only", "deep_sigmoid_vs_relu",
         "--seeds", "0,1", "--workers", "2", "--set", "train.epochs=1", "--out", str(tmp_path / "course")],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("| `deep_")}
    assert set(rows) == {"`deep_sigmoid`", "`deep_relu`"}
    assert " ± " in rows["`deep_relu`"]  # two seeds: mean ± sd
    assert "fc1.weight (first)" in result.stdout
    folders = list((tmp_path / "course" / "deep_sigmoid_vs_relu").glob("*/*/config.yaml"))
    assert sorted(yaml.safe_load(p.read_text())["seed"] for p in folders) == [0, 0, 1, 1]
