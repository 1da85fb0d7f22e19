"""The Optuna side of a sweep: storage, study, sampler, pruner, and a worker's loop.

Optuna coordinates the workers through the storage: each asks the study for its next trial, so
workers on one machine or on several share a sweep without a scheduler of nntrain's own.

A trial is run by one process at a time. Every running trial beats (Optuna's heartbeat) and
records its owner (host and pid): a trial whose owner is known dead (same host) is failed and queued
again at once, one whose heartbeat expired (another host, or no owner recorded) after the grace
period; until then the workers wait for it rather than start it a second time.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import random
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nntrain.errors import ConfigError, DataError, Interrupted, RunError
from nntrain.sweep import procs
from nntrain.sweep.plan import Plan, TrialFailed, format_value, run_trial

# Keys that may differ between the workers of one study (each machine has its own device and folders).
_LOCAL_KEYS = (("train", "device"), ("log",), ("sweep", "trials"))

HEARTBEAT_ENV = "NNTRAIN_SWEEP_HEARTBEAT"  # "INTERVAL[,GRACE]" in seconds; the study keeps its creator's
DEFAULT_HEARTBEAT = (60, 180)  # a trial whose process stopped beating 180 s ago is lost
OWNER_ATTR = "owner"  # user attr of a running trial: {"host", "pid", "number"}
SEED_ATTR = "sampler_seed"  # user attr: the seed of the sampler of the process that ran the trial
_CREATE_TRIES = 6  # storage and study creation, against processes creating them at the same moment

# What to pip install for a missing database driver module.
_DRIVER_PACKAGES = {
    "psycopg": "'nntrain[postgres]' (psycopg 3)",
    "psycopg2": "psycopg2-binary (or use postgresql+psycopg:// with pip install 'nntrain[postgres]')",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
}


def mask_url(url: str) -> str:
    """The URL without its password (for printing and for sweep.json)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def heartbeat() -> tuple[int, int]:
    """(interval, grace period) in seconds for a new study: $NNTRAIN_SWEEP_HEARTBEAT or 60,180."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return DEFAULT_HEARTBEAT
    parts = [p.strip() for p in text.split(",")]
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        interval = int(parts[0])
        grace = int(parts[1]) if len(parts) == 2 else 3 * interval
        if grace > interval:
            return interval, grace
    raise ConfigError(
        f"${HEARTBEAT_ENV}={text!r}: expected the seconds between a trial's heartbeats and optionally the "
        f"grace period after which a silent trial is lost, greater than the interval (e.g. 60,180)"
    )


def driver_url(url: str) -> str:
    """The URL SQLAlchemy is given: a plain postgresql:// names the installed driver.

    SQLAlchemy maps postgresql:// to psycopg2 (2.0) or psycopg 3 (2.1); whichever is installed is
    used here (psycopg 3 first, the `nntrain[postgres]` extra), so both versions behave alike.
    """
    m = re.match(r"^postgres(?:ql)?://", url)
    if m is None:
        return url
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{url[m.end():]}"
    raise ConfigError(
        f"--storage {mask_url(url)}: no PostgreSQL driver is installed; install psycopg 3 with "
        f"pip install 'nntrain[postgres]' (or pip install 'psycopg[binary]')"
    )


def _missing_module(exc: BaseException) -> str | None:
    while exc is not None:
        if isinstance(exc, ImportError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def _db_message(exc: BaseException) -> str:
    """The database's own message (psycopg's, sqlite's) for an exception from SQLAlchemy or Optuna."""
    import sqlalchemy.exc

    seen = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.orig is not None:
            text = str(seen.orig).strip()
            break
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    else:
        text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _concurrent(exc: BaseException) -> bool:
    """Whether `exc` may come from another process creating the same tables or study at this moment.

    PostgreSQL reports two concurrent CREATE TABLE as a UniqueViolation on pg_type (Optuna's issue
    1092), or a table created meanwhile as DuplicateTable; a deadlock or serialization failure is
    SQLSTATE class 40. Trying again finds the tables and the study made.
    """
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
            return True
        if isinstance(seen, sqlalchemy.exc.OperationalError):
            code = getattr(seen.orig, "sqlstate", None) or getattr(seen.orig, "pgcode", None) or ""
            return str(code).startswith("40") or "locked" in str(seen.orig)
        seen = seen.__cause__ or seen.__context__
    return False


