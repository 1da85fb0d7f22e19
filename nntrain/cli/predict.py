"""`nntrain predict CHECKPOINT INPUT...`: the model's predictions for new files, one row per input."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nntrain.cli.common import DebugOpt, console, run

SHOWN = 20  # rows shown on a terminal without --out


class Format(str, enum.Enum):
    csv = "csv"
    jsonl = "jsonl"


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file, e.g. runs/x/<stamp>/checkpoints/best.pt.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Inputs in the form the model was trained on: image files or folders, a CSV of feature "
            "columns or of texts, a time-series CSV, or an .npz.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write every prediction to this file (default: a table here).")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Classes listed per input (default 5).")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Inputs per forward pass (default: data.eval_batch_size).")
    ] = None,
    fmt: Annotated[
        Format | None, typer.Option("--format", help="csv or jsonl (default: from --out's suffix, else csv).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto (default: the training device).")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Predict new inputs with a checkpoint; write one row per input (CSV or JSON lines)."""

    def work() -> None:
        from nntrain.predict import predict_to_file

        preds = predict_to_file(
            checkpoint, inputs, out, None if fmt is None else fmt.value, top_k, batch_size, device
        )
        if out is not None:
            console.print(f"{len(preds)} predictions written to {escape(str(out))}", soft_wrap=True)
            return
        show(preds)

    run(debug, work)


def show(preds) -> None:
    """A short table on a terminal; every row as plain tab-separated lines otherwise."""
    header, rows = preds.header(), preds.rows()
    if preds.task == "classification":
        k = (len(header) - 3) // 2
        if console.is_terminal:
            k = min(k, 3)  # the table stays narrow; --out has them all
        header = ["input", "class", "probability", f"top {k}"]
        rows = [
            [r[0], r[1], r[2], ", ".join(f"{c} {p:.3f}" for c, p in list(zip(r[3::2], r[4::2]))[:k])] for r in rows
        ]
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    if not console.is_terminal:  # tab-separated lines, as written (rich would expand the tabs)
        console.file.write("".join("\t".join(map(cell, row)) + "\n" for row in [header, *rows]))
        return
    table = Table()
    for name in header:
        text = name in ("input", "class") or name.startswith("top")
        table.add_column(name, justify="left" if text else "right", no_wrap=True, overflow="ellipsis")
    for row in rows[:SHOWN]:
        table.add_row(*(escape(cell(v)) for v in row))
    console.print(table)
    if len(rows) > SHOWN:
        console.print(f"... and {len(rows) - SHOWN} more; --out FILE writes every prediction", highlight=False)
