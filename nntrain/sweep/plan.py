"""A sweep section made concrete: the searched keys, each trial's config, and a trial as a run.

A searched key is set like `--set` sets it and every trial's config is validated like a file, so a
bad key or value is reported with the file and line of its entry under `sweep.params`.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nntrain.callbacks import Callback, improved
from nntrain.config import Config, Key, SweepConfig, SweepParam
from nntrain.config_file import Source, apply_overrides, read_yaml, set_key
from nntrain.errors import ConfigError, RunError
from nntrain.metrics import monitor_mode
from nntrain.validate import validate

if TYPE_CHECKING:
    import optuna

    from nntrain.trainer import Trainer

DEFAULT_TRIALS = 20
SCALARS = (type(None), bool, int, float, str)  # what Optuna stores as a categorical value


class TrialFailed(RunError):
    """A trial whose config or training failed; the sweep goes on with the next one."""


def value_label(value: Any) -> str:
    """A value as one line of JSON (which YAML reads too): `[256, 128]`."""
    return json.dumps(value, separators=(", ", ": "))


def format_value(value: Any) -> str:
    """A param value for tables and progress lines: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value_label(value) if not isinstance(value, str) else value


@dataclass
class Param:
    """One searched key: Optuna's parameter `name` (the dotted key as written) and its distribution."""

    name: str
    key: Key
    spec: SweepParam
    labels: dict[str, Any] = field(default_factory=dict)  # choices that are no scalar, by their JSON text

    @classmethod
    def from_spec(cls, name: str, spec: SweepParam) -> Param:
        key = tuple(int(p) if p.isdigit() else p for p in name.split("."))
        labels = {}
        if spec.type == "choice" and not all(isinstance(v, SCALARS) for v in spec.values or ()):
            labels = {value_label(v): v for v in spec.values or ()}  # Optuna's categories are scalars
        return cls(name, key, spec, labels)

    @property
    def choices(self) -> list[Any]:
        return list(self.labels) if self.labels else list(self.spec.values or ())

    def suggest(self, trial: optuna.Trial) -> Any:
        """This trial's value, in the config's terms."""
        s = self.spec
        if s.type == "choice":
            return self.decode(trial.suggest_categorical(self.name, self.choices))
        if s.type == "int":
            return trial.suggest_int(self.name, int(s.low), int(s.high), step=int(s.step or 1), log=s.log)
        return trial.suggest_float(self.name, s.low, s.high, log=s.type == "loguniform", step=s.step)

    def decode(self, value: Any) -> Any:
        """Optuna's stored value -> the config's value."""
        return self.labels[value] if self.labels else value

    def grid(self) -> list[Any] | None:
        """The grid sampler's points (Optuna's values), or None when the distribution has no grid."""
        s = self.spec
        if s.type == "choice":
            return self.choices
        if s.type == "int" and not s.log:
            return list(range(int(s.low), int(s.high) + 1, int(s.step or 1)))
        if s.type == "uniform" and s.step is not None:
            n = round((s.high - s.low) / s.step)
            return [round(s.low + i * s.step, 12) for i in range(n + 1)]
        return None

    def probes(self) -> list[Any]:
        """Config values checked before the sweep starts: every choice, or both ends of the range."""
        s = self.spec
        if s.type == "choice":
            return list(s.values or ())
        if s.type == "int":
            return [int(s.low), int(s.high)]
        return [s.low, s.high]


class _TrialSource(Source):
    """Problems with a searched key point at its line under `sweep.params`."""

    def __init__(self, base: Source, params: dict[Key, str]):
        super().__init__(base.path, base.lines)
        self.overrides = base.overrides
        self.files = base.files  # keys written in a base config (issue 14)
        self.params = params

    def where(self, key: Key) -> str:
        for i in range(len(key), 0, -1):
            if key[:i] in self.params:
                return self.params[key[:i]]
        created = [where for k, where in self.params.items() if k[: len(key)] == key and key not in self.lines]
        return created[0] if created else super().where(key)


