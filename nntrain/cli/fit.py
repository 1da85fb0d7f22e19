"""`nntrain fit CONFIG`: train into a run folder (or `--nproc N` data-parallel processes)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nntrain.cli.common import ConfigArg, DebugOpt, SetOpt, argv_without, console, err_console, load, run, warn


def command(
    config: ConfigArg,
    set_: SetOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: the config's name).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue a run: its folder (uses last.pt) or a checkpoint file."),
    ] = None,
    allow_config_change: Annotated[
        bool, typer.Option("--allow-config-change", help="Resume even if the config differs from the run's.")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Data-parallel processes on this machine (runs torchrun).")
    ] = 1,
    seeds: SeedsOpt = None,
    workers: WorkersOpt = 1,
    debug: DebugOpt = False,
) -> None:
    """Train the model a config describes, into runs/<name>/<stamp>/ (--seeds: one run per seed)."""
    if os.environ.get("RANK", "0") != "0":
        console.quiet = True  # under torchrun, rank 0 speaks for the job

    def work() -> None:
        from nntrain import distributed
        from nntrain.errors import ConfigError, Interrupted
        from nntrain.fit import fit as fit_run
        from nntrain.seeds import follow_parent

        cfg = load(config, set_, name)  # a bad config fails here, before any process starts
        if seeds is not None or workers != 1:  # issue 14: one run per seed
            if seeds is None:
                raise ConfigError("--workers runs seeds in parallel: give them with --seeds 0,1,2")
            return _fit_seeds(config, set_, name, seeds, workers, resume, nproc)
        follow_parent()  # a worker process of --seeds --workers dies with its parent

        if nproc > 1 and not distributed.launched():
            cpus = os.cpu_count() or 1
            if nproc > cpus:
                warn(f"--nproc {nproc}: this machine has {cpus} CPU cores; the processes will compete for them")
            code = distributed.launch(nproc, argv_without("--nproc"))
            if code in (130, 143):
                err_console.print("interrupted: the workers saved last.pt (see above for how to resume)")
            raise typer.Exit(code)

        action = f"resuming {resume}" if resume else f"{cfg.model.name} on {cfg.data.dataset.name}"
        console.print(f"[bold]nntrain fit[/] {config}  ({action})")
        try:
            summary = fit_run(cfg, console, resume=resume, allow_config_change=allow_config_change)
            distributed.shutdown()
        except Interrupted as exc:
            args = argv_without("--resume")
            world = distributed.world_size()
            if world > 1:  # the same number of processes: the run's batches and schedule depend on it
                args += ["--nproc", str(world)]
            command = " ".join(shlex.quote(a) for a in ["nntrain", *args, "--resume", exc.run_dir])
            exc.message = f"{exc.message}\nresume with: {command}"
            raise
        table = Table(title="summary", show_header=False)
        table.add_row("run folder", summary["run_dir"])
        table.add_row("epochs / steps", f"{summary['epochs']} / {summary['steps']}")
        if summary["found_lr"] is not None:
            table.add_row("optimizer.lr: auto", f"{summary['found_lr']:.3g} (LR range test)")
        if summary["stop_reason"]:
            table.add_row("stopped", summary["stop_reason"])
        best = summary["best"]
        if best["value"] is not None:
            table.add_row(f"best {best['monitor']}", f"{best['value']:.4f} (epoch {best['epoch']})")
        for key, value in {**summary["final"], **summary.get("test", {})}.items():
            table.add_row(key, f"{value:.4g}")
        table.add_row("time", f"{summary['time_s']:.1f}s ({summary['samples_per_s']:.0f} samples/s)")
        table.add_row(
            "step time", f"{summary['step_time_ms']:.2f} ms ({summary['data_wait_share']:.1%} waiting for data)"
        )
        console.print(table)
        console.print(f"run folder: {summary['run_dir']}", soft_wrap=True)

    run(debug, work)


# ---------------------------------------------------------------- --seeds / --workers (issue 14)
# `nntrain fit CONFIG --seeds 0,1,2 [--workers N]`: the config once per seed (nntrain/seeds.py),
# then a table of the seeds and their comparison (mean ± sd), as `nntrain compare` shows it.

SeedsOpt = Annotated[
    str | None,
    typer.Option("--seeds", help="Train once per seed: 0,1,2 or 0-4. The runs group in `nntrain compare`.",
                 show_default=False),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", help="With --seeds: seeds trained at once, in parallel processes.")
]


def _fit_seeds(config: Path, set_: list[str] | None, name: str | None, seeds_text: str, workers: int,
               resume: Path | None, nproc: int) -> None:
    from nntrain import seeds as many
    from nntrain.cli.compare import comparison_table
    from nntrain.compare import compare

    overrides = list(set_ or [])
    many.check_options(overrides, workers, resume, nproc)
    results = many.run_seeds(config, overrides, name, many.parse_seeds(seeds_text), workers, console)
    table = Table(title="seeds", title_justify="left")
    for column in ("seed", "status", "run folder"):
        table.add_column(column)
    for r in results:
        table.add_row(str(r.seed), r.status, "-" if r.run_dir is None else str(r.run_dir))
    console.print(table)
    done = [str(r.run_dir) for r in results if r.run_dir is not None and r.status == "finished"]
    if len(done) > 1:
        console.print(comparison_table(compare(done, "seed")))
        console.print("mean ± sample sd (ddof=1) over the finished seeds; again with: nntrain compare "
                      + " ".join(shlex.quote(d) for d in done), highlight=False, soft_wrap=True)
    many.raise_for(results, config, overrides, name)
