"""`nntrain sweep CONFIG`: an Optuna search over the config's `sweep:` section."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from nntrain.cli.common import ConfigArg, DebugOpt, SetOpt, argv_without, console, run


def command(
    config: ConfigArg,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue a sweep: its folder runs/<name>/sweep-<stamp>; finished trials are kept.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", envvar="NNTRAIN_SWEEP_STORAGE", show_default="a SQLite file in the sweep folder",
        help="Optuna RDB URL (e.g. postgresql://user@host/db): workers on several machines share its study.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", show_default="the config's name", help="Study name in the storage.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Local worker processes, each asking the study for its next trial.")] = 1,
    worker: Annotated[int | None, typer.Option("--worker", hidden=True)] = None,
    debug: DebugOpt = False,
) -> None:
    """Search hyperparameters with Optuna over the keys of the config's sweep: section."""

    def work() -> None:
        from nntrain.errors import Interrupted, RunError
        from nntrain.sweep import format_value, run_sweep, trials_table

        try:
            summary = run_sweep(config, set_ or [], resume, storage, study, workers, worker, console)
        except Interrupted as exc:
            if worker is None:  # the process the user started tells how to resume
                args = argv_without("--resume")
                command = " ".join(shlex.quote(a) for a in ["nntrain", *args, "--resume", exc.run_dir])
                exc.message = f"{exc.message}\nresume with: {command}"
            raise
        if summary is None:  # a --worker process
            return
        console.print(trials_table(summary))
        best = summary["best"]
        if best is None:
            raise RunError(f"no trial completed; see {summary['sweep_dir']}/trials.csv")
        params = "  ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
        line = f"best: trial {best['number']}, {summary['metric']} {best['value']:.4f}  {params}"
        console.print(line, highlight=False)
        console.print(f"reproduce it: nntrain fit {summary['best_yaml']}", highlight=False)
        console.print(f"compare the trials: tensorboard --logdir {summary['sweep_dir']}", highlight=False)

    run(debug, work)
