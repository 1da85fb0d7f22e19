"""`nntrain lr-find CONFIG`: the LR range test, its curve and a suggested LR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nntrain.cli.common import ConfigArg, DebugOpt, SetOpt, console, load, run


def command(
    config: ConfigArg,
    set_: SetOpt = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="First LR of the sweep.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Last LR of the sweep.")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer updates in the sweep.")] = 100,
    out: Annotated[Path | None, typer.Option(
        "--out", help="CSV of (lr, loss, smoothed); a PNG goes next to it when matplotlib is installed "
                      "(an existing folder: lr_find.csv in it; default: <log.dir>/<name>/lr_find.csv)."
    )] = None,
    debug: DebugOpt = False,
) -> None:
    """LR range test: raise the LR exponentially batch by batch; plot the loss and suggest an LR."""

    def work() -> None:
        from nntrain.build import build_parts, build_trainer
        from nntrain.lr_find import range_test, save_range_test
        from nntrain.plots import sketch

        cfg = load(config, set_)
        path = _out_path(out, cfg)  # before the work: a path that can't be written is an error now
        console.print(
            f"[bold]nntrain lr-find[/] {config}  ({cfg.optimizer.name}, {steps} updates, "
            f"lr {start_lr:g} -> {end_lr:g})", highlight=False,
        )
        # Without the config's LR schedule: the sweep sets every LR itself.
        parts = build_parts(cfg.model_copy(update={"scheduler": None}))
        result = range_test(build_trainer(parts), start_lr, end_lr, steps)
        console.print(sketch(result.lrs, result.smoothed, mark=result.suggestion), highlight=False, markup=False)
        console.print(
            f"smoothed training loss against the LR (log scale); | marks the suggestion. "
            f"{len(result.lrs)} updates" + (f"; stopped: {result.stop_reason}" if result.stop_reason else ""),
            highlight=False,
        )
        paths = save_range_test(result, path)
        console.print(f"curve written to {', '.join(map(str, paths))}", highlight=False)
        console.print(
            f"suggested lr [bold]{result.suggestion:.2g}[/] (steepest descent of the smoothed loss); "
            f"lowest loss at {result.min_loss_lr:.2g} (a tenth of it: {result.min_loss_lr / 10:.2g}). "
            f"Try: --set optimizer.lr={result.suggestion:.2g}", highlight=False,
        )

    run(debug, work)


def _out_path(out: Path | None, cfg: Any) -> Path:
    """Where the curve goes: `--out` (an existing folder: lr_find.csv in it), else
    <log.dir>/<name>/lr_find.csv; missing folders are made, a path that can't be is refused now."""
    from nntrain.run_dir import check_output_path

    if out is None:
        return check_output_path(Path(cfg.log.dir) / cfg.name / "lr_find.csv", "log.dir", make_folders=True)
    if out.is_dir():
        out = out / "lr_find.csv"
    return check_output_path(out, "--out", make_folders=True)
