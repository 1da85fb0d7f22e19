"""`nntrain list [KIND]`: what the registries hold, with each entry's parameters."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from nntrain.cli.common import DebugOpt, console, run


def command(
    kind: Annotated[str | None, typer.Argument(help="models, datasets, losses, optimizers, schedulers, "
                                                      "augmentations, activations, inits or normalizers.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Show what the registries hold, with each entry's parameters and defaults."""

    def work() -> None:
        import inspect

        from nntrain.components import INFERRED, REGISTRIES
        from nntrain.errors import ConfigError, unknown

        if kind is not None and kind not in REGISTRIES:
            raise ConfigError(unknown("kind", kind, REGISTRIES))
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

    run(debug, work)
