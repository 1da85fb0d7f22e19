"""The runs under a folder: what each run folder holds, read back as one `Run`, and the listing of
`nntrain runs` (a sweep is one row; a sweep folder lists its trials).

A run folder has config.yaml (written when it starts), run.json (its status, see run_status.py),
metrics.jsonl (one record per logged step and per epoch) and, once finished, summary.json. A sweep
folder (`sweep-<stamp>`, with sweep.json) holds trial-<n>/ run folders and, once it stops,
summary.json. Reading a folder never imports torch: a listing of hundreds of runs stays quick.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from nntrain.errors import ConfigError
from nntrain.run_status import STALE_S, parse_time, process_alive, read_status, state

MAX_DEPTH = 4  # runs/<name>/<stamp> is 2 below runs/; a few more levels for folders of log dirs


@dataclass
class Run:
    """One run folder, read back.

    `final` and `best` come from summary.json when the run finished, else from its epoch records.
    """

    dir: Path
    name: str
    stamp: str
    status: str
    reason: str | None = None
    started: datetime | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # the epoch records of metrics.jsonl
    epochs_planned: int | None = None
    monitor: str | None = None
    mode: str = "min"
    best: float | None = None
    best_epoch: int | None = None
    duration_s: float | None = None

    @property
    def epochs_done(self) -> int:
        if self.summary.get("epochs") is not None:
            return int(self.summary["epochs"])
        return max((int(r["epoch"]) for r in self.epochs), default=0)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics."""
        if self.summary.get("final"):
            return dict(self.summary["final"])
        last = self.epochs[-1] if self.epochs else {}
        return {k: v for k, v in last.items() if k not in ("kind", "epoch", "step")}

    @property
    def test(self) -> dict[str, float]:
        return dict(self.summary.get("test") or {})

    @property
    def samples_per_s(self) -> float | None:
        return self.summary.get("samples_per_s")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def test_value(self) -> tuple[str | None, float | None]:
        """The test metric that matches the monitored one (`val/acc` -> `test/acc`), else test/loss."""
        test = self.test
        if not test:
            return None, None
        metric = (self.monitor or "").rpartition("/")[2]
        for key in (f"test/{metric}", "test/acc", "test/loss"):
            if key in test:
                return key, test[key]
        key = next(iter(test))
        return key, test[key]

    def to_json(self) -> dict[str, Any]:
        test_key, test_value = self.test_value()
        return {
            "kind": "run",
            "dir": str(self.dir),
            "name": self.name,
            "stamp": self.stamp,
            "seed": self.seed,
            "status": self.status,
            "reason": self.reason,
            "started": None if self.started is None else self.started.isoformat(),
            "epochs": self.epochs_done,
            "epochs_planned": self.epochs_planned,
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "test_metric": test_key,
            "test": test_value,
            "duration_s": self.duration_s,
            "samples_per_s": self.samples_per_s,
        }


@dataclass
class Sweep:
    """A sweep folder, read back: its trials and its best one."""

    dir: Path
    name: str
    stamp: str
    status: str
    started: datetime | None
    trials: list[Run]
    requested: int | None = None
    metric: str | None = None
    best_trial: int | None = None
    best: float | None = None
    duration_s: float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "sweep",
            "dir": str(self.dir),
            "name": self.name,
            "stamp": self.stamp,
            "status": self.status,
            "reason": self.reason,
            "started": None if self.started is None else self.started.isoformat(),
            "trials": len(self.trials),
            "trials_requested": self.requested,
            "metric": self.metric,
            "best_trial": self.best_trial,
            "best": self.best,
            "duration_s": self.duration_s,
        }


# ------------------------------------------------------------------------------------ reading


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not is_sweep_dir(path)


def is_sweep_dir(path: Path) -> bool:
    return (path / "sweep.json").is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