@dataclass
class Plan:
    """A config's sweep made concrete: the base config, the searched keys and how to search them."""

    path: Path
    overrides: list[str]
    raw: dict[str, Any]  # the resolved config (defaults filled in, overrides applied), without `sweep`
    source: Source
    cfg: Config
    params: list[Param]
    direction: str  # maximize | minimize
    trials: int
    max_epochs: int
    threads: int | None = None  # CPU threads of a trial that sets none: this process's share (--workers)
    sampler_seed: int | None = None  # this process's sampler seed (open_study sets it)

    @property
    def sweep(self) -> SweepConfig:
        assert self.cfg.sweep is not None
        return self.cfg.sweep

    @property
    def mode(self) -> str:
        return "max" if self.direction == "maximize" else "min"

    def config(self, values: dict[str, Any], settings: dict[str, Any] | None = None) -> Config:
        """The config of a trial: the base with `values` (by param name) set, validated like a file.

        `settings` (dotted key -> value) are what the process running the trial chose where the
        config leaves the key unset (`train.threads`): recorded so that the trial's config, and
        best.yaml, reproduce its numbers.
        """
        raw = copy.deepcopy(self.raw)
        chosen = [p for p in self.params if p.name in values]
        where = {p.key: self.source.where(("sweep", "params", p.name)) for p in chosen}
        for p in sorted(chosen, key=lambda p: len(p.key)):  # a whole section before keys inside it
            set_key(raw, p.key, copy.deepcopy(values[p.name]), f"{where[p.key]} sweep.params.{p.name}")
        for name, value in (settings or {}).items():
            key = tuple(name.split("."))
            node: Any = raw
            for part in key[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(key[-1]) is None:
                node[key[-1]] = value
        return validate(raw, _TrialSource(self.source, where))

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's params of a trial -> config values by param name."""
        by_name = {p.name: p for p in self.params}
        return {name: by_name[name].decode(v) if name in by_name else v for name, v in params.items()}


def load_plan(path: str | Path, overrides: list[str] = ()) -> Plan:
    """Reads a config with a `sweep:` section; checks every searched key and its range like a `--set`."""
    path = Path(path)
    raw, source = read_yaml(path)
    raw = apply_overrides(raw, list(overrides), source)
    cfg = validate(raw, source)
    if cfg.sweep is None:
        raise ConfigError(
            f"{path}: no 'sweep' section; nntrain sweep needs one naming the metric and the searched keys "
            f"(see configs/mnist_mlp_sweep.yaml)"
        )
    sweep = cfg.sweep
    errors: list[str] = []
    params: list[Param] = []
    for name, spec in sweep.params.items():
        where = f"{source.where(('sweep', 'params', name))} sweep.params.{name}"
        parts = name.split(".")
        if not all(p.isidentifier() or p.isdigit() for p in parts):
            errors.append(f"{where}: not a dotted config key such as optimizer.lr or model.hidden")
        elif parts[0] in ("sweep", "name"):
            errors.append(f"{where}: '{parts[0]}' cannot be searched (trials run under the sweep's name)")
        else:
            params.append(Param.from_spec(name, spec))
    if sweep.sampler == "grid":
        for p in params:
            if p.grid() is None:
                what = "log: true" if p.spec.type == "int" else f"type {p.spec.type}"
                errors.append(
                    f"{source.where(('sweep', 'params', p.name))} sweep.params.{p.name}: the grid sampler needs "
                    f"a finite grid, which {what} has not; use type choice with the values to try, "
                    f"type int, or type uniform with a step"
                )
    # Keys are set on the resolved config, so `optimizer.lr` works when the file leaves the default optimizer.
    plan = Plan(path, list(overrides), cfg.to_dict(), source, cfg, params,
                sweep.direction or ("maximize" if monitor_mode(sweep.metric, None) == "max" else "minimize"),
                0, cfg.train.epochs)
    for p in params:  # each value at the ends of its range, alone on the base config
        for value in p.probes():
            try:
                plan.config({p.name: value})
            except ConfigError as exc:
                errors += str(exc).splitlines()
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    if sweep.sampler == "grid":
        size = math.prod(len(p.grid() or ()) for p in params)
        plan.trials = min(sweep.trials or size, size)
    else:
        plan.trials = sweep.trials or DEFAULT_TRIALS
    for p in params:
        if p.key == ("train", "epochs"):
            plan.max_epochs = max(int(v) for v in p.probes())
    return plan


# ---------------------------------------------------------------- a trial


class TrialReporter(Callback):
    """Reports the sweep's metric to the Optuna trial after every epoch; stops the run when it is pruned."""

    def __init__(self, trial: optuna.Trial, metric: str, mode: str):
        self.trial, self.metric, self.mode = trial, metric, mode
        self.best: float | None = None
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        if improved(value, self.best, self.mode):
            self.best = value
        self.trial.report(value, trainer.epoch)
        if trainer.epoch < trainer.epochs and self.trial.should_prune():
            self.pruned_at = trainer.epoch
            trainer.should_stop = True
            trainer.stop_reason = f"pruned by the sweep after epoch {trainer.epoch} ({self.metric} {value:.4g})"


def _fail(trial: optuna.Trial, exc: Exception) -> TrialFailed:
    trial.set_user_attr("error", str(exc))
    return TrialFailed(str(exc))


def run_trial(plan: Plan, trial: optuna.Trial, sweep_dir: Path, console: Any = None) -> float:
    """Optuna's objective: trains one trial's config into `sweep_dir/trial-<n>`; returns its best metric.

    Raises:
        optuna.TrialPruned: the pruner stopped it.
        TrialFailed: its config is invalid or its training failed (a diverging loss).
    """
    import optuna
    import torch

    from nntrain.fit import fit
    from nntrain.sweep import procs

    # Who runs it: a trial whose process is found dead on this host is run again at once.
    trial.set_user_attr("owner", {"host": procs.host(), "pid": os.getpid(), "number": trial.number})
    if plan.sampler_seed is not None:
        trial.set_user_attr("sampler_seed", plan.sampler_seed)
    values = {p.name: p.suggest(trial) for p in plan.params}
    run_dir = sweep_dir / f"trial-{trial.number}"
    trial.set_user_attr("run_dir", str(run_dir))
    # Settings that change the numbers and that the config may leave to the process: kept in the
    # trial's config.yaml and in best.yaml, so that `nntrain fit` on either trains the same weights.
    settings = {"train.threads": plan.threads or torch.get_num_threads()}
    trial.set_user_attr("settings", settings)
    try:
        cfg = plan.config(values, settings)
    except ConfigError as exc:
        raise _fail(trial, exc) from None
    reporter = TrialReporter(trial, plan.sweep.metric, plan.mode)
    try:
        summary = fit(
            cfg, console, progress=False, extra_callbacks=[reporter], run_dir=run_dir,
            monitors={"sweep.metric": plan.sweep.metric},
            report=False,  # a report per trial costs more than a small trial; `fit best.yaml` writes one
        )
    except RunError as exc:
        raise _fail(trial, exc) from None
    trial.set_user_attr("epochs", summary["epochs"])
    if summary.get("test"):  # the best checkpoint on the test split (train.test_at_end)
        trial.set_user_attr("test", summary["test"])
    if reporter.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_at}")
    if reporter.best is None:
        raise _fail(trial, RunError(f"{plan.sweep.metric} was never a finite number"))
    return reporter.best
