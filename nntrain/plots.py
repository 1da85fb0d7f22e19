"""Figures and tables written to files: line plots (PNG), CSV, and text sketches for the terminal.

matplotlib draws the PNGs; where it is missing, the CSV is always written and the text sketch
goes to the terminal, so nothing here requires it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nntrain.errors import ConfigError, RunError

if TYPE_CHECKING:
    from nntrain.config import Config


def have_matplotlib() -> bool:
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
        raise write_error(path, exc) from None
    return path


def write_error(path: Path, exc: OSError) -> RunError:
    """`cannot write PATH: why`, naming the file that stands where a folder should be."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"'{blocker}' is a file, not a folder" if blocker is not None else exc.strerror or exc
    return RunError(f"cannot write {path}: {reason}")


def write_png(path: Path, x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str,
              logx: bool = False, logy: bool = False, mark: float | None = None) -> Path | None:
    """A line plot when matplotlib is installed; None (and nothing written) otherwise."""
    if not have_matplotlib():
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
        raise write_error(path, exc) from None
    finally:
        plt.close(fig)
    return path


def sketch(x: Sequence[float], y: Sequence[float], width: int = 64, height: int = 12,
           logx: bool = True, mark: float | None = None) -> str:
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


@dataclass
class SchedulePreview:
    """What `check --plot-lr` shows: selected rows, notes and the file written."""

    rows: list[tuple[int, int, float, float | None]]
    notes: list[str]
    path: Path
    max_lr: float


def schedule_preview(cfg: Config, steps_per_epoch: int, path: Path | None = None) -> SchedulePreview:
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
        path = Path(cfg.log.dir) / cfg.name / ("lr_schedule.png" if have_matplotlib() else "lr_schedule.csv")
    if path.suffix == ".png":
        if not have_matplotlib():
            raise ConfigError(f"--plot-out {path}: writing a PNG needs matplotlib (pip install matplotlib); "
                              f"give a .csv path instead")
        write_png(path, [r[0] for r in rows], {"lr": [r[2] for r in rows]}, "optimizer update", "learning rate")
    else:
        write_csv(path, ("update", "epoch", "lr", "momentum"), rows)
    return SchedulePreview(preview_rows(rows, steps_per_epoch, warmup), notes, path, max(r[2] for r in rows))
