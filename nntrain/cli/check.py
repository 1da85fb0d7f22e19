"""`nntrain check CONFIG`: validate, build everything, run one batch, print the model summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nntrain.cli.common import ConfigArg, DebugOpt, SetOpt, console, load, run


def command(
    config: ConfigArg,
    set_: SetOpt = None,
    plot_lr: Annotated[bool, typer.Option(
        "--plot-lr", help="Also preview the LR of every optimizer update of the run (table, and a PNG or CSV)."
    )] = False,
    plot_out: Annotated[Path | None, typer.Option(
        "--plot-out", help="Where --plot-lr writes: .png (needs matplotlib) or .csv "
                           "(default: <log.dir>/<name>/lr_schedule.png, or .csv without matplotlib)."
    )] = None,
    debug: DebugOpt = False,
) -> None:
    """Validate a config, build everything, run one training batch and print the model summary."""

    def work() -> None:
        from nntrain.fit import check as check_run

        cfg = load(config, set_)
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

    run(debug, work)


def _print_schedule(cfg: Any, steps_per_epoch: int, out: Path | None) -> None:
    """`check --plot-lr`: the LR per optimizer update, every Nth update plus epoch starts."""
    from nntrain.plots import schedule_preview

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
