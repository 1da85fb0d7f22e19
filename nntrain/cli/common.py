"""What every command shares: the consoles, common options, running a command's work with
NntrainError turned into one message and its exit code, and loading a config."""

from __future__ import annotations

import enum
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True, emoji=False)  # verbatim: `a.npz:x:` stays text, not an emoji

ConfigArg = Annotated[Path, typer.Argument(help="YAML experiment file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a key: --set optimizer.lr=0.01 (YAML value; repeatable)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of errors.")]


class Split(str, enum.Enum):
    test = "test"
    val = "val"
    train = "train"


def run(debug: bool, work: Callable[[], Any]) -> Any:
    """Runs `work`; an NntrainError becomes one message on stderr and its exit code, a
    ConfigWarning one `warning:` line."""
    from nntrain.errors import ConfigWarning, Interrupted, NntrainError

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
        if isinstance(exc, Interrupted) and os.environ.get("RANK", "0") != "0":
            raise typer.Exit(exc.exit_code) from None  # under torchrun, rank 0 tells how to resume
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = default_show


def argv_without(option: str) -> list[str]:
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


def load(config: Path, overrides: list[str] | None, name: str | None = None):
    from nntrain.validate import load_config

    overrides = list(overrides or [])
    if name is not None:
        overrides.append(f"name={name}")
    return load_config(config, overrides)


def warn(message: str) -> None:
    """One `warning:` line on stderr; the command goes on."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
