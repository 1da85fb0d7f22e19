"""The `nntrain` command line: parses arguments, runs a command, turns NntrainError into exit codes.

Heavy imports (torch) happen inside the commands so that `nntrain --help` stays fast.
"""

from __future__ import annotations

import enum
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train PyTorch models from YAML experiment files.",
)
console = Console()
err_console = Console(stderr=True, emoji=False)  # verbatim: `a.npz:x:` stays text, not an emoji

ConfigArg = Annotated[Path, typer.Argument(help="YAML experiment file.", show_default=False)]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Override a key: --set optimizer.lr=0.01 (YAML value; repeatable)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of errors.")]


class Split(str, enum.Enum):
    test = "test"
    val = "val"
    train = "train"


def _run(debug: bool, work: Callable[[], Any]) -> Any:
    """Runs `work`; an NntrainError becomes one message on stderr and its exit code, a
    ConfigWarning one `warning:` line."""
    from nntrain.errors import ConfigWarning, NntrainError

    default_show = warnings.showwarning

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ConfigWarning):
            err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            default_show(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        return work()
    except NntrainError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = default_show


def _argv_without(option: str) -> list[str]:
    """This process's arguments, minus `option` and its value (to print a resume command)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            args.append(arg)
    return args


def _load(config: Path, overrides: Optional[List[str]], name: Optional[str] = None):
    from nntrain.config import load_config

    overrides = list(overrides or [])
    if name is not None:
        overrides.append(f"name={name}")
    return load_config(config, overrides)


@app.command()
def fit(
    config: ConfigArg,
    set_: SetOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (default: the config's name).")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Continue a run: its folder (uses last.pt) or a checkpoint file."),
    ] = None,
    allow_config_change: Annotated[
        bool, typer.Option("--allow-config-change", help="Resume even if the config differs from the run's.")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Data-parallel processes on this machine (runs torchrun).")
    ] = 1,
    debug: DebugOpt = False,
) -> None:
    """Train the model a config describes, into runs/<name>/<stamp>/."""
    if os.environ.get("RANK", "0") != "0":
        console.quiet = True  # under torchrun, rank 0 speaks for the job

    def work() -> None:
        from nntrain import distributed
        from nntrain.errors import Interrupted
        from nntrain.experiment import fit as fit_run

        if nproc > 1 and not distributed.launched():
            raise typer.Exit(distributed.launch(nproc, _argv_without("--nproc")))

        cfg = _load(config, set_, name)
        action = f"resuming {resume}" if resume else f"{cfg.model.name} on {cfg.data.dataset.name}"
        console.print(f"[bold]nntrain fit[/] {config}  ({action})")
        try:
            summary = fit_run(cfg, console, resume=resume, allow_config_change=allow_config_change)
            distributed.shutdown()
        except Interrupted as exc:
            args = [a for a in _argv_without("--resume")]
            command = " ".join(shlex.quote(a) for a in ["nntrain", *args, "--resume", exc.run_dir])
            exc.args = (f"{exc}\nresume with: {command}",)
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

    _run(debug, work)


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file, e.g. runs/x/<stamp>/checkpoints/best.pt.")],
    split: Annotated[Split, typer.Option("--split", help="Which split to evaluate.")] = Split.test,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the metrics JSON.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Evaluate a checkpoint on a split; print and save the metrics."""

    def work() -> None:
        from nntrain.evaluate import evaluate_checkpoint

        metrics, path = evaluate_checkpoint(checkpoint, split.value, set_ or [], out)
        console.print(f"[bold]nntrain eval[/] {checkpoint} on the {split.value} split")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}")
        console.print(table)
        console.print(f"metrics written to {path}")

    _run(debug, work)


@app.command()
def check(
    config: ConfigArg,
    set_: SetOpt = None,
    plot_lr: Annotated[bool, typer.Option(
        "--plot-lr", help="Also preview the LR of every optimizer update of the run (table, and a PNG or CSV)."
    )] = False,
    plot_out: Annotated[Optional[Path], typer.Option(
        "--plot-out", help="Where --plot-lr writes: .png (needs matplotlib) or .csv "
                           "(default: <log.dir>/<name>/lr_schedule.png, or .csv without matplotlib)."
    )] = None,
    debug: DebugOpt = False,
) -> None:
    """Validate a config, build everything, run one training batch and print the model summary."""

    def work() -> None:
        from nntrain.experiment import check as check_run

        cfg = _load(config, set_)
        parts, rows, metrics = check_run(cfg)
        table = Table(title=f"{cfg.model.name} on {cfg.data.dataset.name}")
        for col in ("layer", "type", "output shape", "params"):
            table.add_column(col, justify="right" if col == "params" else "left")
        for layer, kind, shape, params in rows:
            table.add_row(layer, kind, shape, f"{params:,}")
        total = sum(p.numel() for p in parts.model.parameters())
        trainable = sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
        console.print(table)
        info = parts.data.info
        console.print(
            f"total params {total:,} (trainable {trainable:,})  |  inputs {tuple(info.input_shape)}  "
            f"train/val/test {len(parts.data.train[0])}/{len(parts.data.val[0])}/"
            f"{0 if parts.data.test is None else len(parts.data.test[0])}  |  device {parts.device}"
        )
        console.print(f"one training step: train/loss {metrics['train/loss']:.4f}  [green]config OK[/]")
        if plot_lr or plot_out is not None:
            _print_schedule(cfg, parts.updates_per_epoch, plot_out)

    _run(debug, work)