def _creating(what: Any, *args: Any, **kwargs: Any) -> Any:
    """`what(*args, **kwargs)`, tried again (with backoff) while another process wins a creation race."""
    for attempt in range(_CREATE_TRIES):
        try:
            return what(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted by _concurrent
            if attempt == _CREATE_TRIES - 1 or not _concurrent(exc):
                raise
            time.sleep(0.1 * 2**attempt + random.random() * 0.1)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A failing database becomes a RunError (exit 1) with the database's message."""
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise _damaged(url, exc) or RunError(f"study storage {mask_url(url)}: {_db_message(exc)}") from None


# sqlite's words for a file that is not (or no longer) a readable database.
_DAMAGE = ("malformed", "not a database", "file is encrypted", "unable to open database file", "no such table",
           "no such column", "disk i/o error")


def _damaged(url: str, exc: BaseException) -> DataError | None:
    """A DataError naming the file when `exc` says the SQLite file of `url` is damaged; else None."""
    message = _db_message(exc)
    if not url.startswith("sqlite:///") or not any(word in message.lower() for word in _DAMAGE):
        return None
    path = Path(url[len("sqlite:///"):])
    return DataError(
        f"{path}: the study database is damaged or unreadable ({message}); the trials recorded there can't "
        f"be read: restore the file from a copy, or start a new sweep"
    )


def _retry(max_retry: int | None) -> Any:
    """Optuna's callback that queues a failed trial again with the same params (renamed in Optuna 4.9)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    return (cls or optuna.storages.RetryFailedTrialCallback)(max_retry=max_retry)


def _storage(url: str, beat: tuple[int, int], label: str | None = None) -> Any:
    """Optuna's RDB storage with heartbeats; creates its tables, tolerating a concurrent creator.
    `label` names the storage in messages (default `--storage URL`, the option that gave it)."""
    label = label or f"--storage {mask_url(url)}"
    import inspect

    import optuna
    import sqlalchemy.exc

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # local workers wait for the file lock
    # A process that dies stops beating; after the grace period its trial is failed and queued once
    # more by whichever worker looks next (at once when its pid is known dead on this host).
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    kwargs.update({"heartbeat_interval": beat[0], "grace_period": beat[1], name: _retry(max_retry=1)})
    try:
        return _creating(optuna.storages.RDBStorage, driver_url(url), **kwargs)
    except ImportError as exc:
        module = _missing_module(exc)
        if module is None:
            raise ConfigError(f"{label}: the database driver is not installed ({exc})") from None
        package = _DRIVER_PACKAGES.get(module, module)
        raise ConfigError(
            f"{label}: the database driver module '{module}' is not installed; "
            f"install it with pip install {package}"
        ) from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{label}: not a database URL Optuna can use ({first})") from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        damaged = _damaged(url, exc)
        if damaged is not None:
            raise damaged from None
        raise RunError(f"{label}: cannot open the study storage: {_db_message(exc)}") from None


def _fingerprint(plan: Plan) -> dict[str, Any]:
    """What every worker of a study must agree on: the config, less device, log folders and trial count."""
    raw = json.loads(json.dumps({**plan.raw, "sweep": plan.sweep.model_dump(mode="json")}))
    for key in _LOCAL_KEYS:
        node = raw
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key[-1], None)
    return raw


def _sampler(plan: Plan, seed: int) -> Any:
    import optuna

    if plan.sweep.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in plan.params}, seed=seed)
    if plan.sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE samples at random for its first trials: a third of them, 3 to 10.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, plan.trials // 3)))


def _pruner(plan: Plan) -> Any:
    import optuna

    first = plan.sweep.min_epochs
    if plan.sweep.pruner == "none" or plan.max_epochs <= first:
        return optuna.pruners.NopPruner()
    if plan.sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=first - 1)
    return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=plan.max_epochs, reduction_factor=3)


def sampler_seed(plan: Plan, worker: int, trials: int, shared: bool) -> int:
    """The seed of this process's sampler.

    The sweep's folder's own study is run by one process or by `--workers N` (worker 0..N-1), so
    `seed + 7919*worker + trials so far` is distinct per process and a one-process sweep draws the
    same trials every time. A study in a storage of its own (`--storage`) may be shared by processes
    started alike on several machines, all worker 0 with as many trials seen: each mixes in random
    bits of its own. The seed is recorded with every trial (user attr `sampler_seed`).
    """
    seed = (plan.sweep.seed if plan.sweep.seed is not None else plan.cfg.seed) + 7919 * worker + trials
    if shared:
        seed += int.from_bytes(os.urandom(4), "little")
    return seed % 2**32


def open_study(plan: Plan, url: str, name: str, shared: bool, worker: int = 0, resumed: bool = False) -> Any:
    """Creates the study, or joins one made from the same config (any other is an error).

    `shared`: the storage came from --storage (else it is the sweep folder's own study.db);
    `resumed`: the study must exist already (--resume of a sweep folder).
    Sets `plan.sampler_seed`. Raises RunError with the database's message when the storage fails,
    DataError when the sweep's SQLite file is damaged.
    """
    import optuna

    from nntrain.run_dir import config_diff

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by _trial_line
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    beat = heartbeat()
    local = None if shared or not url.startswith("sqlite:///") else Path(url[len("sqlite:///"):])
    storage = _storage(url, beat, None if local is None else f"{local} (the sweep's study database)")
    with storage_errors(url):
        if resumed:
            names = [s.study_name for s in storage.get_all_studies()]
            if name not in names:
                where = local or mask_url(url)
                raise DataError(
                    f"{where} holds no study '{name}' (it holds: {', '.join(names) or 'none'}); "
                    f"sweep.json names the study to resume: a damaged or replaced file? "
                    f"Restore it, or start a new sweep"
                )
        study = _creating(
            optuna.create_study, storage=storage, study_name=name, direction=plan.direction, load_if_exists=True
        )
        mine, stored = _fingerprint(plan), study.user_attrs.get("nntrain_config")
        if stored is None:
            # Two processes may both find none: each sets its own, and the check below reads the winner.
            _creating(study.set_user_attr, "nntrain_config", mine)
            stored = storage.get_study_user_attrs(study._study_id).get("nntrain_config", mine)
        if stored != mine:
            diff = config_diff(stored, mine)
            raise ConfigError(
                f"study '{name}' in {mask_url(url)} was started with another config:\n  " + "\n  ".join(diff)
                + "\nuse the same config and --set options, or a new study (--study NAME)"
            )
        # Every process of a study judges heartbeats alike: by the interval and grace of its creator.
        kept = study.user_attrs.get("nntrain_heartbeat")
        if kept is None:
            _creating(study.set_user_attr, "nntrain_heartbeat", list(beat))
            kept = storage.get_study_user_attrs(study._study_id).get("nntrain_heartbeat", list(beat))
        storage.heartbeat_interval, storage.grace_period = int(kept[0]), int(kept[1])
        plan.sampler_seed = sampler_seed(plan, worker, len(study.trials), shared)
        return optuna.load_study(
            study_name=name, storage=storage, sampler=_sampler(plan, plan.sampler_seed), pruner=_pruner(plan)
        )


def count_trials(study: Any) -> tuple[int, int]:
    """(finished trials, running trials): COMPLETE, PRUNED and failed-on-their-own trials are finished.

    A trial cut short by a signal or a lost worker is not: it is run again.
    """
    from optuna.trial import TrialState

    done = running = 0
    for t in study.get_trials(deepcopy=False):
        failed_alone = t.state == TrialState.FAIL and "error" in t.user_attrs  # its own error: not run again
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or failed_alone:
            done += 1
        elif t.state == TrialState.RUNNING:
            running += 1
    return done, running


def _fail(study: Any, trial: Any, requeue: int | None) -> bool:
    """Fails a RUNNING trial and queues it again (at most `requeue` times); False if another process did."""
    import optuna
    from optuna.trial import TrialState

    try:
        if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    _retry(max_retry=requeue)(study, copy.deepcopy(study._storage.get_trial(trial._trial_id)))
    return True


def owner_dead(trial: Any) -> bool:
    """Whether the process that runs `trial` is known dead: it recorded itself, on this host."""
    owner = trial.user_attrs.get(OWNER_ATTR)
    if not isinstance(owner, dict) or owner.get("number") != trial.number:  # none, or a queued copy's
        return False
    return owner.get("host") == procs.host() and not procs.alive(int(owner.get("pid", 0)))


def fail_lost_trials(study: Any) -> int:
    """Fails and queues again the RUNNING trials that no process runs any more; returns how many.

    Lost are the trials whose owner process is dead (on this host) and those whose heartbeat
    stopped for the grace period (Optuna's check, which also queues them again).
    """
    import optuna
    from optuna.trial import TrialState

    lost = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_dead(t) and _fail(study, t, requeue=1):
            lost += 1
    before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    optuna.storages.fail_stale_trials(study)
    return lost + len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - before


def requeue_cut_short(study: Any, local: bool, sweep_dir: Path) -> int:
    """On --resume: queues again every trial a signal or a killed sweep cut short; returns how many.

    With the sweep's own SQLite file, no process of the sweep is left (the caller checked), so its
    RUNNING trials are lost, and every trial failed without an error of its own was cut short. In a
    shared storage the RUNNING trials may be another machine's: only those whose process is dead or
    whose heartbeat expired are lost (and queued again by whoever fails them, once); of the failed
    ones, the trials this sweep folder's processes stopped on a signal.
    """
    from optuna.trial import TrialState

    requeued = 0
    if local:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            requeued += _fail(study, t, requeue=None)
    else:
        requeued += fail_lost_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    for t in trials:
        if t.state != TrialState.FAIL or "error" in t.user_attrs or t.number in retried:
            continue
        if local or (t.user_attrs.get("interrupted") == t.number and _in(t.user_attrs.get("run_dir"), sweep_dir)):
            _retry(max_retry=None)(study, t)
            requeued += 1
    return requeued


def _in(run_dir: str | None, sweep_dir: Path) -> bool:
    return run_dir is not None and Path(run_dir).parent.resolve() == Path(sweep_dir).resolve()


def work(plan: Plan, study: Any, sweep_dir: Path, console: Any = None) -> None:
    """One worker: runs trials until the study has `plan.trials` finished (others may run some).

    While the trials left are running in other processes it waits for them: each either finishes
    or is lost (its process dead, its heartbeat expired) and is then run again here.

    Raises:
        Interrupted: SIGINT or SIGTERM stopped it; a trial it cut short is marked to be run again.
    """
    import optuna

    def objective(trial: Any) -> float:
        try:
            with procs.STOP.trial_may_stop():
                return run_trial(plan, trial, sweep_dir, console)
        except (Interrupted, KeyboardInterrupt):
            trial.set_user_attr("interrupted", trial.number)  # cut short by a signal: --resume runs it again
            raise

    def report(study: Any, trial: Any) -> None:
        if console is not None:
            console.print(_trial_line(plan, trial), highlight=False, markup=False)

    # A signal is raised inside a trial or between trials, never while optuna records one (procs.StopGate).
    with procs.STOP.installed():
        poll = 1.0  # seconds between looks at the trials that other processes run
        said = False
        while True:
            procs.STOP.check()  # a signal between trials
            fail_lost_trials(study)
            done, running = count_trials(study)
            if done >= plan.trials:
                return
            if done + running >= plan.trials:
                if console is not None and not said:
                    console.print(
                        f"waiting for {running} trial(s) running in other processes (run here again if they are lost)",
                        highlight=False,
                    )
                    said = True
                time.sleep(poll)
                continue
            said = False
            try:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[report])
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
                # This process stalled past the grace period (suspended, say) and another failed its trial.
                if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
                    raise
                if console is not None:
                    console.print(f"a trial of this process was declared lost meanwhile; its result is dropped ({exc})",
                                  highlight=False, markup=False)


def _trial_line(plan: Plan, t: Any) -> str:
    """`trial 3  complete  val/acc 0.9712  optimizer.lr=0.0012 model.hidden=[128]  14.2s`."""
    state = t.state.name.lower()
    if t.intermediate_values and t.state.name == "PRUNED":
        step = max(t.intermediate_values)
        result = f"{plan.sweep.metric} {t.intermediate_values[step]:.4f} at epoch {step}"
    elif t.value is not None:
        result = f"{plan.sweep.metric} {t.value:.4f}"
    else:
        result = t.user_attrs.get("error", "").splitlines()[0] if t.user_attrs.get("error") else ""
    params = " ".join(f"{k}={format_value(v)}" for k, v in plan.decode(t.params).items())
    duration = f"{t.duration.total_seconds():.1f}s" if t.duration else ""
    return f"trial {t.number:>3}  {state:<8}  {result}  {params}  {duration}"
