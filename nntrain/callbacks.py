"""Callbacks: early stopping, checkpoints, TensorBoard, metrics.jsonl and the progress display.

Each callback has a few no-op hooks and `state_dict()`/`load_state_dict()` so resume restores it.
Callbacks stop training by setting `trainer.should_stop`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nntrain import jsonfile
from nntrain.checkpoint import save_atomic

if TYPE_CHECKING:
    import torch

    from nntrain.trainer import Trainer


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer) -> None: ...

    def on_update(self, trainer: Trainer) -> None:
        """After each optimizer update (the only points where a run can be checkpointed)."""

    def on_interrupt(self, trainer: Trainer) -> None:
        """After SIGINT/SIGTERM, once the current update is done."""

    def on_log(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_restore(self, trainer: Trainer) -> None:
        """The weights of an earlier epoch were put back (`Trainer.restore_weights`)."""

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def callback_keys(callbacks: Sequence[Callback]) -> list[str]:
    """The key each callback's state has in a checkpoint: its class name, and `Name#2`, `Name#3`...
    for further instances of one class (stable for a given config, which fixes the order)."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` beats `best` by more than `min_delta` in direction `mode`; NaN never does."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(
        self, monitor: str, mode: str, patience: int, min_delta: float = 0.0, restore_best: bool = False
    ):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_state: dict[str, Any] | None = None  # weights of the best epoch (restore_best)
        self.best_metrics: dict[str, float] = {}
        self.wait = 0
        self.reason: str | None = None

    def _evaluate(self, value: float) -> bool:
        """Records one epoch's `value`; returns True when training should stop."""
        if not math.isfinite(value):
            self.reason = f"{self.monitor} is {value}"
            return True
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.reason = f"{self.monitor} did not improve for {self.patience} epochs (best {self.best:.4g})"
            return True
        return False

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        stop = self._evaluate(metrics[self.monitor])
        if self.restore_best and self.wait == 0 and not stop:  # this epoch is the new best
            self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
            self.best_metrics = dict(metrics)
        if stop:
            trainer.should_stop = True
            trainer.stop_reason = f"early stopping: {self.reason}"

    def on_fit_end(self, trainer: Trainer) -> None:
        # Restored here, after the stopping epoch's checkpoints: best.pt of epoch E holds epoch E.
        if self.restore_best and self.reason and trainer.should_stop and self.best_state is not None:
            trainer.restore_weights(
                self.best_state, self.best_metrics, f"restored the weights of the best epoch ({self.best:.4g})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best, "wait": self.wait, "reason": self.reason,
            "best_state": self.best_state, "best_metrics": self.best_metrics,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.reason = state["best"], state["wait"], state["reason"]
        self.best_state, self.best_metrics = state.get("best_state"), state.get("best_metrics", {})


class ModelCheckpoint(Callback):
    """Writes `last.pt` (every N epochs and/or N updates), `best.pt` by `monitor`, and the top k.

    Every write is atomic (checkpoint.save_atomic), so a crash leaves the previous file intact.
    """

    def __init__(
        self,
        folder: Path,
        monitor: str,
        mode: str,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        keep_top_k: int = 0,
        write: bool = True,
    ):
        self.folder, self.monitor, self.mode, self.write = Path(folder), monitor, mode, write
        self.every_n_epochs, self.every_n_steps, self.keep_top_k = every_n_epochs, every_n_steps, keep_top_k
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.top: list[tuple[float, int]] = []  # (value, epoch) of the files epoch-<E>.pt kept

    def _save(self, state: dict[str, Any], name: str) -> None:
        if not self.write:  # another rank than 0: it tracks the best value and builds the state alike
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_atomic(state, self.folder / name)

    def on_update(self, trainer: Trainer) -> None:
        if self.every_n_steps and trainer.step % self.every_n_steps == 0:
            self._save(trainer.state_dict(), "last.pt")

    def on_interrupt(self, trainer: Trainer) -> None:
        self._save(trainer.state_dict(), "last.pt")

    def on_restore(self, trainer: Trainer) -> None:
        self._save(trainer.state_dict(), "last.pt")  # last.pt holds the weights the run ends with

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        value = metrics[self.monitor]
        if not math.isfinite(metrics.get("val/loss", 0.0)):
            value = math.nan  # weights whose validation loss is not finite are never the best (whatever val/acc says)
        is_best = improved(value, self.best, self.mode)
        if is_best:
            self.best, self.best_epoch = value, trainer.epoch
        evicted = self._rank(value, trainer.epoch)
        state = trainer.state_dict()  # after updating `best` and `top`, so the checkpoint holds them
        if trainer.epoch % self.every_n_epochs == 0 or trainer.epoch == trainer.epochs or trainer.should_stop:
            self._save(state, "last.pt")
        if is_best:
            self._save(state, "best.pt")
        if evicted is not None:
            self._save(state, f"epoch-{trainer.epoch}.pt")
            for _, epoch in evicted if self.write else ():
                (self.folder / f"epoch-{epoch}.pt").unlink(missing_ok=True)

    def _rank(self, value: float, epoch: int) -> list[tuple[float, int]] | None:
        """Updates the top-k list; returns the entries it evicts, or None when `epoch` doesn't enter."""
        if not self.keep_top_k or not math.isfinite(value):
            return None
        sign = 1.0 if self.mode == "min" else -1.0
        entries = sorted(self.top + [(value, epoch)], key=lambda e: (sign * e[0], e[1]))
        self.top, evicted = entries[: self.keep_top_k], entries[self.keep_top_k :]
        return None if (value, epoch) in evicted else evicted

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "top": [list(e) for e in self.top]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.top = [(float(v), int(e)) for v, e in state.get("top", [])]


class TensorBoardLogger(Callback):
    """Scalars with the optimizer step as x-axis: `train/loss` and `lr` per log interval, epoch metrics."""

    STEP_TAGS = ("train/loss", "lr")

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        resume_step: int | None = None,
        histograms_every_n_steps: int = 0,
        reconstruct: torch.Tensor | None = None,
        logits: bool = False,
        checkpointer: ModelCheckpoint | None = None,
        classes: Sequence[str] | None = None,
    ):
        """
        Args:
            folder: where the event files go.
            config: the resolved config (shown as text, and flattened as hyperparameters).
            resume_step: a resumed run's step: events logged after it by the interrupted run are purged.
            histograms_every_n_steps: weight and gradient histograms every N updates (0: never).
            reconstruct: validation inputs shown beside their reconstructions each epoch, or None.
            logits: the model's outputs are logits (bce_with_logits): a sigmoid makes them images.
            checkpointer: its best value goes into the HPARAMS tab.
            classes: classification: the class names of the confusion matrix shown each validation.
        """
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        self.config, self.histograms_every = config, histograms_every_n_steps
        self.reconstruct, self.logits, self.checkpointer = reconstruct, logits, checkpointer
        self.classes = None if classes is None else list(classes)
        # {"val": {"confusion": (C, C) counts}}, filled by each validation (build_trainer hands this
        # dict to evaluate()); None: no confusion matrix (not classification).
        self.confusion: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        import yaml

        text = yaml.safe_dump(self.config, sort_keys=False)
        self.writer.add_text("config", "```yaml\n" + text + "\n```", trainer.step)

    def on_log(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, trainer.step)
        every = self.histograms_every
        if every and trainer.step % every == 0:
            for name, p in trainer.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach(), trainer.step)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", p.grad.detach(), trainer.step)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            # Tags also logged per step get an `_epoch` suffix: one tag, one series.
            tag = f"{key}_epoch" if key in self.STEP_TAGS else key
            self.writer.add_scalar(tag, value, trainer.step)
        self.writer.add_scalar("epoch", trainer.epoch, trainer.step)
        if self.reconstruct is not None:
            self._reconstructions(trainer)
        if self.confusion:
            self._confusion_matrix(trainer)
        self.writer.flush()

    def _confusion_matrix(self, trainer: Trainer) -> None:
        """The validation's confusion matrix, counted by the validation itself (no extra pass over
        the data): a heatmap image (rows true, columns predicted) and its counts as a table."""
        from nntrain import figures

        matrix = self.confusion.pop("val", {}).get("confusion")
        if matrix is None:
            return
        counts = matrix.cpu().numpy()
        labels = self.classes or [str(i) for i in range(len(counts))]
        heatmap = figures.confusion_heatmap(counts)
        self.writer.add_image("val/confusion_matrix", heatmap, trainer.step, dataformats="HWC")
        table = figures.confusion_table(counts, labels)
        if table:
            self.writer.add_text("val/confusion_matrix", table, trainer.step)

    def _reconstructions(self, trainer: Trainer) -> None:
        """An image grid per epoch: validation inputs (top row) above their reconstructions."""
        import torch
        from torchvision.utils import make_grid

        x = self.reconstruct.to(trainer.device)
        model = trainer.eval_model
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            out = model(x).float()
        model.train(was_training)
        if self.logits:
            out = out.sigmoid()
        pair = torch.cat([x.float(), out.view_as(x)]).cpu()
        low, high = pair.amin(), pair.amax()  # to [0, 1] for display, whatever the normalization
        grid = make_grid((pair - low) / (high - low).clamp_min(1e-8), nrow=len(x))
        self.writer.add_image("val/reconstructions", grid, trainer.step)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.interrupted is None and trainer.last_metrics:
            self._write_hparams(trainer)
        self.writer.close()

    def _write_hparams(self, trainer: Trainer) -> None:
        """One HPARAMS-tab entry: the flattened config against the final and best metrics."""
        from torch.utils.tensorboard.summary import hparams

        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in _flatten(self.config).items()}
        results = {f"hparam/{k}": v for k, v in trainer.last_metrics.items()}
        best = self.checkpointer
        if best is not None and best.best is not None:
            results[f"hparam/best_{best.monitor}"] = best.best
        for summary in hparams(params, results):
            self.writer.file_writer.add_summary(summary)
        for key, value in results.items():
            self.writer.add_scalar(key, value, trainer.step)


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a line a killed run left half-written."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


