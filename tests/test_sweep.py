"""`nntrain sweep`: the sweep schema, Optuna trials as runs, pruning, best.yaml, resume, workers."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, assert_clean_error, base_config, nntrain_cmd

from nntrain.errors import ConfigError
from nntrain.validate import load_config

optuna = pytest.importorskip("optuna")

from nntrain.sweep import load_plan, run_sweep, run_trial  # noqa: E402 - after the optuna check


def _write(folder: Path, sweep: dict[str, Any] | None, **sections: Any) -> Path:
    """A tiny run (MLP [16] on 600 training samples of mnist_small) with a `sweep:` section."""
    raw = base_config(folder)
    raw["data"]["val_split"] = 0.9
    raw["model"] = {"name": "mlp", "hidden": [16]}
    raw["train"] = {"epochs": 2, "device": "cpu", "test_at_end": False}
    raw["log"]["tensorboard"] = False
    raw.update(sections)
    if sweep is not None:
        raw["sweep"] = sweep
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _sweep(**fields: Any) -> dict[str, Any]:
    params = {
        "optimizer.lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2},
        "model.hidden": {"type": "choice", "values": [[8], [16, 8]]},
    }
    return {"metric": "val/acc", "sampler": "random", "pruner": "none", "trials": 3, "params": params, **fields}


def _study(summary: dict[str, Any]) -> Any:
    return optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{summary['sweep_dir']}/study.db")


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "param, message",
    [
        ({"type": "logunifrm", "low": 1e-4, "high": 1e-1}, r"unknown type 'logunifrm'; did you mean 'loguniform'"),
        ({"type": "loguniform", "low": 0.0, "high": 1e-1}, r"loguniform needs low > 0"),
        ({"type": "uniform", "low": 0.5, "high": 0.1}, r"'low' must be below 'high'"),
        ({"type": "loguniform", "low": 1e-4, "hihg": 1e-1}, r"unknown key 'hihg'; did you mean 'high'"),
        ({"type": "int", "low": 1, "high": 8, "step": 2, "log": True}, r"'step' or 'log: true', not both"),
        ({"type": "int", "low": 1.5, "high": 8}, r"int needs integer low, high and step \(got low=1.5\)"),
        ({"type": "uniform", "low": 0.0, "high": 1.0, "step": 0.3}, r"'step' must divide high - low"),
        ({"type": "choice", "values": []}, r"choice needs a non-empty list 'values'"),
        ({"type": "choice", "values": [[8], [8]]}, r"lists \[8\] more than once"),
        ({"low": 1e-4, "high": 1e-1}, r"missing 'type'"),
    ],
)
def test_bad_distribution_is_a_config_error_with_its_line(tmp_path, param, message):
    path = _write(tmp_path, _sweep(params={"optimizer.lr": param}))
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    line = path.read_text().splitlines().index("    optimizer.lr:") + 1
    assert str(exc.value).startswith(f"{path}:{line} sweep.params.optimizer.lr: "), exc.value


def test_bad_sweep_fields_are_config_errors(tmp_path):
    path = _write(tmp_path, _sweep(metric="val/accuracy", sampler="bayes", trials=0, trails=3))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "sweep.metric: unknown metric 'val/accuracy'; did you mean 'val/acc'?" in text
    assert "sweep.sampler: Input should be 'grid', 'random' or 'tpe'" in text
    assert "sweep.trials: Input should be greater than 0" in text
    assert "sweep.trails: unknown key 'trails'; did you mean 'trials'?" in text


def test_unknown_or_invalid_param_keys_point_at_their_sweep_line(tmp_path):
    params = {
        "model.hiddn": [[8], [16]],
        "optimizer.lr": {"type": "uniform", "low": -0.1, "high": 0.1},
        "trian.epochs": {"type": "int", "low": 1, "high": 2},
        "name": ["a", "b"],
    }
    path = _write(tmp_path, _sweep(params=params))
    lines = path.read_text().splitlines()
    line = {key: lines.index(f"    {key}:") + 1 for key in params}
    with pytest.raises(ConfigError) as exc:
        load_plan(path)
    text = str(exc.value)
    assert f"{path}:{line['model.hiddn']} model.hiddn: unknown key 'hiddn'; did you mean 'hidden'?" in text
    assert f"{path}:{line['optimizer.lr']} optimizer.lr: must be >= 0 (got -0.1)" in text
    assert f"{path}:{line['trian.epochs']} trian: unknown key 'trian'; did you mean 'train'?" in text
    assert f"{path}:{line['name']} sweep.params.name: 'name' cannot be searched" in text


def test_grid_sampler_needs_a_finite_grid(tmp_path):
    path = _write(tmp_path, _sweep(sampler="grid"))
    with pytest.raises(ConfigError, match=r"sweep.params.optimizer.lr: the grid sampler needs a finite grid"):
        load_plan(path)


def test_sweep_command_without_sweep_section_is_a_clean_error(tmp_path, cli):
    stderr = assert_clean_error(cli("sweep", _write(tmp_path, None)))
    assert "no 'sweep' section" in stderr


# ---------------------------------------------------------------- fit ignores it


def test_fit_ignores_the_sweep_section(tmp_path, cli):
    path = _write(tmp_path, _sweep(), train={"epochs": 1, "device": "cpu", "test_at_end": False})
    with_sweep = load_config(path)
    raw = yaml.safe_load(path.read_text())
    del raw["sweep"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(raw))
    assert with_sweep.sweep is not None and with_sweep.hash() == load_config(plain).hash()
    result = cli("fit", path)
    assert result.exit_code == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "test_run").iterdir()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "sweep" not in saved and saved["optimizer"]["lr"] == 2.0e-3


# ---------------------------------------------------------------- sweeps


def test_random_sweep_runs_trials_as_runs_and_writes_a_best_yaml_that_reproduces_the_best(tmp_path, cli):
    path = _write(tmp_path, _sweep(), log={"dir": str(tmp_path / "runs"), "every_n_steps": 20, "tensorboard": True})
    result = cli("sweep", path)
    assert result.exit_code == 0, result.stdout + result.stderr
    (sweep_dir,) = (tmp_path / "runs" / "test_run").glob("sweep-*")
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["complete"] * 3
    values = [t["value"] for t in summary["trials"]]
    best = summary["best"]
    assert best["value"] == max(values) and best["number"] == values.index(max(values))
    assert f"best: trial {best['number']}" in result.stdout and "best.yaml" in result.stdout
    # Each trial is a normal run in trial-<n>, with its own values and TensorBoard events.
    for t in summary["trials"]:
        run_dir = sweep_dir / f"trial-{t['number']}"
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert "sweep" not in cfg
        assert cfg["optimizer"]["lr"] == t["params"]["optimizer.lr"]
        assert cfg["model"]["hidden"] == t["params"]["model.hidden"]
        assert (run_dir / "checkpoints" / "best.pt").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    # The metric was reported to Optuna after every epoch.
    assert all(sorted(t.intermediate_values) == [1, 2] for t in _study(summary).trials)
    # best.yaml is a complete config that `nntrain fit` takes, with the best trial's values.
    best_cfg = load_config(sweep_dir / "best.yaml")
    assert best_cfg.sweep is None
    assert best_cfg.optimizer.model_dump()["lr"] == best["params"]["optimizer.lr"]
    assert best_cfg.model.model_dump()["hidden"] == best["params"]["model.hidden"]
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2] and rows[0]["model.hidden"] in ("[8]", "[16, 8]")


def test_grid_sampler_runs_every_point_of_the_grid(tmp_path):
    params = {
        "optimizer.lr": [1.0e-3, 1.0e-2],
        "data.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
    }
    path = _write(tmp_path, _sweep(sampler="grid", trials=None, params=params),
                  train={"epochs": 1, "device": "cpu", "test_at_end": False})
    summary = run_sweep(path)
    points = {(t["params"]["optimizer.lr"], t["params"]["data.batch_size"]) for t in summary["trials"]}
    assert len(summary["trials"]) == 4
    assert points == {(1e-3, 32), (1e-3, 64), (1e-2, 32), (1e-2, 64)}


def test_pruned_trial_stops_early(tmp_path):
    """A median pruner against a scripted trial that reached 0.99 at every epoch: the real one is worse."""
    path = _write(tmp_path, _sweep(), train={"epochs": 3, "device": "cpu", "test_at_end": False})
    plan = load_plan(path)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(optuna.trial.create_trial(value=0.99, intermediate_values={1: 0.99, 2: 0.99, 3: 0.99}))
    study.optimize(lambda trial: run_trial(plan, trial, tmp_path / "sweep"), n_trials=1)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    summary = json.loads((tmp_path / "sweep" / "trial-1" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["stop_reason"].startswith("pruned by the sweep after epoch 1")


def test_resume_runs_only_the_missing_trials_and_the_one_cut_short(tmp_path):
    path = _write(tmp_path, _sweep(sampler="tpe", trials=2), train={"epochs": 1, "device": "cpu", "test_at_end": False})
    first = run_sweep(path)
    sweep_dir = Path(first["sweep_dir"])
    assert [t["state"] for t in first["trials"]] == ["complete", "complete"]
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("trial-*/summary.json")}
    # A sweep killed in its third trial leaves it RUNNING in the storage.
    study = _study(first)
    cut = study.ask({
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
        "model.hidden": optuna.distributions.CategoricalDistribution(["[8]", "[16, 8]"]),
    })
    resumed = run_sweep(path, ["sweep.trials=3"], resume=sweep_dir)
    states = [(t["number"], t["state"]) for t in resumed["trials"]]
    assert states == [(0, "complete"), (1, "complete"), (2, "fail"), (3, "complete")]
    assert resumed["trials"][3]["params"] == load_plan(path).decode(cut.params)  # run again, same values
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished trials untouched
    assert sorted(p.name for p in sweep_dir.glob("trial-*")) == ["trial-0", "trial-1", "trial-3"]
    again = run_sweep(path, ["sweep.trials=3"], resume=sweep_dir)  # nothing left to do
    assert len(again["trials"]) == 4


def test_resume_refuses_another_config(tmp_path):
    path = _write(tmp_path, _sweep(trials=1), train={"epochs": 1, "device": "cpu", "test_at_end": False})
    sweep_dir = Path(run_sweep(path)["sweep_dir"])
    with pytest.raises(ConfigError, match=r"started with another config:\n  seed: 0 -> 1\n"):
        run_sweep(path, ["seed=1"], resume=sweep_dir)
    run_sweep(path, ["train.device=auto", "sweep.trials=1"], resume=sweep_dir)  # these may differ


@pytest.mark.slow
def test_workers_share_one_study(tmp_path):
    path = _write(tmp_path, _sweep(trials=2), train={"epochs": 1, "device": "cpu", "test_at_end": False})
    result = subprocess.run(nntrain_cmd("sweep", path, "--workers", "2"), capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (sweep_dir,) = (tmp_path / "runs" / "test_run").glob("sweep-*")
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["complete", "complete"]
    assert sorted(p.name for p in sweep_dir.glob("trial-*")) == ["trial-0", "trial-1"]


def test_shipped_sweep_config_plans(monkeypatch):
    monkeypatch.chdir(REPO)
    plan = load_plan("configs/mnist_mlp_sweep.yaml")
    assert plan.trials == 8 and plan.direction == "maximize"
    assert [p.name for p in plan.params] == ["optimizer.lr", "model.hidden", "model.dropout", "data.batch_size"]
    cfg = plan.config({"model.hidden": [256, 128], "data.batch_size": 200})
    assert cfg.model.model_dump()["hidden"] == [256, 128] and cfg.data.batch_size == 200 and cfg.sweep is None
