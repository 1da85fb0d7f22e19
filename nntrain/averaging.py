"""Averaged weights: an exponential moving average (`train.ema`) or stochastic weight averaging
(`train.swa`) of the model's weights, kept beside the model the optimizer trains.

The average lives in torch's `swa_utils.AveragedModel` (a copy of the unwrapped model plus
`n_averaged`) and is updated with torch's own averaging functions (`get_ema_multi_avg_fn`,
`get_swa_multi_avg_fn`). Only the bookkeeping differs from `AveragedModel.update_parameters`:
the number of averages is counted on the host, so an update never waits for the device (torch's
reads `n_averaged` back twice per call, a host sync per optimizer step on a GPU).

- EMA: avg <- decay * avg + (1 - decay) * weights after every `every_n_steps` optimizer updates
  (the first update copies the weights); buffers (BatchNorm statistics) are averaged alike
  (`use_buffers=True`, as torch recommends for EMA).
- SWA: from epoch `start_epoch` (1-based) torch's `SWALR` sets the LR, annealing to `swa.lr` over
  `anneal_epochs` epochs, in place of the config's scheduler; at the end of that epoch and of every
  later one the weights join the running mean avg <- avg + (weights - avg) / (n + 1). Buffers are
  not averaged (torch's default for SWA): a model with BatchNorm gets its statistics recomputed
  for the averaged weights (`update_bn`, one forward pass over the training split without
  augmentation) before every validation from then on, so validation, `best.pt`, early stopping
  and the test at the end all judge the averaged weights with statistics of their own.

Under torchrun every rank holds the same weights, so each keeps the same average without any
communication; only `update_bn` averages its per-rank statistics across the ranks.

Validation, checkpoints' `model`, `best.pt`, eval, predict and export use the averaged weights
(`Trainer.eval_model`) once there is an average; checkpoints keep the trained weights in
`raw_model` and the averaging state in `averaging`, so a resumed run continues exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

from nntrain import distributed


class Averaging:
    """The averaged copy of `model` and when to update it.

    Args:
        model: the unwrapped module the optimizer trains (not its DDP or compiled wrapper).
        ema: `train.ema` (decay, every_n_steps), or None.
        swa: `train.swa` (start_epoch, lr, anneal_epochs, anneal_strategy), or None.
        bn_batches: for SWA of a model with BatchNorm: returns an iterable of this rank's training
            inputs for `update_bn` (no augmentation, a fixed order).
    """

    def __init__(
        self,
        model: nn.Module,
        ema: Any = None,
        swa: Any = None,
        bn_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
    ):
        if (ema is None) == (swa is None):
            raise ValueError("give one of ema or swa")
        self.model, self.ema, self.swa = model, ema, swa
        self.use_buffers = ema is not None
        avg_fn = get_ema_multi_avg_fn(ema.decay) if ema is not None else get_swa_multi_avg_fn()
        self.averaged = AveragedModel(model, multi_avg_fn=avg_fn, use_buffers=self.use_buffers)
        self.avg_fn = avg_fn
        self.count = 0  # averages taken: the host's copy of averaged.n_averaged
        self.swalr: SWALR | None = None
        self.has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.bn_batches = bn_batches
        self._pairs = self._tensor_groups()

    def _tensor_groups(self) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """(averaged, current) tensor lists grouped by device and dtype, as torch's foreach kernels
        want them; built once (loading a state dict copies into the same tensors)."""
        def tensors(m: nn.Module) -> list[torch.Tensor]:
            chain = itertools.chain(m.parameters(), m.buffers()) if self.use_buffers else m.parameters()
            return [t.detach() for t in chain]

        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for avg, cur in zip(tensors(self.averaged.module), tensors(self.model), strict=True):
            pair = groups.setdefault((avg.device, avg.dtype), ([], []))
            pair[0].append(avg)
            pair[1].append(cur)
        return list(groups.values())

    @property
    def module(self) -> nn.Module:
        """The averaged model (a plain module with the model's structure and state dict keys)."""
        return self.averaged.module

    @property
    def kind(self) -> str:
        return "ema" if self.ema is not None else "swa"

    @property
    def controls_lr(self) -> bool:
        """True once SWALR has replaced the config's scheduler."""
        return self.swalr is not None

    @torch.no_grad()
    def update(self) -> None:
        """Adds the model's current weights to the average (no host sync)."""
        if self.count == 0:
            for avgs, curs in self._pairs:
                torch._foreach_copy_(avgs, curs)
        else:
            for avgs, curs in self._pairs:
                self.avg_fn(avgs, curs, self.count)
        if not self.use_buffers:  # torch: the buffers follow the model's (SWA recomputes BN's)
            for b_avg, b_model in zip(self.averaged.module.buffers(), self.model.buffers(), strict=True):
                b_avg.copy_(b_model)
        self.count += 1
        self.averaged.n_averaged.fill_(self.count)

    # ------------------------------------------------------------ the trainer's hooks

    def after_update(self, step: int) -> None:
        """After optimizer update number `step` (1-based): EMA averages every `every_n_steps`."""
        if self.ema is not None and step % self.ema.every_n_steps == 0:
            self.update()

    def epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Before training epoch index `epoch` (0-based): SWA's LR takes over from `start_epoch`."""
        if self.swa is not None and self.swalr is None and epoch + 1 >= self.swa.start_epoch:
            self.swalr = self._swalr(optimizer)

    def epoch_end(self, epoch: int) -> None:
        """After training epoch index `epoch`, before its validation: SWA averages, then
        recomputes BatchNorm statistics for the averaged weights."""
        if self.swa is not None and epoch + 1 >= self.swa.start_epoch:
            self.update()
            self.update_bn()

    def lr_step(self) -> None:
        """At the end of an epoch in the SWA phase (instead of the config scheduler's `after_epoch`)."""
        assert self.swalr is not None
        self.swalr.step()

    def _swalr(self, optimizer: torch.optim.Optimizer) -> SWALR:
        return SWALR(optimizer, swa_lr=self.swa.lr, anneal_epochs=self.swa.anneal_epochs,
                     anneal_strategy=self.swa.anneal_strategy)

    def update_bn(self) -> None:
        """torch's `update_bn` on the averaged model: its BatchNorm statistics recomputed over
        the training split; under torchrun each rank's are averaged across the ranks."""
        if not self.has_bn or self.bn_batches is None:
            return
        torch.optim.swa_utils.update_bn(self.bn_batches(), self.averaged.module)
        world = distributed.world_size()
        if world > 1:
            stats = [
                t for m in self.averaged.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for t in (m.running_mean, m.running_var) if t is not None
            ]
            distributed.all_reduce_sum(*stats)
            for t in stats:
                t.div_(world)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Plain data (the averaged weights themselves are the checkpoint's `model`)."""
        return {
            "kind": self.kind,
            "n_averaged": self.count,
            "swalr": None if self.swalr is None else self.swalr.state_dict(),
        }

    def load_state_dict(
        self, state: dict[str, Any] | None, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
        saved_groups: list[dict[str, Any]],
    ) -> None:
        """Restores the average from a checkpoint: `state` its `averaging` entry (None: the run had
        no average, which starts now), `weights` its `model`, `saved_groups` its optimizer's
        param_groups (the LR and momentum SWALR had set, which the config's scheduler overwrote
        when it was restored)."""
        if state is None or state.get("kind") != self.kind:
            return
        self.count = int(state["n_averaged"])
        self.averaged.n_averaged.fill_(self.count)
        if self.count > 0:
            self.averaged.module.load_state_dict(weights)
        if state.get("swalr") is not None:
            self.swalr = self._swalr(optimizer)
            self.swalr.load_state_dict(state["swalr"])
            for group, saved in zip(optimizer.param_groups, saved_groups):
                for key in ("lr", "momentum", "betas"):
                    if key in saved:
                        group[key] = saved[key]