_NUMBER = (int, float)
# The entries of summary.json and sweep.json that listings read, and their types: a damaged file's
# entries of another type are read as absent (a listing never fails on one folder's files).
_RUN_SUMMARY = {"epochs": int, "final": dict, "test": dict, "samples_per_s": _NUMBER, "best": dict, "time_s": _NUMBER}
_RUN_BEST = {"monitor": str, "value": _NUMBER, "epoch": int}
_SWEEP_SUMMARY = {"trials_requested": int, "metric": str, "best": dict, "counts": dict}
_SWEEP_BEST = {"number": int, "value": _NUMBER}
_SWEEP_META = {"created": str, "study": str}


def _typed(record: Any, types: dict[str, Any]) -> dict[str, Any]:
    """`record` (a dict, else {}) without the entries of `types` that have another type."""
    if not isinstance(record, dict):
        return {}
    return {
        k: v for k, v in record.items()
        if k not in types or (isinstance(v, types[k]) and not isinstance(v, bool))
    }


def _run_summary(path: Path) -> dict[str, Any]:
    summary = _typed(_json(path), _RUN_SUMMARY)
    if "best" in summary:
        summary["best"] = _typed(summary["best"], _RUN_BEST)
    return summary


def _sweep_summary(path: Path) -> dict[str, Any]:
    summary = _typed(_json(path), _SWEEP_SUMMARY)
    if "best" in summary:
        summary["best"] = _typed(summary["best"], _SWEEP_BEST)
    if "counts" in summary:
        summary["counts"] = {k: v for k, v in summary["counts"].items() if isinstance(v, int)}
    return summary


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of metrics.jsonl, in order; a half-written last line is skipped."""
    records = []
    try:
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                if '"epoch"' not in line or not line.startswith('{"kind": "epoch"'):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                    records.append(record)
    except OSError:
        return []
    return records


def _metric_mode(monitor: str, explicit: Any) -> str:
    if explicit in ("min", "max"):
        return explicit
    from nntrain.metrics import mode  # torch, but only for runs that never wrote their best

    return mode(monitor)


def _stamp_time(stamp: str) -> datetime | None:
    """The time in a folder name `YYYYmmdd-HHMMSS[-n]` (or `sweep-...`)."""
    text = stamp.removeprefix("sweep-")[:15]
    try:
        return datetime.strptime(text, "%Y%m%d-%H%M%S").astimezone()
    except ValueError:
        return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    except OSError:
        return None


def load_run(run_dir: Path, now: datetime | None = None) -> Run:
    """Reads a run folder: config, status, epoch records and summary."""
    run_dir = Path(run_dir)
    now = now or datetime.now().astimezone()
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    summary = _run_summary(run_dir / "summary.json")
    record = read_status(run_dir)
    epochs = epoch_records(run_dir)
    train = config.get("train") or {}
    if record is not None:
        status, reason = state(record, now)
        started = parse_time(record.get("started"))
    else:  # a run folder of an nntrain without run.json: what its files say
        started = _stamp_time(run_dir.name) or _mtime(run_dir)
        if summary:
            status, reason = "finished", None
        else:
            touched = max(filter(None, [_mtime(run_dir / "metrics.jsonl"), _mtime(run_dir)]), default=None)
            fresh = touched is not None and (now - touched).total_seconds() < STALE_S
            status, reason = ("running", None) if fresh else ("stopped", "no run.json and no summary.json")
    run = Run(
        dir=run_dir,
        name=str(config.get("name") or run_dir.parent.name),
        stamp=run_dir.name,
        status=status,
        reason=reason,
        started=started,
        config=config,
        summary=summary,
        epochs=epochs,
        epochs_planned=(record or {}).get("epochs_planned") or train.get("epochs"),
    )
    checkpoint = train.get("checkpoint") or {}
    best = summary.get("best") or {}
    run.monitor = best.get("monitor") or (record or {}).get("monitor") or checkpoint.get("monitor") or "val/loss"
    if best.get("value") is not None:
        run.best, run.best_epoch = best["value"], best.get("epoch")
    else:  # not finished (or no finite value yet): the best epoch record, the first of equals
        values = [(r.get(run.monitor), int(r["epoch"])) for r in epochs]
        values = [(v, e) for v, e in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if values:
            run.mode = (record or {}).get("mode") or _metric_mode(run.monitor, checkpoint.get("mode"))
            sign = -1.0 if run.mode == "max" else 1.0
            run.best, run.best_epoch = min(values, key=lambda ve: (sign * ve[0], ve[1]))
    if summary.get("time_s") is not None and status == "finished":
        run.duration_s = float(summary["time_s"])
    elif record is not None and started is not None:
        end = parse_time(record.get("ended")) if status != "running" else now
        end = end or parse_time(record.get("heartbeat"))
        run.duration_s = None if end is None else max(0.0, (end - started).total_seconds())
    return run


def load_sweep(sweep_dir: Path, now: datetime | None = None) -> Sweep:
    """Reads a sweep folder: its trials (trial-<n>/ run folders) and summary.json."""
    sweep_dir = Path(sweep_dir)
    meta = _typed(_json(sweep_dir / "sweep.json"), _SWEEP_META)
    summary = _sweep_summary(sweep_dir / "summary.json")
    trials = [load_run(p, now) for p in trial_dirs(sweep_dir)]
    started = parse_time(meta.get("created")) or _stamp_time(sweep_dir.name) or _mtime(sweep_dir)
    sweep = Sweep(
        dir=sweep_dir,
        name=str(meta.get("study") or sweep_dir.parent.name),
        stamp=sweep_dir.name,
        status="finished",
        started=started,
        trials=trials,
        requested=summary.get("trials_requested"),
        metric=summary.get("metric"),
    )
    if sweep_dir.parent.name and sweep_dir.parent.name != sweep.name:
        sweep.name = sweep_dir.parent.name
    best = summary.get("best") or {}
    sweep.best_trial, sweep.best = best.get("number"), best.get("value")
    pids = _pids(sweep_dir / "sweep.pid")
    if pids:  # written while the sweep runs, removed when it ends
        alive = process_alive(pids[0])
        sweep.status = "running" if alive else "stopped"
        sweep.reason = None if alive else f"process {pids[0]} is gone without finishing the sweep"
    elif not summary:
        sweep.status, sweep.reason = "stopped", "no summary.json"
    else:
        counts = summary.get("counts") or {}
        done = sum(counts.get(s, 0) for s in ("complete", "pruned", "fail"))
        if sweep.requested is not None and done < sweep.requested:
            sweep.status, sweep.reason = "interrupted", f"{done} of {sweep.requested} trials done"
    times = [(t.started, t.duration_s) for t in trials if t.started is not None and t.duration_s is not None]
    if times and started is not None:
        end = max(s.timestamp() + d for s, d in times)
        sweep.duration_s = max(0.0, end - started.timestamp())
    return sweep


def trial_dirs(sweep_dir: Path) -> list[Path]:
    """The trial-<n> run folders of a sweep, by trial number."""
    trials = [p for p in Path(sweep_dir).glob("trial-*") if is_run_dir(p)]
    return sorted(trials, key=lambda p: (len(p.name), p.name))


def _pids(path: Path) -> list[int]:
    try:
        words = path.read_text(encoding="utf-8", errors="replace").split()
        return [int(w) for w in words if w.isascii() and w.isdigit() and 0 < int(w) < 2**22]  # Linux: pid < 2**22
    except OSError:
        return []


def _folders(root: Path, depth: int = 0) -> Iterator[tuple[str, Path]]:
    """("run" | "sweep", folder) for every run or sweep folder at or under `root` (sweeps' trials not)."""
    if is_sweep_dir(root):
        yield "sweep", root
        return
    if is_run_dir(root):
        yield "run", root
        return
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from _folders(child, depth + 1)


def collect(log_dir: Path, name: str | None = None) -> list[Run | Sweep]:
    """The runs and sweeps under `log_dir`, oldest first; a sweep folder gives its trials.

    Args:
        log_dir: runs/ (or any folder above run folders), a run folder, or a sweep folder.
        name: a glob matched against the run's name and `name/stamp` (`--name 'opt_*'`).

    Raises:
        ConfigError: `log_dir` is not a folder.
    """
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise ConfigError(f"{log_dir}: no such folder" if not log_dir.exists() else f"{log_dir}: not a folder")
    now = datetime.now().astimezone()
    items: list[Run | Sweep]
    if is_sweep_dir(log_dir):
        items = list(load_sweep(log_dir, now).trials)
    else:
        items = [load_sweep(p, now) if kind == "sweep" else load_run(p, now) for kind, p in _folders(log_dir)]
    if name is not None:
        items = [i for i in items
                 if fnmatch.fnmatchcase(i.name, name) or fnmatch.fnmatchcase(f"{i.name}/{i.stamp}", name)]
    never = datetime.min.replace(tzinfo=now.tzinfo)
    return sorted(items, key=lambda i: (i.started or never, str(i.dir)))


def run_dirs(patterns: list[str]) -> list[Path]:
    """The run folders named by `patterns`: run folders, folders above runs (every run under them),
    sweep folders (their trials) and globs of any of these, each once, in the order given.

    Raises:
        ConfigError: a pattern names nothing, or nothing with a run in it.
    """
    import glob

    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
        if not matches or not any(Path(m).exists() for m in matches):
            why = " (the pattern matches nothing)" if not matches else ""
            raise ConfigError(f"{pattern}: no such run folder{why}")
        before = len(found)
        for match in map(Path, matches):
            if not match.is_dir():
                continue
            if is_sweep_dir(match):
                found.update((p, None) for p in trial_dirs(match))
            else:
                for kind, folder in _folders(match):
                    if kind == "run":
                        found[folder] = None
                    else:
                        found.update((p, None) for p in trial_dirs(folder))
        if len(found) == before:
            raise ConfigError(f"{pattern}: no run folder there (a run folder holds config.yaml)")
    return list(found)


# ------------------------------------------------------------------------------------ showing


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def fmt_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value) and value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.3e}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


