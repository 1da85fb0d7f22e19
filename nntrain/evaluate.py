"""Measuring a model on a split: `evaluate()` (fit and eval share it) and `nntrain eval`."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from nntrain import distributed
from nntrain.checkpoint import load_checkpoint
from nntrain.config import Config, config_from_dict
from nntrain.data.loaders import Data, TensorLoader
from nntrain.errors import CheckpointError, DataError, RunError


def evaluate_checkpoint(
    path: str | Path, split: str = "test", overrides: list[str] = (), out: Optional[str | Path] = None
) -> tuple[dict[str, float], Path]:
    """Evaluates the checkpoint at `path` on `split`; writes the metrics as JSON.

    Returns:
        The metrics and the path of the JSON file (`<checkpoint>.<split>.json` unless `out` is given).
    """
    from nntrain.device import autocast
    from nntrain.experiment import build_parts

    path = Path(path)
    ckpt = load_checkpoint(path)
    stored = dict(ckpt["config"])
    if isinstance(stored.get("model"), dict):
        # The weights come from this checkpoint: the pretrained file init_from named may be gone.
        stored["model"] = {k: v for k, v in stored["model"].items() if k != "init_from"}
    cfg = config_from_dict(stored, list(overrides), where=f"{path} (stored config)")
    parts = build_parts(cfg, normalizer_state=ckpt.get("normalizer"), data_info=ckpt.get("data_info"))
    trained_on = (ckpt.get("data_info") or {}).get("classes")
    classes = parts.data.info.classes
    if trained_on is not None and classes is not None and list(classes) != list(trained_on):
        # Same number of classes in another order would load and give silently wrong metrics.
        shown = lambda names: ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")  # noqa: E731
        raise DataError(cfg.locate(
            f"data.dataset: the data's classes ({shown(classes)}) are not the ones {path} was trained "
            f"on ({shown(trained_on)}); evaluate on data with the same labels"
        ))
    try:
        parts.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path}: the weights don't fit the model the config builds "
            f"(a different architecture?): {detail}"
        ) from None
    metrics = evaluate(
        parts.model, parts.loss_fn, parts.data, split, cfg, autocast(parts.device, cfg.train.precision)
    )
    record = {"checkpoint": str(path), "split": split, "epoch": ckpt["epoch"], "step": ckpt["step"], **metrics}
    out_path = Path(out) if out else path.with_name(f"{path.stem}.{split}.json")
    try:
        out_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return metrics, out_path

def evaluate(
    forward: nn.Module,
    loss_fn: nn.Module,
    data: Data,
    split: str,
    cfg: Config,
    autocast_ctx: Optional[contextlib.AbstractContextManager] = None,
    model: Optional[nn.Module] = None,
) -> dict[str, float]:
    """Mean loss and the task's metrics of `forward` on `split` (shared by fit and eval).

    classification: `acc`. regression: `mse`, `rmse`, `mae` over every predicted value, in the
    original units when the source scaled its targets (DataInfo.target_scale). reconstruction:
    `mse` per value (pixel) of the reconstruction (sigmoid of the logits with bce_with_logits).
    """
    module = model or forward
    was_training = module.training
    module.eval()
    x, y = data.split(split)
    # Under DDP each rank evaluates its shard; the sums are added up across ranks below.
    device = data.device or x.device
    loader = TensorLoader(
        x, y, cfg.data.eval_batch_size, rank=distributed.rank(), world=distributed.world_size(), device=device
    )
    info = data.info
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    sq_sum = torch.zeros((), device=device)
    abs_sum = torch.zeros((), device=device)
    classify = info.task == "classification"
    scale = shift = None
    if info.task == "regression" and info.target_scale is not None:
        scale = torch.tensor(info.target_scale, device=device)
        shift = torch.tensor(info.target_shift, device=device)
    logits = info.task == "reconstruction" and isinstance(loss_fn, nn.BCEWithLogitsLoss)
    with torch.inference_mode(), autocast_ctx or contextlib.nullcontext():
        for xb, yb in loader.epoch():
            out = forward(xb)
            loss_sum += loss_fn(out, yb).float() * len(xb)
            if classify:
                correct += (out.argmax(dim=-1) == yb).sum()
                continue
            pred, target = out.float(), yb.float()
            if logits:
                pred = pred.sigmoid()
            if scale is not None:  # back to the original units
                pred, target = pred * scale + shift, target * scale + shift
            err = pred - target
            sq_sum += err.pow(2).sum()
            abs_sum += err.abs().sum()
    module.train(was_training)
    distributed.all_reduce_sum(loss_sum, correct, sq_sum, abs_sum)
    metrics = {f"{split}/loss": (loss_sum / len(x)).item()}
    if classify:
        metrics[f"{split}/acc"] = correct.item() / len(x)
    elif info.task in ("regression", "reconstruction"):
        mse = sq_sum.item() / y.numel()
        metrics[f"{split}/mse"] = mse
        if info.task == "regression":
            metrics[f"{split}/rmse"] = math.sqrt(mse)
            metrics[f"{split}/mae"] = abs_sum.item() / y.numel()
    return metrics
