"""`nntrain eval`: a checkpoint's model measured on a split of its data, written as JSON.

The evaluation computes everything the task has (`evaluate.evaluate_all`), not only what training
logs per epoch: for classification also top-5 accuracy, macro and weighted precision / recall /
F1, AUROC, ECE, per-class figures and the confusion matrix, by class name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nntrain.build import load_trained
from nntrain.device import autocast
from nntrain.evaluate import evaluate_all
from nntrain.run_dir import check_output_path, write_json


def evaluate_checkpoint(
    path: str | Path, split: str = "test", overrides: Sequence[str] = (), out: str | Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Evaluates the checkpoint at `path` on `split`; writes everything measured as JSON.

    Returns:
        The record written (`<split>/<metric>` values at the top level, next to `checkpoint`,
        `split`, `epoch`, `step` and the detail of `evaluate_all`) and the path of the JSON file
        (`<checkpoint>.<split>.json` beside the checkpoint unless `out` is given).
    """
    out_path = Path(out) if out else Path(path).with_name(f"{Path(path).stem}.{split}.json")
    if out or Path(path).is_file():  # before the work: a path that can't be written is an error now
        check_output_path(out_path, "--out" if out else "the metrics file (change it with --out)")
    trained = load_trained(path, overrides)
    parts, ckpt = trained.parts, trained.ckpt
    measured, _ = evaluate_all(
        parts.model, parts.loss_fn, parts.data, split, parts.cfg, autocast(parts.device, parts.cfg.train.precision)
    )
    record = {"checkpoint": str(path), "split": split, "epoch": ckpt["epoch"], "step": ckpt["step"], **measured}
    write_json(out_path, record)
    return record, out_path
