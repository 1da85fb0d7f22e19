"""The training loop: `fit()` -> `train_epoch()` -> `train_step()`, plus `evaluate()`."""

from __future__ import annotations

import math
import signal
import time
from typing import Any, Optional, Sequence

import torch
from torch import nn

from nntrain import distributed
from nntrain.callbacks import Callback
from nntrain.checkpoint import FORMAT, rng_state, set_rng_state
from nntrain.config import Config
from nntrain.data.augment import random_augmentations
from nntrain.data.loaders import Data, TensorLoader
from nntrain.data.transforms import AUGMENTATIONS
from nntrain.device import autocast
from nntrain.errors import ConfigError, RunError
from nntrain.evaluate import evaluate
from nntrain.losses import penalized_parameters, penalty
from nntrain.schedules import Schedule


class Trainer:
    """Owns the loop state (`epoch`, `step`, `should_stop`) and runs training and evaluation.

    Args:
        cfg: the validated config.
        model, loss_fn, optimizer, schedule: built components (`schedule` may be None).
        data: the splits, already on `device`.
        device: where training runs.
        callbacks: called at fit start, batch end, update end, log intervals, epoch end and fit end.
        meta: extra entries for checkpoints (data info, normalizer state, provenance).
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Optional[Schedule],
        data: Data,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        meta: Optional[dict[str, Any]] = None,
    ):
        self.cfg, self.model, self.loss_fn = cfg, model, loss_fn
        self.optimizer, self.schedule, self.data, self.device = optimizer, schedule, data, device
        self.callbacks, self.meta = list(callbacks), meta or {}
        self._batch_hooks, self._update_hooks = self._overriding("on_batch_end"), self._overriding("on_update")
        train = cfg.train
        self.epochs, self.accumulate = train.epochs, train.accumulate
        self.skip_nan = train.on_nan == "skip"
        if self.skip_nan and distributed.world_size() > 1:
            # A rank that skips its backward would leave the others waiting in DDP's all-reduce.
            raise ConfigError("train.on_nan: 'skip' works in one process only; use 'stop' with torchrun")
        self.world = distributed.world_size()
        self.train_loader = TensorLoader(
            *data.train, cfg.data.batch_size, cfg.data.shuffle, cfg.seed,
            rank=distributed.rank(), world=self.world, device=device,
        )
        self.batches_per_epoch = len(self.train_loader)
        self.autocast = autocast(device, train.precision)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self.fp16 = train.precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.fp16)
        self.grad_clip, self.every_n_steps = train.grad_clip, cfg.log.every_n_steps
        # channels_last lets cuDNN pick its fastest convolution kernels (a no-op elsewhere).
        self.channels_last = device.type == "cuda" and data.train[0].dim() == 4 and train.channels_last is not False
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # DDP averages gradients across ranks in backward; `self.model` stays the unwrapped module.
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        wrapped = self.ddp or model
        self.forward = torch.compile(wrapped) if train.compile else wrapped
        # Each rank draws its own augmentations (the same seed would repeat them across ranks).
        self.aug_generator = torch.Generator(device=device).manual_seed(cfg.seed + distributed.rank())
        self.augment = [
            AUGMENTATIONS.build(s, generator=self.aug_generator) for _, s in random_augmentations(cfg.data.augment)
        ]
        reg = cfg.regularization
        self.l1, self.l2 = reg.l1, reg.l2
        self.penalty_params = penalized_parameters(model, reg.include_bias_and_norm)

        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer updates done
        self.batch_in_epoch = 0  # batches of the current epoch done
        self.should_stop = False
        self.stop_reason: Optional[str] = None
        self.restored_best = False  # early stopping's restore_best put the best weights back
        self.interrupted: Optional[int] = None  # the signal number, set by the signal handler
        self.samples_seen = 0
        self.train_time = 0.0
        self.data_time = 0.0
        self.nan_skipped = 0
        self.last_metrics: dict[str, float] = {}
        self._loss_sum = torch.zeros((), device=device)  # since the last log, on the device
        self._loss_count = 0
        self._epoch_sum = torch.zeros((), device=device)
        self._epoch_count = 0

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Trains until `epochs` are done, a callback sets `should_stop`, or a signal arrives."""
        self._call("on_fit_start")
        while self.epoch < self.epochs and not self.should_stop:
            start = time.perf_counter()
            train_loss = self.train_epoch()
            self.train_time += time.perf_counter() - start
            if self.interrupted is not None:
                self._call("on_interrupt")
                break
            metrics = {"train/loss": train_loss, **self.evaluate("val")}
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            if self.schedule is not None:
                self.schedule.after_epoch(metrics)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.last_metrics = metrics
            self._call("on_epoch_end", metrics)
        self._call("on_fit_end")

    def _group_weights(self) -> list[float]:
        """Loss weight of each batch: its share of the samples in its accumulation group.

        With accumulation k, one update sums k batch gradients; weighting each batch's mean loss by
        n_i / sum(n) makes the sum equal the mean loss over the group, even for a short last group.
        """
        sizes = self.train_loader.batch_sizes()
        k = self.accumulate
        weights = []
        for i, n in enumerate(sizes):
            group = sizes[(i // k) * k : (i // k + 1) * k]
            weights.append(n / sum(group))
        return weights

    def train_epoch(self) -> float:
        """One pass over the rest of the current epoch; returns the epoch's mean training loss."""
        self.model.train()
        weights = self._group_weights()
        last = self.batches_per_epoch - 1
        batches = self.train_loader.epoch(self.epoch, start=self.batch_in_epoch)
        fetched = time.perf_counter()
        for i, (x, y) in enumerate(batches, start=self.batch_in_epoch):
            self.data_time += time.perf_counter() - fetched  # time spent waiting for the batch
            update = (i + 1) % self.accumulate == 0 or i == last
            self.train_step(x, y, weights[i], update)
            self.batch_in_epoch = i + 1
            for hook in self._batch_hooks:
                hook(self)
            if update:
                for hook in self._update_hooks:
                    hook(self)
                # Stop only between updates, so a checkpoint never holds half an accumulation group.
                if self._stop_requested():
                    return math.nan
            fetched = time.perf_counter()
        self._flush_loss()
        mean = (self._epoch_sum / max(self._epoch_count, 1)).item()
        self._epoch_sum.zero_()
        self._epoch_count = 0
        self._check_finite(mean)
        return mean

    def _stop_requested(self) -> bool:
        if self.world > 1 and distributed.any_rank(self.interrupted is not None, self.device):
            # Every rank stops at the same update, or the others would wait in the next all-reduce.
            self.interrupted = self.interrupted or signal.SIGTERM
        return self.interrupted is not None

    def train_step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0, update: bool = True) -> None:
        """Forward and backward on one batch; an optimizer update when `update` is True."""
        if self.ddp is not None and not update:
            # DDP: gradients of micro-batches are only all-reduced at the update that uses them.
            with self.ddp.no_sync():
                self._forward_backward(x, y, weight)
        else:
            self._forward_backward(x, y, weight)
        if update:
            self._update()

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> None:
        for augment in self.augment:
            x = augment(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            loss = self.loss_fn(self.forward(x), y)
            total = loss
            if self.l1 or self.l2:
                self._penalty = penalty(self.penalty_params, self.l1, self.l2)
                total = loss + self._penalty
        # on_nan: skip needs to look at the loss now: the one host sync per step it costs.
        if self.skip_nan and not torch.isfinite(total):
            self.nan_skipped += 1
        else:
            # Accumulation: scale so the summed gradients equal the gradient of the group's mean loss.
            if weight != 1.0:
                total = total * weight
            (self.scaler.scale(total) if self.fp16 else total).backward()
            self._loss_sum.add_(loss.detach(), alpha=len(x))  # stays on the device: no host sync
            self._loss_count += len(x)
            self.samples_seen += len(x)

    def _update(self) -> None:
        log_now = (self.step + 1) % self.every_n_steps == 0
        clip = self.grad_clip
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
        if log_now:
            self._log_step(grads)  # before zero_grad and the LR update: logs this update's LR and grads
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            self.schedule.after_update()

    def _flush_loss(self) -> Optional[float]:
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
                f"(checked every {self.cfg.log.every_n_steps} steps); the checkpoints written before "
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

    def _log_step(self, grads: Optional[dict[str, torch.Tensor]] = None) -> None:
        loss = self._flush_loss()
        if loss is None:
            return
        self._check_finite(loss)
        group = self.optimizer.param_groups[0]
        metrics = {"train/loss": loss, "lr": group["lr"]}
        if "momentum" in group or "betas" in group:  # cycled by onecycle
            metrics["momentum"] = group["betas"][0] if "betas" in group else group["momentum"]
        if self.l1 or self.l2:
            grads = {**(grads or {}), "train/penalty": self._penalty.detach()}
        if grads:
            values = torch.stack(list(grads.values())).float().tolist()  # one host sync
            metrics.update(zip(grads, values))
        self._call("on_log", metrics)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Mean loss (and accuracy for classification) over `split`, read back once."""
        return evaluate(self.forward, self.loss_fn, self.data, split, self.cfg, self.autocast, self.model)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (DESIGN.md): loads with `weights_only=True`."""
        # A checkpoint is a sync point anyway: never write weights a NaN loss has touched.
        pending = (self._loss_sum + self._epoch_sum).item()
        self._check_finite(pending)
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),  # the unwrapped module: no `_orig_mod.` prefixes
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.schedule is None else self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "loss_sums": {
                "interval": self._loss_sum.cpu(),
                "interval_count": self._loss_count,
                "epoch": self._epoch_sum.cpu(),
                "epoch_count": self._epoch_count,
            },
            "counters": {
                "samples_seen": self.samples_seen,
                "train_time": self.train_time,
                "data_time": self.data_time,
                "nan_skipped": self.nan_skipped,
            },
            "rng": rng_state(),
            "aug_rng": self.aug_generator.get_state(),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.hash(),
            "seed": self.cfg.seed,
            "metrics": self.last_metrics,
            **self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a checkpoint's training state so the run continues exactly where it stopped."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["scheduler"] is not None:
            self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
        sums = state["loss_sums"]
        self._loss_sum = sums["interval"].to(self.device)
        self._epoch_sum = sums["epoch"].to(self.device)
        self._loss_count, self._epoch_count = sums["interval_count"], sums["epoch_count"]
        counters = state["counters"]
        self.samples_seen, self.train_time = counters["samples_seen"], counters["train_time"]
        self.data_time = counters["data_time"]
        self.nan_skipped = counters["nan_skipped"]
        self.last_metrics = dict(state["metrics"])
        set_rng_state(state["rng"])
        self.aug_generator.set_state(state["aug_rng"])
        for cb in self.callbacks:
            if type(cb).__name__ in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][type(cb).__name__])

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _overriding(self, hook: str) -> list[Any]:
        """Bound `hook` methods of the callbacks that override it: per-step hooks skip the no-ops."""
        methods = [getattr(cb, hook) for cb in self.callbacks]
        return [m for m in methods if getattr(m, "__func__", None) is not getattr(Callback, hook)]
