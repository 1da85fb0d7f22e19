"""`nntrain sweep`: the sweep folder, resuming, local worker processes, and the results."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nntrain import jsonfile
from nntrain.config import to_yaml
from nntrain.errors import ConfigError, DataError, Interrupted, NntrainError, RunError
from nntrain.sweep import procs
from nntrain.sweep.plan import SCALARS, Plan, format_value, load_plan, value_label
from nntrain.sweep.study import (
    SEED_ATTR,
    count_trials,
    mask_url,
    open_study,
    requeue_cut_short,
    storage_errors,
    work,
)

STORAGE_ENV = "NNTRAIN_SWEEP_STORAGE"  # --storage from the environment: keeps a password off the command line
WORKERS_STOP_S = 15.0  # how long --resume waits for the workers of a killed sweep to stop


@dataclass
class SweepPlace:
    """Where a sweep keeps its trials and its study."""

    sweep_dir: Path
    storage: str
    study: str
    resumed: bool
    local: bool  # the study is the sweep folder's own SQLite file, which no other machine uses


def _place(plan: Plan, resume: Path | None, storage: str | None, study: str | None) -> SweepPlace:
    if resume is None:
        from nntrain.run_dir import make_run_dir

        sweep_dir = make_run_dir(plan.cfg, prefix="sweep-", what="sweep")
        meta = {
            "config": str(plan.path), "overrides": plan.overrides,
            "storage": None if storage is None else mask_url(storage),  # None: study.db in this folder
            "study": study or plan.cfg.name, "created": datetime.now().isoformat(timespec="seconds"),
        }
        try:
            (sweep_dir / "sweep.json").write_text(jsonfile.dumps(meta, indent=2), encoding="utf-8")
        except OSError as exc:
            raise RunError(f"cannot write {sweep_dir / 'sweep.json'}: {exc.strerror or exc}") from None
    else:
        sweep_dir = Path(resume)
        meta_path = sweep_dir / "sweep.json"
        if not meta_path.is_file():
            raise ConfigError(f"--resume {resume}: not a sweep folder (no sweep.json; it is runs/<name>/sweep-<stamp>)")
        meta = _read_meta(meta_path, plan)
        stored = meta["storage"]
        if storage is None and stored is not None and "***" in stored:
            raise ConfigError(
                f"--resume {resume}: the study's storage URL has a password, which sweep.json does not keep; "
                f"give it again with --storage or ${STORAGE_ENV}"
            )
        if storage is not None and mask_url(storage) != stored:
            raise ConfigError(f"--storage {mask_url(storage)}: this sweep's study is in {stored or 'its study.db'}")
        if study is not None and study != meta["study"]:
            raise ConfigError(f"--study {study}: this sweep's study is '{meta['study']}'")
        storage = storage or stored
    if resume is not None and storage is None:
        _check_study_file(sweep_dir / "study.db", plan)
    url = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    return SweepPlace(sweep_dir, url, study or meta["study"], resume is not None, storage is None)


def _read_meta(path: Path, plan: Plan) -> dict[str, Any]:
    """sweep.json of a sweep folder: the study's name and storage (None: its study.db); a damaged
    file is a DataError that says what to write into it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        why = None
    except (OSError, ValueError) as exc:
        meta, why = None, f"not readable JSON: {str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__}"
    if why is None and not isinstance(meta, dict):
        why = "not a JSON object"
    elif why is None and not (isinstance(meta.get("study"), str) and meta["study"]):
        why = "no study name ('study')"
    elif why is None and not ("storage" in meta and (meta["storage"] is None or isinstance(meta["storage"], str))):
        why = "no storage ('storage': null for the study.db in this folder, else the database URL)"
    if why is not None:
        example = jsonfile.dumps({"study": plan.cfg.name, "storage": None})
        raise DataError(
            f"{path}: damaged ({why}); it names the sweep's study. Write it again, e.g. {example} for a "
            f"sweep of this config whose study is the study.db beside it, or start a new sweep"
        )
    return meta


def _check_study_file(path: Path, plan: Plan) -> None:
    """--resume of a sweep whose study is its own study.db: the file must be there (an empty or
    missing one would silently start the sweep over, into trial folders that exist)."""
    problem = (
        "is a folder, not a file" if path.is_dir() else "is missing" if not path.exists()
        else "is empty" if path.stat().st_size == 0 else None
    )
    if problem is not None:
        raise DataError(
            f"{path}: the sweep's study database {problem}; the trials are recorded there, so this sweep "
            f"can't be resumed: restore the file, or start a new sweep (nntrain sweep {plan.path})"
        )


