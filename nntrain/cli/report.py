"""`nntrain report CHECKPOINT`: an HTML report (with JSON and PNG figures) of a checkpoint on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nntrain.cli.common import DebugOpt, SetOpt, Split, console, run


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file, e.g. runs/x/<stamp>/checkpoints/best.pt.")],
    split: Annotated[Split, typer.Option("--split", help="Which split to report on.")] = Split.test,
    out: Annotated[Path | None, typer.Option(
        "--out", help="The report's folder (default: <checkpoint>.<split>.report/ beside the checkpoint).")] = None,
    wrong: Annotated[int, typer.Option(
        "--wrong", min=0, help="How many of the most confidently wrong samples to show.")] = 16,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Write report.html (self-contained), report.json and PNG figures: metrics, per-class figures,
    confusion matrix, calibration, the most confidently wrong samples (or regression / reconstruction
    figures), training curves, config and provenance."""

    def work() -> None:
        from nntrain.cli.evaluate import print_record
        from nntrain.report import report_checkpoint

        console.print(f"[bold]nntrain report[/] {escape(str(checkpoint))} on the {split.value} split", soft_wrap=True)
        page, record = report_checkpoint(checkpoint, split.value, out, set_ or [], wrong)
        print_record(record, split.value, detail=False)
        console.print(f"report written to {escape(str(page))} (with report.json and the figures as PNG)",
                      soft_wrap=True)

    run(debug, work)
