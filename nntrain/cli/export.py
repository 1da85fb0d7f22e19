"""`nntrain export CHECKPOINT --format onnx|torchscript`: the model as a file other runtimes load."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nntrain.cli.common import DebugOpt, console, run


class Format(str, enum.Enum):
    onnx = "onnx"
    torchscript = "torchscript"


def command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file, e.g. runs/x/<stamp>/checkpoints/best.pt.")],
    fmt: Annotated[Format, typer.Option("--format", help="onnx or torchscript.", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="The file to write (default: next to the checkpoint, <name>.onnx or <name>.torchscript.pt)."
        ),
    ] = None,
    with_preprocessing: Annotated[
        bool,
        typer.Option(
            "--with-preprocessing",
            help="Put the stored normalization into the graph: it takes raw inputs (uint8 pixels, raw feature "
            "columns, series in original units) and gives regression values in original units.",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check", help="Run the exported file on held-out samples against PyTorch (limit 1e-4)."
        ),
    ] = True,
    debug: DebugOpt = False,
) -> None:
    """Export a checkpoint's model to ONNX or TorchScript, with a JSON sidecar describing it."""

    def work() -> None:
        from nntrain.export import TOLERANCE, export_checkpoint

        exported = export_checkpoint(checkpoint, fmt.value, out, with_preprocessing, check)
        where = f"{escape(str(checkpoint))} -> {escape(str(exported.path))}"
        console.print(f"[bold]nntrain export[/] {where}", soft_wrap=True)
        inputs = ", ".join(f"{i['name']} {_shape(i['shape'])} {i['dtype']}" for i in exported.meta["inputs"])
        outputs = ", ".join(f"{o['name']} {_shape(o['shape'])}" for o in exported.meta["outputs"])
        console.print(f"inputs: {escape(inputs)}; outputs: {escape(outputs)}", soft_wrap=True)
        if exported.max_diff is not None:
            console.print(
                f"check: largest absolute difference from PyTorch {exported.max_diff:.3g} on "
                f"{escape(exported.samples_from)} (limit {TOLERANCE:g})",
                soft_wrap=True,
            )
        console.print(f"sidecar: {escape(str(exported.sidecar))}", soft_wrap=True)

    run(debug, work)


def _shape(shape: list) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