def run_sweep(
    config: str | Path,
    overrides: list[str] = (),
    resume: Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    worker: int | None = None,
    console: Any = None,
) -> dict[str, Any] | None:
    """Runs (or resumes, or joins) the sweep a config describes; returns the summary.

    `worker` is set in the processes `--workers N` starts: they only run trials (no summary, None).

    Raises:
        Interrupted: a signal stopped the sweep; `--resume` runs the trial it cut short again.
    """
    if worker is not None:
        procs.die_with_parent()  # first: a worker must not outlive the sweep, even while it starts
    plan = load_plan(config, list(overrides))
    place = _place(plan, resume, storage, study_name)
    if worker is not None:  # a process of --workers N: trials only
        if workers > 1:  # the cores are shared; the count is recorded in each trial's config
            plan.threads = max(1, (os.cpu_count() or 1) // workers)
        study = open_study(plan, place.storage, place.study, not place.local, worker, resumed=place.resumed)
        with storage_errors(place.storage):
            work(plan, study, place.sweep_dir, console)
        return None
    lock = place.sweep_dir / "sweep.pid"
    if place.resumed:
        _check_stopped(place, lock)
    try:
        study = open_study(plan, place.storage, place.study, not place.local, resumed=place.resumed)
    except NntrainError:
        if not place.resumed:  # nothing ran: leave no empty sweep folder behind
            shutil.rmtree(place.sweep_dir, ignore_errors=True)
        raise
    procs.write_pids(lock, [os.getpid()])
    try:
        with storage_errors(place.storage):
            requeued = requeue_cut_short(study, place.local, place.sweep_dir) if place.resumed else 0
            done, running = count_trials(study)
        workers = max(1, min(workers, plan.trials - done - running))  # no more workers than trials left
        if console is not None:
            _print_header(console, plan, place, done, requeued, workers)
        if workers > 1:
            _run_workers(plan, place, workers, lock)
        else:
            try:
                with storage_errors(place.storage):
                    work(plan, study, place.sweep_dir, console)
            except (Interrupted, KeyboardInterrupt) as exc:
                signum = exc.exit_code - 128 if isinstance(exc, Interrupted) else signal.SIGINT
                raise Interrupted(
                    f"{signal.Signals(signum).name}: sweep stopped in a trial; --resume runs it again",
                    signum, str(place.sweep_dir),
                ) from None
    finally:
        with storage_errors(place.storage):
            summary = summarize(plan, study, place)
        lock.unlink(missing_ok=True)
    return summary


def _check_stopped(place: SweepPlace, lock: Path) -> None:
    """--resume: the sweep's processes must be gone, or a trial would run twice at once.

    sweep.pid lists the sweep process and its workers. Workers of a sweep killed with -9 stop on
    their own (they die with their parent, after saving their trial's last.pt): wait for that.
    """
    pids = procs.read_pids(lock)
    if not pids:
        return
    if procs.alive(pids[0]):
        raise ConfigError(f"--resume {place.sweep_dir}: the sweep is still running (process {pids[0]})")
    left = procs.wait_gone(pids[1:], WORKERS_STOP_S)
    if left:
        raise ConfigError(
            f"--resume {place.sweep_dir}: worker process(es) {', '.join(map(str, left))} of the stopped sweep are "
            f"still running; stop them (kill {' '.join(map(str, left))}) and resume again"
        )


def _print_header(console: Any, plan: Plan, place: SweepPlace, done: int, requeued: int, workers: int) -> None:
    s = plan.sweep
    what = f"{plan.trials} trials, {s.sampler} sampler, {s.pruner} pruner, {plan.direction} {s.metric}"
    console.print(f"[bold]nntrain sweep[/] {plan.path}  ({what})", highlight=False)
    console.print(f"  study {place.study} in {mask_url(place.storage)}", highlight=False)
    console.print(f"  trials in {place.sweep_dir}/trial-<n>", highlight=False)
    if place.resumed or done:
        again = f"; {requeued} cut short run again" if requeued else ""
        verb = "resuming" if place.resumed else "joining the study"
        console.print(f"  {verb}: {done} of {plan.trials} trials finished{again}", highlight=False)
    if workers > 1:
        console.print(f"  {workers} worker processes", highlight=False)
    elif plan.sampler_seed is not None:
        shared = "" if place.local else " (a random part per process: the study may be shared)"
        console.print(f"  sampler seed {plan.sampler_seed}{shared}", highlight=False)


def _run_workers(plan: Plan, place: SweepPlace, workers: int, lock: Path) -> None:
    """`--workers N`: N processes of `nntrain sweep --worker`, each asking the study for trials.

    Each gets its own session, so a Ctrl-C reaches this process only, which passes it on once; and
    each dies with this process (procs.die_with_parent), even when it is killed with -9.
    """
    env = dict(os.environ)
    env.pop(STORAGE_ENV, None)
    env[procs.PARENT_ENV] = str(os.getpid())
    if not place.local:
        env[STORAGE_ENV] = place.storage  # not on the command line, where `ps` would show a password
    base = [sys.executable, "-m", "nntrain", "sweep", str(plan.path)]
    for text in plan.overrides:
        base += ["--set", text]
    base += ["--resume", str(place.sweep_dir), "--study", place.study, "--workers", str(workers)]
    children: list[subprocess.Popen] = []
    received: int | None = None
    reached = 0  # how many of `children` the last signal was passed to

    def forward(signum: int, frame: Any = None) -> None:
        nonlocal received, reached
        received, reached = signum, len(children)
        for p in children:
            if p.poll() is None:
                p.send_signal(signum)

    # Installed before the first worker starts: a signal meanwhile reaches every worker (below).
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(workers):
            if received is not None:
                break  # stopped while starting: no more workers
            children.append(subprocess.Popen([*base, "--worker", str(i)], env=env, start_new_session=True))
        procs.write_pids(lock, [os.getpid(), *(p.pid for p in children)])  # what --resume waits for
        for p in children[reached:] if received is not None else ():
            p.send_signal(received)  # started just after the signal came
        for p in children:
            p.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    codes = [p.returncode for p in children]
    if received is not None or any(c in (130, 143) for c in codes):
        signum = received or signal.SIGINT
        raise Interrupted(
            f"{signal.Signals(signum).name}: sweep stopped; --resume runs the trials it cut short again",
            signum, str(place.sweep_dir),
        )
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise RunError("; ".join(failed) + " (its message is above)")


# ---------------------------------------------------------------- results


def summarize(plan: Plan, study: Any, place: SweepPlace) -> dict[str, Any]:
    """Writes summary.json, trials.csv and best.yaml into the sweep folder; returns the summary."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        epochs = t.user_attrs.get("epochs", max(t.intermediate_values) if t.intermediate_values else None)
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": plan.decode(t.params),
            "epochs": epochs,
            "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
            "run_dir": t.user_attrs.get("run_dir"),
            "test": t.user_attrs.get("test"),
            "error": t.user_attrs.get("error"),
            "settings": t.user_attrs.get("settings"),
            SEED_ATTR: t.user_attrs.get(SEED_ATTR),
        })
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    pick = max if plan.direction == "maximize" else min
    best = pick(complete, key=lambda r: r["value"], default=None)
    states = [r["state"] for r in rows]
    summary: dict[str, Any] = {
        "sweep_dir": str(place.sweep_dir),
        "study": place.study,
        "storage": mask_url(place.storage),
        "metric": plan.sweep.metric,
        "direction": plan.direction,
        "sampler": plan.sweep.sampler,
        "pruner": plan.sweep.pruner,
        "trials_requested": plan.trials,
        "counts": {s: states.count(s) for s in dict.fromkeys(states)},
        "best": best,
        "best_yaml": None,
        "trials": rows,
    }
    folder = place.sweep_dir
    try:
        if best is not None:
            cfg = plan.config(best["params"], best["settings"])  # as the trial ran: its threads too
            path = folder / "best.yaml"
            header = (
                f"# nntrain fit {path}\n"
                f"# The best trial of {folder}: trial {best['number']}, {plan.sweep.metric} {best['value']:.4f}\n"
            )
            path.write_text(header + to_yaml(cfg), encoding="utf-8")
            summary["best_yaml"] = str(path)
        (folder / "summary.json").write_text(jsonfile.dumps(summary, indent=2), encoding="utf-8")
        names = [p.name for p in plan.params]
        with open(folder / "trials.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["number", "state", plan.sweep.metric, *names, "epochs", "duration_s", "run_dir", "error"])
            for r in rows:
                values = [_csv(r["params"].get(n)) for n in names]
                writer.writerow([r["number"], r["state"], r["value"], *values, r["epochs"], r["duration_s"],
                                 r["run_dir"], r["error"]])
    except OSError as exc:
        raise RunError(f"cannot write the sweep's results into {folder}: {exc.strerror or exc}") from None
    return summary


def _csv(value: Any) -> Any:
    return value if isinstance(value, SCALARS) else value_label(value)


def trials_table(summary: dict[str, Any]) -> Any:
    """A rich table of the trials: params, metric, state, epochs and duration; the best one starred.

    Params are headed by their last key part where that is unambiguous (`lr` for optimizer.lr), and
    only their columns fold when the terminal is narrow.
    """
    from rich import box
    from rich.table import Table

    rows = summary["trials"]
    names = list(dict.fromkeys(n for r in rows for n in r["params"]))
    last = [n.rsplit(".", 1)[-1] for n in names]
    headers = [short if last.count(short) == 1 else n for n, short in zip(names, last)]
    best = summary["best"]["number"] if summary["best"] else None
    table = Table(
        title=f"sweep {summary['study']}: {summary['direction']} {summary['metric']}", title_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,  # room for the params in 80 columns
    )
    table.add_column("trial", justify="right", no_wrap=True)
    for header in headers:
        table.add_column(header, justify="right", overflow="fold")
    table.add_column(summary["metric"], justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        table.add_row(
            f"{'★ ' if r['number'] == best else ''}{r['number']}",
            *[format_value(r["params"][n]) if n in r["params"] else "" for n in names],
            value, r["state"], "" if r["epochs"] is None else str(r["epochs"]),
            "" if r["duration_s"] is None else f"{r['duration_s']:.1f}s",
            style="bold green" if r["number"] == best else None,
        )
    return table
