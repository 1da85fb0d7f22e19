"""The Optuna side of a sweep: storage, study, sampler, pruner, and a worker's loop.

Optuna coordinates the workers through the storage: each asks the study for its next trial, so
workers on one machine or on several share a sweep without a scheduler of nntrain's own.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from nntrain.errors import ConfigError
from nntrain.sweep.plan import Plan, TrialFailed, format_value, run_trial

# Keys that may differ between the workers of one study (each machine has its own device and folders).
_LOCAL_KEYS = (("train", "device"), ("log",), ("sweep", "trials"))


def mask_url(url: str) -> str:
    """The URL without its password (for printing and for sweep.json)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _retry(max_retry: Optional[int]) -> Any:
    """Optuna's callback that queues a failed trial again with the same params (renamed in Optuna 4.9)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    return (cls or optuna.storages.RetryFailedTrialCallback)(max_retry=max_retry)


def _storage(url: str, shared: bool) -> Any:
    import inspect

    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # local workers wait for the file lock
    if shared:
        # A worker that dies (a machine lost) stops beating; after the grace period its trial is
        # failed and queued once more by whichever worker asks next.
        params = inspect.signature(optuna.storages.RDBStorage).parameters
        name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        kwargs.update({"heartbeat_interval": 60, "grace_period": 180, name: _retry(max_retry=1)})
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as exc:
        raise ConfigError(f"--storage {mask_url(url)}: the database driver is not installed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's errors for bad URLs and unreachable servers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {mask_url(url)}: cannot open the study storage ({first})") from None


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


def open_study(plan: Plan, url: str, name: str, shared: bool, worker: int = 0) -> Any:
    """Creates the study, or joins one made from the same config (any other is an error)."""
    import optuna

    from nntrain.experiment import config_diff

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by _trial_line
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = _storage(url, shared)
    study = optuna.create_study(storage=storage, study_name=name, direction=plan.direction, load_if_exists=True)
    mine, stored = _fingerprint(plan), study.user_attrs.get("nntrain_config")
    if stored is None:
        study.set_user_attr("nntrain_config", mine)
    elif stored != mine:
        diff = config_diff(stored, mine)
        raise ConfigError(
            f"study '{name}' in {mask_url(url)} was started with another config:\n  " + "\n  ".join(diff)
            + "\nuse the same config and --set options, or a new study (--study NAME)"
        )
    # A different seed per worker and per start, so no two draw the same random points.
    seed = (plan.sweep.seed if plan.sweep.seed is not None else plan.cfg.seed) + 7919 * worker + len(study.trials)
    return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(plan, seed), pruner=_pruner(plan))


def count_trials(study: Any) -> tuple[int, int]:
    """(finished trials, running trials): COMPLETE, PRUNED and failed-on-their-own trials are finished.

    A trial cut short by a signal or a lost worker is not: it is run again.
    """
    from optuna.trial import TrialState

    done = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs):
            done += 1
        elif t.state == TrialState.RUNNING:
            running += 1
    return done, running


def requeue_cut_short(study: Any, local: bool) -> int:
    """On --resume: queues again every trial a signal or a killed sweep cut short; returns how many.

    With the sweep's own SQLite file, trials still RUNNING belong to the dead sweep and fail first;
    in a shared storage they may be another machine's, and the heartbeat deals with them.
    """
    from optuna.trial import TrialState

    if local:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    requeued = 0
    for t in trials:
        if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried:
            _retry(max_retry=None)(study, t)
            requeued += 1
    return requeued


def work(plan: Plan, study: Any, sweep_dir: Path, console: Any = None) -> None:
    """One worker: runs trials until the study has `plan.trials` finished (others may run some)."""
    def objective(trial: Any) -> float:
        return run_trial(plan, trial, sweep_dir, console)

    def report(study: Any, trial: Any) -> None:
        if console is not None:
            console.print(_trial_line(plan, trial), highlight=False, markup=False)

    while True:
        done, running = count_trials(study)
        if done + running >= plan.trials:
            return
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[report])


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