def _print_schedule(cfg: Any, steps_per_epoch: int, out: Optional[Path]) -> None:
    """`check --plot-lr`: the LR per optimizer update, every Nth update plus epoch starts."""
    from nntrain.lr_find import schedule_preview

    preview = schedule_preview(cfg, steps_per_epoch, out)
    cycled = len({r[3] for r in preview.rows}) > 1
    table = Table(title=f"LR schedule: {cfg.scheduler.name if cfg.scheduler else 'constant'}", title_justify="left")
    for col in ("update", "epoch", "lr", *(["momentum"] if cycled else []), ""):
        table.add_column(col, justify="left" if not col else "right")
    for update, epoch, lr, momentum in preview.rows:
        bar = "█" * round(20 * lr / preview.max_lr) if preview.max_lr > 0 else ""
        table.add_row(str(update), str(epoch), f"{lr:.4g}", *([f"{momentum:.3f}"] if cycled else []), bar)
    console.print(table)
    for note in preview.notes:
        console.print(f"  {note}", highlight=False)
    console.print(f"every update's LR written to {preview.path}", highlight=False)


@app.command("lr-find")
def lr_find(
    config: ConfigArg,
    set_: SetOpt = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="First LR of the sweep.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Last LR of the sweep.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer updates in the sweep.")] = 100,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="CSV of (lr, loss, smoothed); a PNG goes next to it when matplotlib is installed "
                      "(default: <log.dir>/<name>/lr_find.csv)."
    )] = None,
    debug: DebugOpt = False,
) -> None:
    """LR range test: raise the LR exponentially batch by batch; plot the loss and suggest an LR."""

    def work() -> None:
        from nntrain.lr_find import find_lr, save_range_test, sketch

        cfg = _load(config, set_)
        console.print(
            f"[bold]nntrain lr-find[/] {config}  ({cfg.optimizer.name}, {steps} updates, "
            f"lr {start_lr:g} -> {end_lr:g})", highlight=False,
        )
        result = find_lr(cfg, start_lr, end_lr, steps)
        console.print(sketch(result.lrs, result.smoothed, mark=result.suggestion), highlight=False, markup=False)
        console.print(
            f"smoothed training loss against the LR (log scale); | marks the suggestion. "
            f"{len(result.lrs)} updates" + (f"; stopped: {result.stop_reason}" if result.stop_reason else ""),
            highlight=False,
        )
        paths = save_range_test(result, out or Path(cfg.log.dir) / cfg.name / "lr_find.csv")
        console.print(f"curve written to {', '.join(map(str, paths))}", highlight=False)
        console.print(
            f"suggested lr [bold]{result.suggestion:.2g}[/] (steepest descent of the smoothed loss); "
            f"lowest loss at {result.min_loss_lr:.2g} (a tenth of it: {result.min_loss_lr / 10:.2g}). "
            f"Try: --set optimizer.lr={result.suggestion:.2g}", highlight=False,
        )

    _run(debug, work)


@app.command()
def sweep(
    config: ConfigArg,
    set_: SetOpt = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue a sweep: its folder runs/<name>/sweep-<stamp>; finished trials are kept.")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", envvar="NNTRAIN_SWEEP_STORAGE", show_default="a SQLite file in the sweep folder",
        help="Optuna RDB URL (e.g. postgresql://user@host/db): workers on several machines share its study.")] = None,
    study: Annotated[Optional[str], typer.Option(
        "--study", show_default="the config's name", help="Study name in the storage.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Local worker processes, each asking the study for its next trial.")] = 1,
    worker: Annotated[Optional[int], typer.Option("--worker", hidden=True)] = None,
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
                args = _argv_without("--resume")
                command = " ".join(shlex.quote(a) for a in ["nntrain", *args, "--resume", exc.run_dir])
                exc.args = (f"{exc}\nresume with: {command}",)
            raise
        if summary is None:  # a --worker process
            return
        console.print(trials_table(summary))
        best = summary["best"]
        if best is None:
            raise RunError(f"no trial completed; see {summary['sweep_dir']}/trials.csv")
        params = "  ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
        console.print(f"best: trial {best['number']}, {summary['metric']} {best['value']:.4f}  {params}", highlight=False)
        console.print(f"reproduce it: nntrain fit {summary['best_yaml']}", highlight=False)
        console.print(f"compare the trials: tensorboard --logdir {summary['sweep_dir']}", highlight=False)

    _run(debug, work)


@app.command("list")
def list_(
    kind: Annotated[Optional[str], typer.Argument(help="models, datasets, losses, optimizers, schedulers, "
                                                      "augmentations, activations, inits or normalizers.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Show what the registries hold, with each entry's parameters and defaults."""

    def work() -> None:
        import difflib
        import inspect

        from nntrain.components import INFERRED, REGISTRIES
        from nntrain.errors import ConfigError

        if kind is not None and kind not in REGISTRIES:
            close = difflib.get_close_matches(kind, list(REGISTRIES), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown kind '{kind}'{hint} (choices: {', '.join(REGISTRIES)})")
        for key in [kind] if kind else list(REGISTRIES):
            registry = REGISTRIES[key]
            table = Table(title=key, title_justify="left")
            table.add_column("name", style="bold")
            table.add_column("parameters (defaults)")
            table.add_column("description")
            for entry in registry.names():
                params = []
                for pname, p in registry.parameters(entry).items():
                    if key == "models" and pname in INFERRED:
                        params.append(f"{pname}=<from data>")
                    elif p.default is inspect.Parameter.empty:
                        params.append(f"{pname} (required)")
                    else:
                        params.append(f"{pname}={p.default!r}")
                table.add_row(entry, ", ".join(params), registry.note(entry))
            console.print(table)

    _run(debug, work)


def main() -> None:
    app(prog_name="nntrain")


if __name__ == "__main__":
    sys.exit(main())
