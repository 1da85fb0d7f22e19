"""Learning-rate tools: the LR range test (`nntrain lr-find`) and schedule previews (`check --plot-lr`).

Plots: matplotlib is not a dependency of nntrain (it is large and only these two optional plots
would use it). When it is installed a PNG is written; the CSV is always written where a plot is
asked for, and a text sketch goes to the terminal, so nothing here needs it.
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from nntrain.checkpoint import rng_state, set_rng_state
from nntrain.config import Config
from nntrain.errors import ConfigError, RunError


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
    stop_reason: Optional[str] = None


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
    parts: Any,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
) -> RangeTest:
    """Smith's LR range test on built `parts`; the model, optimizer and RNG states are restored after.

    The LR grows exponentially from `start_lr` to `end_lr` over `steps` optimizer updates on training
    batches, each update going through the Trainer's own `train_step` (precision, accumulation,
    clipping and penalties as in `fit`; no LR schedule). The sweep stops early when the smoothed loss
    exceeds `diverge` x its best, or the loss is not finite.

    Args:
        parts: from `nntrain.experiment.build_parts`.
        start_lr, end_lr: the sweep's first and last LR.
        steps: optimizer updates in the sweep.
        beta: smoothing of the loss (exponential moving average with bias correction).
        diverge: stop once the smoothed loss exceeds this multiple of the best smoothed loss.
    """
    from nntrain.trainer import Trainer

    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < --start-lr < --end-lr (got {start_lr:g} and {end_lr:g})")
    if steps < 5:
        raise ConfigError(f"lr-find: --steps must be at least 5 (got {steps})")
    model, optimizer = parts.model, parts.optimizer
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), rng_state())
    was_training = model.training
    # Logging off: the sweep reads the loss after every update itself and expects it to blow up.
    cfg = parts.cfg.model_copy(update={"log": parts.cfg.log.model_copy(update={"every_n_steps": 2**62})})
    trainer = Trainer(cfg, model, parts.loss_fn, optimizer, None, parts.data, parts.device)
    result = RangeTest()
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    average, best = 0.0, math.inf
    try:
        model.train()
        weights, last = trainer._group_weights(), trainer.batches_per_epoch - 1
        epoch = 0
        while len(result.lrs) < steps and result.stop_reason is None:
            for i, (x, y) in enumerate(trainer.train_loader.epoch(epoch)):
                lr = start_lr * ratio ** len(result.lrs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                update = (i + 1) % trainer.accumulate == 0 or i == last
                trainer.train_step(x, y, weights[i], update)
                if not update:
                    continue
                loss = trainer._flush_loss()  # the mean loss of the batches of this update
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
            epoch += 1
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        set_rng_state(saved[2])
        model.train(was_training)
    result.suggestion, result.min_loss_lr = suggest(result.lrs, result.smoothed)
    return result


def find_lr(cfg: Config, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100) -> RangeTest:
    """Builds `cfg` (without its LR schedule, which the sweep replaces) and runs `range_test`."""
    from nntrain.experiment import build_parts

    return range_test(build_parts(cfg.model_copy(update={"scheduler": None})), start_lr, end_lr, steps)


# ---------------------------------------------------------------- output


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Writes rows to a CSV file, creating its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return path


def _write_error(path: Path, exc: OSError) -> RunError:
    """`cannot write PATH: why`, naming the file that stands where a folder should be."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"'{blocker}' is a file, not a folder" if blocker is not None else exc.strerror or exc
    return RunError(f"cannot write {path}: {reason}")


def write_png(path: Path, x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str,
              logx: bool = False, logy: bool = False, mark: Optional[float] = None) -> Optional[Path]:
    """A line plot when matplotlib is installed; None (and nothing written) otherwise."""
    if not _have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, y in ys.items():
        ax.plot(x, y, label=label)
    if mark is not None:
        ax.axvline(mark, color="red", linestyle="--", label=f"suggested {mark:.2g}")
    ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear", yscale="log" if logy else "linear")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        plt.close(fig)
    return path


