"""The LR range test (`nntrain lr-find`, `optimizer.lr: auto`): Smith's sweep and its suggestion."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nntrain.checkpoint import rng_state, set_rng_state
from nntrain.errors import ConfigError, RunError
from nntrain.plots import write_csv, write_png

if TYPE_CHECKING:
    from nntrain.trainer import Trainer


@dataclass
class RangeTest:
    """The curve of an LR range test and what it suggests.

    Attributes:
        lrs, losses, smoothed: per optimizer update, the LR used, the training loss of the batches
            that update saw, and its exponential moving average (bias-corrected).
        suggestion: the LR where the smoothed loss falls fastest (steepest descent per log-LR unit).
        min_loss_lr: the LR at the lowest smoothed loss; `min_loss_lr / 10` is the other usual pick.
        stop_reason: why the sweep ended before `steps` updates, if it did.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = math.nan
    min_loss_lr: float = math.nan
    stop_reason: str | None = None


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[float, float]:
    """(LR at the steepest descent of the smoothed loss, LR at its minimum).

    The descent is searched from 10% into the sweep (the first smoothed values are noisy) up to the
    minimum, with the slope taken against log10(lr) over a 5-point window so that one noisy batch
    doesn't decide.
    """
    loss = np.asarray(smoothed, dtype=float)
    log_lr = np.log10(np.asarray(lrs, dtype=float))
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        raise RunError("the LR range test recorded fewer than 3 finite losses; lower --start-lr")
    best = int(np.nanargmin(np.where(finite, loss, np.nan)))
    start = min(len(loss) // 10, max(best - 2, 0))
    half = 2
    slopes = []
    for i in range(start, best + 1):
        lo, hi = max(i - half, 0), min(i + half, len(loss) - 1)
        slopes.append((loss[hi] - loss[lo]) / (log_lr[hi] - log_lr[lo]) if hi > lo else 0.0)
    steepest = start + int(np.argmin(slopes))
    return float(lrs[steepest]), float(lrs[best])


def range_test(
    trainer: Trainer,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
) -> RangeTest:
    """Smith's LR range test with `trainer`; the model, optimizer and RNG states are restored after.

    The LR grows exponentially from `start_lr` to `end_lr` over `steps` optimizer updates on training
    batches, each one the Trainer's own `update` (precision, accumulation, clipping and penalties as
    in `fit`; no LR schedule, no logging). The sweep stops early when the smoothed loss
    exceeds `diverge` x its best, or the loss is not finite.

    Args:
        trainer: from `nntrain.build.build_trainer`, without callbacks or schedule.
        start_lr, end_lr: the sweep's first and last LR.
        steps: optimizer updates in the sweep.
        beta: smoothing of the loss (exponential moving average with bias correction).
        diverge: stop once the smoothed loss exceeds this multiple of the best smoothed loss.
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < --start-lr < --end-lr (got {start_lr:g} and {end_lr:g})")
    if steps < 5:
        raise ConfigError(f"lr-find: --steps must be at least 5 (got {steps})")
    model, optimizer = trainer.model, trainer.optimizer
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), rng_state())
    was_training = model.training
    result = RangeTest()
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    average, best = 0.0, math.inf
    try:
        model.train()
        for group in _updates(trainer):
            lr = start_lr * ratio ** len(result.lrs)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            trainer.update(group, log=False)
            loss = trainer.flush_loss()  # the mean loss of the batches of this update
            loss = math.nan if loss is None else loss  # train.on_nan: skip skipped every batch of it
            average = beta * average + (1 - beta) * loss
            smooth = average / (1 - beta ** (len(result.lrs) + 1))
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(loss):
                result.stop_reason = f"the loss became {loss} at lr {lr:.3g}"
            elif smooth > diverge * best:
                result.stop_reason = f"the smoothed loss exceeded {diverge:g}x its best at lr {lr:.3g}"
            if result.stop_reason is not None or len(result.lrs) == steps:
                break
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        set_rng_state(saved[2])
        model.train(was_training)
    result.suggestion, result.min_loss_lr = suggest(result.lrs, result.smoothed)
    return result




def _updates(trainer: Trainer) -> Iterator[list[tuple[Any, Any]]]:
    """The micro-batch groups of one optimizer update each, epoch after epoch, without end."""
    epoch = 0
    while True:
        for _, group in trainer.groups(epoch):
            yield group
        epoch += 1


def save_range_test(result: RangeTest, path: Path) -> list[Path]:
    """Writes `path` with suffix .csv (lr, loss, smoothed) and, with matplotlib, .png; returns the paths."""
    written = [write_csv(path.with_suffix(".csv"), ("lr", "loss", "smoothed"),
                         list(zip(result.lrs, result.losses, result.smoothed)))]
    png = write_png(path.with_suffix(".png"), result.lrs, {"loss": result.losses, "smoothed": result.smoothed},
                    "learning rate", "training loss", logx=True, mark=result.suggestion)
    return written + ([png] if png else [])