STATUS_STYLE = {
    "finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "stopped": "magenta",
}


def rows(items: list[Run | Sweep]) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of `nntrain runs`' table. A metric name shared by every row goes
    into the header (`best val/acc`), else into each cell."""
    runs = [i for i in items if isinstance(i, Run)]
    monitors = {r.monitor for r in runs if r.best is not None}
    tests = {r.test_value()[0] for r in runs} - {None}
    monitor = monitors.pop() if len(monitors) == 1 and not any(isinstance(i, Sweep) for i in items) else None
    test = tests.pop() if len(tests) == 1 else None
    header = ["run", "status", "epochs", f"best {monitor}" if monitor else "best", test or "test",
              "time", "samples/s", "note"]  # best: value @epoch
    table = []
    for item in items:
        if isinstance(item, Sweep):
            best = "-" if item.best is None else f"{item.metric} {fmt_number(item.best)} (trial {item.best_trial})"
            progress = f"{len(item.trials)}" + (f"/{item.requested}" if item.requested else "") + " trials"
            cells = [progress, best, "-", fmt_duration(item.duration_s), "-"]
        else:
            best = "-" if item.best is None else f"{fmt_number(item.best)} @{item.best_epoch}"
            best = best if monitor or item.best is None else f"{item.monitor} {best}"
            test_key, test_value = item.test_value()
            shown = "-" if test_key is None else fmt_number(test_value)
            shown = shown if test or test_key is None else f"{test_key} {shown}"
            planned = f"/{item.epochs_planned}" if item.epochs_planned else ""
            speed = item.samples_per_s
            cells = [f"{item.epochs_done}{planned}", best, shown, fmt_duration(item.duration_s),
                     "-" if speed is None else f"{speed:,.0f}"]
        table.append([f"{item.name}/{item.stamp}", item.status, *cells, _short(item.reason)])
    return header, table


def _short(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
