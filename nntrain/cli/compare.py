"""`nntrain compare RUN...`: runs side by side, the config keys that differ, their metrics; runs
that differ only by seed grouped as mean ± sd (n)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from nntrain import jsonfile
from nntrain.cli.common import DebugOpt, console, run


def command(
    runs: Annotated[
        list[str],
        typer.Argument(help="Run folders, folders of runs, sweep folders, or globs ('runs/opt_*/*').",
                       show_default=False),
    ],
    group_by: Annotated[
        str,
        typer.Option("--group-by", help="seed: runs whose configs differ only by seed form one column "
                                        "(mean ± sd); none: one column per run; auto: seed when some runs "
                                        "differ only by seed."),
    ] = "auto",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write the validation curves, overlaid, to OUT.png or OUT.html "
                                    "(groups: mean with a ±1 sd band).", show_default=False),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="The curve --plot draws (default: the monitored metric, e.g. val/acc).",
                     show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Compare runs: the config keys whose values differ, then final, best and test metrics.

    With groups, a cell is mean ± sd (n): sd is the sample standard deviation (ddof=1) over the n
    runs of the group that have the value.
    """

    def work() -> None:
        from nntrain.compare import compare
        from nntrain.compare import plot as draw

        comparison = compare(runs, group_by)
        if as_json:
            print(jsonfile.dumps(comparison.to_json(), indent=2))
        else:
            console.print(comparison_table(comparison))
            if comparison.grouped:
                console.print(
                    "a column groups the runs whose configs differ only by seed: mean ± sample sd (ddof=1) (n=runs); "
                    "one value where all n agree",
                    highlight=False, soft_wrap=True,
                )
        if plot is not None:
            key = metric or comparison.cols[0].runs[0].monitor or "val/loss"
            out = draw(comparison, key, plot)
            (console if not as_json else _stderr()).print(f"plot: {out}", highlight=False, soft_wrap=True)

    run(debug, work)


def _stderr():
    from nntrain.cli.common import err_console

    return err_console


def comparison_table(comparison) -> Table:
    """A rich table of a comparison: one column per run (or seed group), the differing config keys
    and the metrics as rows."""
    from nntrain.compare import DIGITS

    n = sum(len(c.runs) for c in comparison.cols)
    groups = len(comparison.cols)
    title = f"{n} runs" + (f" in {groups} seed group{'s' * (groups > 1)}" if comparison.grouped else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", style="bold", overflow="fold")
    for col in comparison.cols:
        table.add_column(escape(col.label), overflow="fold", justify="right")
    if comparison.config:
        table.add_row("[dim]config[/]", *[""] * len(comparison.cols))
        for key, cells in comparison.config:
            table.add_row(escape(key), *[escape(c) for c in cells])
    status = [", ".join(sorted({r.status for r in c.runs})) for c in comparison.cols]
    if any(s != "finished" for s in status):
        table.add_row("status", *status)
    table.add_row("[dim]metrics[/]", *[""] * len(comparison.cols), end_section=False)
    for label, stats in comparison.metrics:
        digits = DIGITS.get(label)
        table.add_row(escape(label), *[s.text(c.grouped, digits) for s, c in zip(stats, comparison.cols)])
    return table
