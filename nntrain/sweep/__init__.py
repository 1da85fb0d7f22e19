"""`nntrain sweep`: hyperparameter search with Optuna over the keys a config's `sweep:` section names.

Each trial is a normal run in `<log.dir>/<name>/sweep-<stamp>/trial-<n>/` that reports the sweep's
metric after every epoch, so the pruner can stop a poor trial early. Optuna does the search and the
coordination: the study lives in an RDB storage (a SQLite file in the sweep folder by default) and
every worker, local or on another machine, asks it for its next trial.

plan.py: the searched keys and each trial's config; study.py: Optuna's storage, sampler, pruner and
a worker's loop; run.py: the command (sweep folder, resume, worker processes, results).
"""

from nntrain.sweep.plan import Plan, TrialReporter, format_value, load_plan, run_trial
from nntrain.sweep.run import run_sweep, summarize, trials_table

__all__ = ["Plan", "TrialReporter", "format_value", "load_plan", "run_sweep", "run_trial", "summarize", "trials_table"]
