"""`nntrain runs [LOG_DIR]`: every run under a folder with its status, progress, best and test metric."""

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
    log_dir: Annotated[
        Path, typer.Argument(help="Folder of runs (default runs/), or a sweep folder to list its trials.")
    ] = Path("runs"),
    name: Annotated[
        str | None, typer.Option("--name", help="Only runs whose name (or name/stamp) matches this glob.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of the table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List runs, oldest first: status, epochs done, best monitored metric, test metric, time, speed.

    Status is finished, interrupted, failed, running, or stopped (the process is gone or silent
    without having recorded an end: killed, or its machine went down). A sweep is one row; give
    its folder to list its trials.
    """

    def work() -> None:
        from nntrain.runs import STATUS_STYLE, collect, rows

        items = collect(log_dir, name)
        if as_json:
            print(jsonfile.dumps([i.to_json() for i in items], indent=2))
            return
        if not items:
            what = f" named {name}" if name else ""
            console.print(f"no runs{what} under {log_dir}", highlight=False)
            return
        header, cells = rows(items)
        if not any(row[-1] for row in cells):  # no notes: no empty column
            header, cells = header[:-1], [row[:-1] for row in cells]
        header, cells = _fit_width(header, cells, console.width)
        table = Table(title=f"runs in {log_dir}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                      collapse_padding=True)
        for column in header:
            numeric = column in ("epochs", "time", "samples/s")
            table.add_column(column.replace(" ", "\n", 1) if column.startswith("best ") else column,
                             justify="right" if numeric else "left", overflow="fold",
                             no_wrap=not column.startswith(("best", "test", "note")))
        for row in cells:
            style = STATUS_STYLE.get(row[1], "")
            values = [escape(v) for v in row]
            values[1] = f"[{style}]{values[1]}[/]" if style else values[1]
            table.add_row(*values)
        console.print(table)

    run(debug, work)


def _fit_width(header: list[str], cells: list[list[str]], width: int) -> tuple[list[str], list[list[str]]]:
    """Leaves out the note, then samples/s, then time, while the table is wider than `width`
    (`--json` has everything)."""
    def needed(h: list[str], c: list[list[str]]) -> int:
        shown = [h_.split(" ", 1)[-1] if h_.startswith("best ") else h_ for h_ in h]
        return sum(max(len(x), *(len(r[i]) for r in c)) + 2 for i, x in enumerate(shown))

    for drop in ("note", "samples/s", "time"):
        if needed(header, cells) <= width or drop not in header:
            continue
        i = header.index(drop)
        header, cells = header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in cells]
    return header, cells
