"""The training loop: `fit()` -> `train_epoch()` -> `update()`, plus `evaluate()`.

The Trainer is handed built pieces (nntrain.build makes them from a config) and a small
`TrainSettings`; it owns the loop state (`epoch`, `step`, `should_stop`) and nothing else.
`update()` is the one place an optimizer update happens: `fit`, lr-find and `check` all use it.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nntrain import distributed
from nntrain.averaging import Averaging
from nntrain.callbacks import Callback, callback_keys
from nntrain.checkpoint import FORMAT, rng_state, set_rng_state
from nntrain.data.loaders import TensorLoader
from nntrain.errors import RunError
from nntrain.losses import penalty
from nntrain.schedules import Schedule

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainSettings:
    """What the loop needs to know of the config (`train`, `log` and `regularization` sections)."""

    epochs: int
    accumulate: int = 1
    grad_clip: Any = None  # an object with `.norm` or `.value` (config.GradClip), or None
    skip_nan: bool = False  # train.on_nan: skip
    every_n_steps: int = 50  # log interval in optimizer updates
    l1: float = 0.0
    l2: float = 0.0
    channels_last: bool = False  # already resolved for this device and data


class Trainer:
    """Runs training and evaluation on built pieces.

    Args:
        model: the unwrapped module (its weights are what checkpoints hold).
        loss_fn, optimizer, schedule: built components (`schedule` may be None).
        train_loader: yields this rank's training batches; it owns the number of batches per epoch.
        evaluate: `evaluate(split) -> metrics`, the task's metrics on a split.
        settings: the loop's settings.
        device: where training runs.
        forward: what computes outputs: `model`, or it wrapped in DDP and/or `torch.compile`.
        ddp: the DistributedDataParallel wrapper under torchrun (gradient sync control), or None.
        autocast: the mixed-precision context for forward passes.
        scaler: the fp16 GradScaler (disabled for other precisions).
        augment: batch augmentations for training, applied in order.
        aug_generator: the generator the augmentations draw from (saved in checkpoints).
        penalty_params: the parameters the L1/L2 penalties apply to.
        callbacks: called at fit start, batch end, update end, log intervals, epoch end and fit end.
        meta: extra entries for checkpoints (config, data info, normalizer state, provenance).
        averaging: averaged weights (`train.ema` / `train.swa`), or None; see `eval_model`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule | None,
        train_loader: TensorLoader,
        evaluate: Callable[[str], dict[str, float]],
        settings: TrainSettings,
        device: torch.device,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ddp: nn.Module | None = None,
        autocast: Any = None,
        scaler: torch.amp.GradScaler | None = None,
        augment: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
        aug_generator: torch.Generator | None = None,
        penalty_params: Sequence[torch.Tensor] = (),
        callbacks: Sequence[Callback] = (),
        meta: dict[str, Any] | None = None,
        averaging: Averaging | None = None,
    ):
        import contextlib

        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.train_loader, self._evaluate, self.settings, self.device = train_loader, evaluate, settings, device
        self.forward = forward or model
        self.ddp = ddp
        self.autocast = autocast or contextlib.nullcontext()
        self.scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
        self.fp16 = self.scaler.is_enabled()  # fp16 gradients underflow without loss scaling
        self.augment, self.penalty_params = list(augment), list(penalty_params)
        self.aug_generator = aug_generator or torch.Generator(device=device)
        self.callbacks, self.meta = list(callbacks), meta or {}
        self.averaging = averaging
        self._batch_hooks, self._update_hooks = self._overriding("on_batch_end"), self._overriding("on_update")
        self.epochs = settings.epochs
        self.world = distributed.world_size()
        self.batches_per_epoch = len(train_loader)

        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer updates done
        self.batch_in_epoch = 0  # batches of the current epoch done
        self.should_stop = False
        self.stop_reason: str | None = None
        self.interrupted: int | None = None  # the signal number, set by the signal handler
        self.samples_seen = 0
        self.train_time = 0.0
        self.data_time = 0.0
        self.nan_skipped = 0  # micro-batches whose loss was not finite (train.on_nan: skip)
        self.updates_skipped = 0  # updates all of whose micro-batches were skipped
        self._skipped_in_a_row = 0
        self.last_metrics: dict[str, float] = {}
        self._penalty: torch.Tensor | None = None
        self._loss_sum = torch.zeros((), device=device)  # since the last log, on the device
        self._loss_count = 0
        self._epoch_sum = torch.zeros((), device=device)
        self._epoch_count = 0

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Trains until `epochs` are done, a callback sets `should_stop`, or a signal arrives."""
        self._call("on_fit_start")
        while self.epoch < self.epochs and not self.should_stop:
            if self.averaging is not None:
                self.averaging.epoch_start(self.epoch, self.optimizer)  # SWA: SWALR takes over the LR
            start = time.perf_counter()
            train_loss = self.train_epoch()
            self.train_time += time.perf_counter() - start
            if self.interrupted is not None:
                self._call("on_interrupt")
                break
            if self.averaging is not None:
                self.averaging.epoch_end(self.epoch)  # SWA: average, BatchNorm statistics
            metrics = {"train/loss": train_loss, **self.evaluate("val")}
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            if self.averaging is not None and self.averaging.controls_lr:
                self.averaging.lr_step()
            elif self.schedule is not None:
                self.schedule.after_epoch(metrics)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.last_metrics = metrics
            self._call("on_epoch_end", metrics)
        if self._skipped_in_a_row and self.interrupted is None and not math.isfinite(
            self.last_metrics.get("val/loss", math.nan)
        ):  # on_nan: skip, and the weights training ends with give no finite loss
            raise self._not_training(f"training ended with its last {self._skipped_in_a_row} updates skipped")
        self._call("on_fit_end")

    def train_epoch(self) -> float:
        """One pass over the rest of the current epoch; returns the epoch's mean training loss."""
        self.model.train()
        for done, group in self.groups(self.epoch, start=self.batch_in_epoch):
            self.update(group)
            self._check_skipping()
            self.batch_in_epoch = done
            for hook in self._batch_hooks:
                hook(self)
            for hook in self._update_hooks:
                hook(self)
            # Stop only between updates, so a checkpoint never holds half an accumulation group.
            if self._stop_requested():
                return math.nan
        self.flush_loss()
        if not self._epoch_count and self.settings.skip_nan:
            raise self._not_training(f"every update of epoch {self.epoch + 1} was skipped")
        mean = (self._epoch_sum / max(self._epoch_count, 1)).item()
        self._epoch_sum.zero_()
        self._epoch_count = 0
        self._check_finite(mean)
        return mean

    def groups(self, epoch: int, start: int = 0) -> Iterator[tuple[int, list[Batch]]]:
        """The micro-batch groups of `epoch` from batch `start`, one per optimizer update: every
        `accumulate` batches, and a short last group. Yields (batches done after it, the group)."""
        k, last = self.settings.accumulate, self.batches_per_epoch - 1
        group: list[Batch] = []
        fetched = time.perf_counter()
        for i, batch in enumerate(self.train_loader.epoch(epoch, start=start), start=start):
            self.data_time += time.perf_counter() - fetched  # time spent waiting for the batch
            group.append(batch)
            if (i + 1) % k == 0 or i == last:
                yield i + 1, group
                group = []
            fetched = time.perf_counter()  # the update's own time is not waiting for data

    def _stop_requested(self) -> bool:
        if self.world > 1 and distributed.any_rank(self.interrupted is not None, self.device):
            # Every rank stops at the same update, or the others would wait in the next all-reduce.
            self.interrupted = self.interrupted or signal.SIGTERM
        return self.interrupted is not None

    def update(self, micro_batches: Sequence[Batch], log: bool | None = None) -> None:
        """One optimizer update from a group of micro-batches (gradient accumulation).

        Each batch's mean loss is weighted by its share of the group's samples, so the summed
        gradients equal the gradient of the group's mean loss, even for a short last group. Then
        clipping (after unscaling fp16 gradients), the optimizer step and the schedule's step.

        Args:
            micro_batches: the (x, y) batches of this update.
            log: whether this update logs (default: every `every_n_steps` updates).
        """
        total = sum(len(x) for x, _ in micro_batches)
        last = len(micro_batches) - 1
        skipped = self.nan_skipped
        for i, (x, y) in enumerate(micro_batches):
            weight = len(x) / total if last else 1.0
            if self.ddp is not None and i < last:
                # DDP: gradients of micro-batches are only all-reduced at the update that uses them.
                with self.ddp.no_sync():
                    self._forward_backward(x, y, weight)
            else:
                self._forward_backward(x, y, weight)
        self._step(log if log is not None else (self.step + 1) % self.settings.every_n_steps == 0)
        if self.nan_skipped - skipped < len(micro_batches):
            self._skipped_in_a_row = 0
        else:  # on_nan: skip, and no micro-batch of this update had a finite loss
            self.updates_skipped += 1
            self._skipped_in_a_row += 1

    def _check_skipping(self) -> None:
        """The weights don't change while updates are skipped: a whole epoch of updates in a row
        without a finite loss means no later batch will give one either."""
        if self._skipped_in_a_row and self._skipped_in_a_row >= self.train_loader.updates_per_epoch(
            self.settings.accumulate
        ):
            raise self._not_training(f"{self._skipped_in_a_row} updates in a row, a whole epoch, were skipped")

    def _not_training(self, what: str) -> RunError:
        """train.on_nan: skip skipped so many updates that the run trains nothing: a failure."""
        return RunError(
            f"{what} (train.on_nan: skip; the loss was not finite): the weights no longer give a finite "
            f"loss, so the run is not training ({self.updates_skipped} of {self.step} updates skipped, "
            f"up to step {self.step}). Lower optimizer.lr, or set train.grad_clip"
        )

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> None:
        for augment in self.augment:
            x = augment(x)
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        s = self.settings
        with self.autocast:
            loss = self.loss_fn(self.forward(x), y)
            total = loss
            if s.l1 or s.l2:
                self._penalty = penalty(self.penalty_params, s.l1, s.l2)
                total = loss + self._penalty
        # on_nan: skip needs to look at the loss now: the one host sync per step it costs.
        if s.skip_nan and not torch.isfinite(total):
            self.nan_skipped += 1
            return
        if weight != 1.0:
            total = total * weight
        (self.scaler.scale(total) if self.fp16 else total).backward()
        self._loss_sum.add_(loss.detach(), alpha=len(x))  # stays on the device: no host sync
        self._loss_count += len(x)
        self.samples_seen += len(x)

    def _step(self, log_now: bool) -> None:
        clip = self.settings.grad_clip
        if self.fp16 and (clip is not None or log_now):
            self.scaler.unscale_(self.optimizer)  # clip and measure the true gradients, not scaled ones
        grads = self._grad_norms() if log_now else None
        if clip is not None:
            if clip.norm is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip.norm)
            else:
                nn.utils.clip_grad_value_(self.model.parameters(), clip.value)
            if grads is not None:
                grads["train/grad_norm_clipped"] = self._total_grad_norm()
        if self.fp16:
            self.scaler.step(self.optimizer)  # skips the update if fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.averaging is not None:
            self.averaging.after_update(self.step)  # EMA
        if log_now:
            self._log_step(grads)  # before zero_grad and the LR update: logs this update's LR and grads
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None and (self.averaging is None or not self.averaging.controls_lr):
            self.schedule.after_update()

    def flush_loss(self) -> float | None:
        """Moves the interval's loss into the epoch sums; returns its mean (one host sync).

        Under DDP the sums of all ranks are added first, so every rank logs and decides alike.
        """
        count = self._loss_count
        if self.world > 1:
            total = torch.tensor(float(count), device=self.device)
            distributed.all_reduce_sum(self._loss_sum, total)
            count = int(total.item())
        if not count:
            return None
        self._epoch_sum += self._loss_sum
        self._epoch_count += count
        mean = (self._loss_sum / count).item()
        self._loss_sum.zero_()
        self._loss_count = 0
        return mean

    def _check_finite(self, loss: float) -> None:
        """on_nan: stop. Losses are read at log intervals, so the step named is the interval's end."""
        if not math.isfinite(loss):
            raise RunError(
                f"training loss became {loss} in epoch {self.epoch + 1}, at or before step {self.step} "
                f"(checked every {self.settings.every_n_steps} steps); the checkpoints written before "
                f"are kept. Lower optimizer.lr, set train.grad_clip, or set train.on_nan: skip"
            )

    def _total_grad_norm(self) -> torch.Tensor:
        norms = [p.grad.detach().norm() for p in self.model.parameters() if p.grad is not None]
        return torch.stack(norms).norm() if norms else torch.zeros((), device=self.device)

    def _grad_norms(self) -> dict[str, torch.Tensor]:
        """Global and per-parameter gradient L2 norms (on the device; read once at the log)."""
        grads = {
            f"grad_norm/{name}": p.grad.detach().norm()
            for name, p in self.model.named_parameters()
            if p.grad is not None
        }
        total = torch.stack(list(grads.values())).norm() if grads else torch.zeros((), device=self.device)
        return {"train/grad_norm": total, **grads}

    def _log_step(self, grads: dict[str, torch.Tensor] | None = None) -> None:
        loss = self.flush_loss()
        if loss is None:
            return
        self._check_finite(loss)
        group = self.optimizer.param_groups[0]
        metrics = {"train/loss": loss, "lr": group["lr"]}
        if "momentum" in group or "betas" in group:  # cycled by onecycle
            metrics["momentum"] = group["betas"][0] if "betas" in group else group["momentum"]
        if self._penalty is not None:
            grads = {**(grads or {}), "train/penalty": self._penalty.detach()}
        if grads:
            values = torch.stack(list(grads.values())).float().tolist()  # one host sync
            metrics.update(zip(grads, values))
        self._call("on_log", metrics)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """The loss and the task's metrics of `eval_model` on `split`, read back once."""
        return self._evaluate(split)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, checkpointed as `model` and kept by early stopping:
        the averaged ones (`train.ema` / `train.swa`) once an average exists, else `model`."""
        averaging = self.averaging
        return averaging.module if averaging is not None and averaging.count > 0 else self.model

    def restore_weights(self, weights: dict[str, torch.Tensor], metrics: dict[str, float], note: str) -> None:
        """Puts the weights of an earlier epoch back (early stopping's `restore_best`) into `eval_model`.

        Callbacks hear of it through `on_restore` (the checkpointer rewrites last.pt).
        """
        self.eval_model.load_state_dict(weights)
        self.last_metrics = dict(metrics)
        self.stop_reason = f"{self.stop_reason}; {note}" if self.stop_reason else note
        self._call("on_restore")

    # ------------------------------------------------------------------ state

    def _interval_sums(self) -> list[list[float]]:
        """The loss sum and count logged since the last interval, one entry per rank (a collective
        under DDP: every rank calls state_dict at the same update)."""
        if self.world == 1:
            return [[float(self._loss_sum), float(self._loss_count)]]
        count = torch.tensor(float(self._loss_count), device=self.device, dtype=torch.float64)
        local = torch.stack([self._loss_sum.double(), count])
        return [t.tolist() for t in distributed.all_gather(local)]

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (docs/architecture.md): loads with `weights_only=True`."""
        # A checkpoint is a sync point anyway: never write weights a NaN loss has touched.
        pending = (self._loss_sum + self._epoch_sum).item()
        self._check_finite(pending)
        return {
            "format": FORMAT,
            # The unwrapped module (no `_orig_mod.` prefixes); with averaging, the averaged weights
            # (what eval, predict and export read) and the trained ones in `raw_model`.
            "model": self.eval_model.state_dict(),
            **self._averaging_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.schedule is None else self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.world,
            "loss_sums": {
                "interval": self._loss_sum.cpu(),
                "interval_count": self._loss_count,
                "interval_per_rank": self._interval_sums(),
                "epoch": self._epoch_sum.cpu(),
                "epoch_count": self._epoch_count,
            },
            "counters": {
                "samples_seen": self.samples_seen,
                "train_time": self.train_time,
                "data_time": self.data_time,
                "nan_skipped": self.nan_skipped,
                "updates_skipped": self.updates_skipped,
            },
            "rng": rng_state(),
            "aug_rng": self.aug_generator.get_state(),
            "callbacks": {key: cb.state_dict() for key, cb in zip(callback_keys(self.callbacks), self.callbacks)},
            "metrics": self.last_metrics,
            **self.meta,
        }

    def _averaging_state(self) -> dict[str, Any]:
        if self.averaging is None:
            return {}
        return {"raw_model": self.model.state_dict(), "averaging": self.averaging.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a checkpoint's training state so the run continues exactly where it stopped."""
        self.model.load_state_dict(state.get("raw_model", state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["scheduler"] is not None:
            self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
        saved_world = state.get("world_size", 1)
        if saved_world != self.world:  # resumed with another number of processes (an allowed change)
            self._rescale_progress(saved_world)
        sums = state["loss_sums"]
        self._load_interval(sums)
        self._epoch_sum = sums["epoch"].to(self.device)
        self._epoch_count = sums["epoch_count"]
        counters = state["counters"]
        self.samples_seen, self.train_time = counters["samples_seen"], counters["train_time"]
        self.data_time = counters["data_time"]
        self.nan_skipped = counters["nan_skipped"]
        self.updates_skipped = counters.get("updates_skipped", 0)  # absent from older checkpoints
        self.last_metrics = dict(state["metrics"])
        set_rng_state(state["rng"])
        self.aug_generator.set_state(state["aug_rng"])
        saved = state["callbacks"]
        for key, cb in zip(callback_keys(self.callbacks), self.callbacks):
            if key in saved:
                cb.load_state_dict(saved[key])
        if self.averaging is not None:  # last: SWA's LR replaces what the schedule restored
            self.averaging.load_state_dict(
                state.get("averaging"), state["model"], self.optimizer, state["optimizer"]["param_groups"]
            )

    def _rescale_progress(self, saved_world: int) -> None:
        """Maps the epoch's progress and the schedule's update count onto this number of processes:
        the same share of the epoch is done, and the schedule continues at the same fraction."""
        ratio = saved_world / self.world
        self.batch_in_epoch = min(round(self.batch_in_epoch * ratio), self.batches_per_epoch)
        if self.schedule is not None:
            per_epoch = self.train_loader.updates_per_epoch(self.settings.accumulate)
            done_in_epoch = -(-self.batch_in_epoch // self.settings.accumulate)
            self.schedule.seek(self.epoch * per_epoch + done_in_epoch)

    def _load_interval(self, sums: dict[str, Any]) -> None:
        """Each rank continues its own interval sums; with another number of ranks (an allowed
        config change), rank 0 takes them all."""
        per_rank = sums.get("interval_per_rank")
        rank = distributed.rank()
        if per_rank is None:  # written before per-rank sums (one process)
            per_rank = [[float(sums["interval"]), float(sums["interval_count"])]]
        if len(per_rank) != self.world:
            total = [sum(e[0] for e in per_rank), sum(e[1] for e in per_rank)]
            per_rank = [total] + [[0.0, 0.0]] * (self.world - 1)
        loss, count = per_rank[rank]
        self._loss_sum = torch.tensor(loss, device=self.device, dtype=self._epoch_sum.dtype)
        self._loss_count = int(count)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _overriding(self, hook: str) -> list[Any]:
        """Bound `hook` methods of the callbacks that override it: per-step hooks skip the no-ops."""
        methods = [getattr(cb, hook) for cb in self.callbacks]
        return [m for m in methods if getattr(m, "__func__", None) is not getattr(Callback, hook)]
