"""The `nntrain` command line: one module per command, each registered here with one line.

Heavy imports (torch) happen inside the commands' work so that `nntrain --help` stays fast.
"""

from __future__ import annotations

import typer

from nntrain.cli import check, compare, config, evaluate, export, fit, listing, lr_find, predict, report, runs, sweep

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train PyTorch models from YAML experiment files.",
)
app.command("fit")(fit.command)
app.command("eval")(evaluate.command)
app.command("report")(report.command)
app.command("check")(check.command)
app.command("lr-find")(lr_find.command)
app.command("sweep")(sweep.command)
app.command("list")(listing.command)
app.command("runs")(runs.command)
app.command("compare")(compare.command)
app.command("config")(config.command)
app.command("predict")(predict.command)
app.command("export")(export.command)


def main() -> None:
    app(prog_name="nntrain")