def sketch(x: Sequence[float], y: Sequence[float], width: int = 64, height: int = 12,
           logx: bool = True, mark: Optional[float] = None) -> str:
    """A text plot of y against x (log-scaled x by default), with an optional marked x."""
    xs = np.log10(np.asarray(x, float)) if logx else np.asarray(x, float)
    ys = np.asarray(y, float)
    ok = np.isfinite(ys)
    if ok.sum() < 2:
        return ""
    lo = float(ys[ok].min())
    # Clip the tail: a diverging loss would otherwise flatten the interesting part to one row.
    hi = float(min(ys[ok].max(), lo + 2.5 * (ys[ok][0] - lo))) if ys[ok][0] > lo else float(ys[ok].max())
    hi = hi if hi > lo else lo + 1.0
    grid = [[" "] * width for _ in range(height)]
    span = xs[-1] - xs[0] or 1.0
    col = lambda v: min(width - 1, int((v - xs[0]) / span * (width - 1) + 0.5))  # noqa: E731
    if mark is not None:
        mark_col = col(math.log10(mark) if logx else mark)
        for row in grid:
            row[mark_col] = "|"
    for xv, yv in zip(xs[ok], ys[ok]):
        r = int((min(yv, hi) - lo) / (hi - lo) * (height - 1) + 0.5)
        grid[height - 1 - r][col(xv)] = "*" if yv <= hi else "^"
    lines = [f"{hi:9.3g} ┤" + "".join(grid[0])]
    lines += ["          │" + "".join(row) for row in grid[1:-1]]
    lines.append(f"{lo:9.3g} ┤" + "".join(grid[-1]))
    left, right = (f"{v:.0e}" if logx else f"{v:g}" for v in (x[0], x[-1]))
    lines.append("          └" + "─" * width)
    lines.append("           " + left + " " * max(1, width - len(left) - len(right)) + right)
    return "\n".join(lines)


def preview_rows(rows: Sequence[tuple], steps_per_epoch: int, warmup: int, max_rows: int = 24) -> list[tuple]:
    """The rows of a schedule preview worth printing: every Nth update, epoch starts, warmup's end, the last."""
    total = len(rows)
    every = max(1, math.ceil(total / (max_rows // 2)))
    epochs = math.ceil(total / steps_per_epoch)
    epoch_every = max(1, math.ceil(epochs / (max_rows // 2)))
    keep = {0, total - 1, min(warmup, total - 1)}
    keep |= set(range(0, total, every))
    keep |= {e * steps_per_epoch for e in range(0, epochs, epoch_every)}
    return [rows[i] for i in sorted(keep)]


def save_range_test(result: RangeTest, path: Path) -> list[Path]:
    """Writes `path` with suffix .csv (lr, loss, smoothed) and, with matplotlib, .png; returns the paths."""
    written = [write_csv(path.with_suffix(".csv"), ("lr", "loss", "smoothed"),
                         list(zip(result.lrs, result.losses, result.smoothed)))]
    png = write_png(path.with_suffix(".png"), result.lrs, {"loss": result.losses, "smoothed": result.smoothed},
                    "learning rate", "training loss", logx=True, mark=result.suggestion)
    return written + ([png] if png else [])


@dataclass
class SchedulePreview:
    """What `check --plot-lr` shows: selected rows, notes and the file written."""

    rows: list[tuple[int, int, float, Optional[float]]]
    notes: list[str]
    path: Path
    max_lr: float


def schedule_preview(cfg: Config, steps_per_epoch: int, path: Optional[Path] = None) -> SchedulePreview:
    """Simulates the LR of every optimizer update of `cfg`'s run and writes it to a PNG or a CSV.

    Args:
        cfg: the config; its scheduler and optimizer sections are used.
        steps_per_epoch: optimizer updates per epoch (`Parts.updates_per_epoch`).
        path: .png (needs matplotlib) or .csv; default <log.dir>/<name>/lr_schedule.png, or .csv
            when matplotlib is not installed.
    """
    from nntrain.schedules import preview_schedule

    spec = None if cfg.scheduler is None else cfg.scheduler.model_dump()
    epochs = cfg.train.epochs
    rows, warmup = preview_schedule(spec, cfg.optimizer.model_dump(), steps_per_epoch, epochs)
    rows = [(update, epoch + 1, lr, momentum) for update, epoch, lr, momentum in rows]  # epochs from 1
    notes = [f"{len(rows)} optimizer updates = {epochs} epochs x {steps_per_epoch} updates per epoch"]
    if spec is None:
        notes.append("no scheduler: the LR stays constant")
    elif spec["name"] in ("reduce_on_plateau", "newbob"):
        notes.append(f"{spec['name']} is simulated with a metric that never improves after its first value: "
                     f"each reduction comes as early as the rule allows, the lowest LRs the run could see")
    if warmup:
        notes.append(f"warmup: the first {warmup} updates")
    if path is None:
        path = Path(cfg.log.dir) / cfg.name / ("lr_schedule.png" if _have_matplotlib() else "lr_schedule.csv")
    if path.suffix == ".png":
        if not _have_matplotlib():
            raise ConfigError(f"--plot-out {path}: writing a PNG needs matplotlib (pip install matplotlib); "
                              f"give a .csv path instead")
        write_png(path, [r[0] for r in rows], {"lr": [r[2] for r in rows]}, "optimizer update", "learning rate")
    else:
        write_csv(path, ("update", "epoch", "lr", "momentum"), rows)
    return SchedulePreview(preview_rows(rows, steps_per_epoch, warmup), notes, path, max(r[2] for r in rows))
