"""`nntrain eval CHECKPOINT`: measure a checkpoint on a split of its data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nntrain.cli.common import DebugOpt, SetOpt, Split, console, run

# Per-class figures and the confusion matrix are printed for at most this many classes (all of
# them are in the JSON whatever the number).
MAX_PRINTED_CLASSES = 20


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file, e.g. runs/x/<stamp>/checkpoints/best.pt.")],
    split: Annotated[Split, typer.Option("--split", help="Which split to evaluate.")] = Split.test,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the metrics JSON.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Evaluate a checkpoint on a split: every metric of its task, per-class figures and the
    confusion matrix for classification; print them and save them as JSON."""

    def work() -> None:
        from nntrain.eval_checkpoint import evaluate_checkpoint

        record, path = evaluate_checkpoint(checkpoint, split.value, set_ or [], out)
        console.print(f"[bold]nntrain eval[/] {escape(str(checkpoint))} on the {split.value} split", soft_wrap=True)
        print_record(record, split.value)
        console.print(f"metrics written to {escape(str(path))}", soft_wrap=True)

    run(debug, work)


def print_record(record: dict[str, Any], split: str, detail: bool = True) -> None:
    """The metrics, and (`detail`) for classification with few classes the per-class figures and
    the confusion matrix: rich tables on a terminal, plain tab-separated lines otherwise."""
    scalars = [(k, v) for k, v in record.items() if k.startswith(f"{split}/")]
    _table("metrics", ["metric", "value"], [[k, _number(v)] for k, v in scalars])
    per_class, matrix = record.get("per_class"), record.get("confusion_matrix")
    if not detail or not per_class or matrix is None:
        return
    labels = matrix["labels"]
    if len(labels) > MAX_PRINTED_CLASSES:
        console.print(f"{len(labels)} classes: the per-class figures and the confusion matrix are in the JSON")
        return
    rows = [[name, _number(c["precision"]), _number(c["recall"]), _number(c["f1"]), str(c["support"]),
             _number(c.get("auroc"))] for name, c in per_class.items()]
    _table("per class", ["class", "precision", "recall", "f1", "support", "auroc"], rows)
    _table("confusion matrix (rows: true class, columns: predicted; counts)", ["true \\ pred", *labels],
           [[label, *map(str, counts)] for label, counts in zip(labels, matrix["counts"])])
    _table("confusion matrix, row-normalized (share of each true class)", ["true \\ pred", *labels],
           [[label, *(f"{v:.2f}" for v in row)] for label, row in zip(labels, matrix["normalized"])])


def _number(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    if not console.is_terminal:
        console.print(title, highlight=False, soft_wrap=True)
        for row in [header, *rows]:
            console.print("\t".join(row), highlight=False, soft_wrap=True, markup=False)
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
