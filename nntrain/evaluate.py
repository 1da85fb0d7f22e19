"""Measuring a model on a split: `evaluate()`, shared by fit, eval and the sweep; `measure()`
when more than the metrics is needed (the confusion matrix, every sample's output for a report)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nntrain import distributed, metrics
from nntrain.config import Config
from nntrain.data.info import DataInfo
from nntrain.data.loaders import Data, TensorLoader


@dataclass
class Measured:
    """What `measure` returns: the metrics, the sums' detail and, if kept, every output."""

    metrics: dict[str, float]
    detail: dict[str, torch.Tensor] = field(default_factory=dict)  # metrics.Meter.detail()
    outputs: torch.Tensor | None = None  # (N, ...) float32 on the host, in the split's order


def evaluate(
    forward: nn.Module,
    loss_fn: nn.Module,
    data: Data,
    split: str,
    cfg: Config,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    model: nn.Module | None = None,
    names: Sequence[str] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Mean loss and the task's metrics of `forward` on `split` (shared by fit and eval).

    Args:
        forward: what maps a batch to outputs (the compiled or DDP-wrapped model).
        loss_fn: the run's loss.
        data: the run's data; `split` names one of its splits (train, val, test).
        cfg: the run's config (eval batch size).
        autocast_ctx: mixed precision for the forward passes.
        model: the plain model, when `forward` wraps it (its train/eval mode is switched).
        names: the metrics to compute (nntrain.metrics); default: the task's.
        detail: opt-in, for TensorBoard: on classification data the evaluation also counts the
            confusion matrix (one bincount per batch) and sets `detail[split]` to
            `{"confusion": (C, C) counts}`. Under torchrun every rank must pass it alike.

    Returns:
        `{"<split>/<metric>": value}`, computed on the device and read once at the end.
    """
    extra = (metrics.ConfusionSums,) if detail is not None and data.info.task == "classification" else ()
    measured = measure(forward, loss_fn, data, split, cfg, autocast_ctx, model, names, extra=extra)
    if detail is not None:
        detail[split] = measured.detail
    return measured.metrics


def measure(
    forward: nn.Module,
    loss_fn: nn.Module,
    data: Data,
    split: str,
    cfg: Config,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    model: nn.Module | None = None,
    names: Sequence[str] | None = None,
    extra: Sequence[type[metrics.Sums]] = (),
    keep_outputs: bool = False,
    local: bool = False,
) -> Measured:
    """`evaluate`, returning also the sums' detail and, with `keep_outputs`, every output.

    Args (besides evaluate's):
        extra: `Sums` kept for their detail only (metrics.Meter).
        keep_outputs: keep every sample's output (moved to the host once, at the end).
        local: this process evaluates the whole split alone, with no collective operation
            (rank 0's report at the end of a torchrun fit); else each rank takes its shard.
    """
    module = model or forward
    was_training = module.training
    module.eval()
    x, y = data.split(split)
    world, rank = (1, 0) if local else (distributed.world_size(), distributed.rank())
    if keep_outputs and world > 1:
        raise ValueError("keep_outputs needs the whole split in one process (local=True)")
    # Under DDP each rank evaluates its shard; the sums are added up across ranks below.
    device = data.device or x.device
    loader = TensorLoader(x, y, cfg.data.eval_batch_size, rank=rank, world=world, device=device)
    meter = metrics.Meter(_context(data, loss_fn, _names(data.info, names), world > 1), device, names, extra)
    outputs: list[torch.Tensor] = []
    with torch.inference_mode(), autocast_ctx or contextlib.nullcontext():
        for xb, yb in loader.epoch():
            out = forward(xb)
            meter.update(out, yb)
            if keep_outputs:
                outputs.append(out.float())
    module.train(was_training)
    if world > 1:
        distributed.all_reduce_sum(*meter.state())
    values = meter.compute(split)
    kept = torch.cat(outputs).cpu() if keep_outputs and outputs else None
    return Measured(values, meter.detail(), kept)


def evaluate_all(
    model: nn.Module,
    loss_fn: nn.Module,
    data: Data,
    split: str,
    cfg: Config,
    autocast_ctx: contextlib.AbstractContextManager | None = None,
    forward: nn.Module | None = None,
    keep_outputs: bool = False,
) -> tuple[dict[str, Any], Measured]:
    """Every metric the task has on `split` (`nntrain eval`, `nntrain report`, the end of fit), in
    this process alone (no collective operation), and the per-class detail with class names.

    Args:
        model: the plain model (evaluated in eval mode, its mode restored after).
        forward: what maps a batch to outputs (default: `model`).
        keep_outputs: keep every sample's output (a report's figures need them).
        (the others as `evaluate`'s)

    Returns:
        The record (`task`, `<split>/<metric>` values, and for classification `classes`,
        `per_class`, `confusion_matrix`, `calibration`: see metrics.describe), and what `measure`
        returned.
    """
    info = data.info
    names = metrics.for_task(info.task, everything=True, num_classes=info.num_classes)
    measured = measure(
        forward or model, loss_fn, data, split, cfg, autocast_ctx, model, names, keep_outputs=keep_outputs, local=True
    )
    record: dict[str, Any] = {"task": info.task, **measured.metrics}
    classes = class_names(info)
    if classes is not None:
        record["classes"] = classes
    record.update(metrics.describe(measured.detail, classes))
    return record, measured


def class_names(info: DataInfo) -> list[str] | None:
    """The class names of classification data (their indices where the source names none)."""
    if info.task != "classification":
        return None
    return [str(c) for c in info.classes] if info.classes else [str(i) for i in range(info.num_classes or 0)]


def _names(info: DataInfo, names: Sequence[str] | None) -> list[str]:
    return list(metrics.for_task(info.task) if names is None else names)


def _context(data: Data, loss_fn: nn.Module, names: Sequence[str], sync: bool) -> metrics.Context:
    """What the metrics need to know: regression targets' scaling, reconstruction logits, the
    number of classes, the inputs' range (PSNR's peak: the training inputs', on the device)."""
    info = data.info
    scaled = info.task == "regression" and info.target_scale is not None
    data_range = None
    if info.task == "reconstruction" and "psnr" in names:
        x = data.train[0]  # NaN pads variable-length sequences: left out, without a host sync
        data_range = x.nan_to_num(nan=-torch.inf).amax() - x.nan_to_num(nan=torch.inf).amin()
    return metrics.Context(
        task=info.task,
        loss_fn=loss_fn,
        target_shift=info.target_shift if scaled else None,
        target_scale=info.target_scale if scaled else None,
        sigmoid=info.task == "reconstruction" and isinstance(loss_fn, nn.BCEWithLogitsLoss),
        num_classes=info.num_classes,
        data_range=data_range,
        sync=sync,
    )
