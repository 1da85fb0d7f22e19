"""`nntrain config CONFIG [--set ...] [--explain]`: the resolved config, every default filled in,
and (--explain) where each value came from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from nntrain.cli.common import ConfigArg, DebugOpt, SetOpt, console, err_console, run


def command(
    config: ConfigArg,
    set_: SetOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Say where each value came from: file:line, --set, default, "
                                             "or inferred from the data.")
    ] = False,
    no_data: Annotated[
        bool, typer.Option("--no-data", help="Don't load the data (the sizes it determines are left out).")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Print the resolved config: bases merged, --set applied, every default filled in, and the
    model sizes the data determines. It is what a run of this config trains with."""

    def work() -> None:
        from nntrain.explain import explain as resolve
        from nntrain.explain import render, summary

        explained = resolve(config, list(set_ or []), load_data=not no_data)
        console.out(render(explained, explain), end="", highlight=False)
        if explained.note:
            err_console.print(f"[bold yellow]note:[/] {escape(explained.note)}", highlight=False, soft_wrap=True)
        if explain:
            counts = summary(explained)
            parts = [f"{counts[k]} from {label}" for k, label in
                     (("file", "files"), ("--set", "--set"), ("default", "defaults"), ("data", "the data"))
                     if counts.get(k)]
            console.print(f"# {len(explained.origins)} values: {', '.join(parts)}", highlight=False)

    run(debug, work)