class MetricsLog(Callback):
    """Appends one JSON object per logged step and per epoch to `metrics.jsonl`."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # Drop what the interrupted run logged after its checkpoint: no step appears twice.
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")

    def _write(self, trainer: Trainer, kind: str, metrics: dict[str, float]) -> None:
        record = {"kind": kind, "epoch": trainer.epoch, "step": trainer.step, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(jsonfile.dumps(record) + "\n")

    def on_log(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._write(trainer, "step", metrics)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._write(trainer, "epoch", metrics)


class ProgressBar(Callback):
    """A rich progress bar per epoch (updated a few times a second at most) and one line per epoch."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console()
        self.progress: Any = None
        self._last = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            auto_refresh=False,  # redrawn from on_batch_end: no refresh thread competing with training
        )
        self.progress.start()
        self._new_task(trainer)

    def _new_task(self, trainer: Trainer) -> None:
        self.task = self.progress.add_task(
            "train", total=trainer.batches_per_epoch, completed=trainer.batch_in_epoch,
            epoch=f"{trainer.epoch + 1}/{trainer.epochs}",
        )
        self.epoch_start = time.perf_counter()

    def on_batch_end(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        if now - self._last > 0.25:  # throttled: the bar never costs a per-step redraw
            self._last = now
            self.progress.update(self.task, completed=trainer.batch_in_epoch, refresh=True)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.progress.remove_task(self.task)
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "epoch")
        elapsed = time.perf_counter() - self.epoch_start
        self.console.print(f"epoch {trainer.epoch}/{trainer.epochs}  {shown}  {elapsed:.1f}s", soft_wrap=True)
        if trainer.epoch < trainer.epochs and not trainer.should_stop:
            self._new_task(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.progress.remove_task(self.task)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.progress.stop()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = "none" if value is None else value
    return flat


def _fmt(value: float) -> str:
    return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
