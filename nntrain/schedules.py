"""LR schedules: one `Schedule` per run, advanced per optimizer update or per epoch.

Every LR schedule is one `Schedule`: the LR of each update is a function of the updates and epochs
done (plus, for plateau schedules, the plateau counters), all kept in `state_dict()`, so a resumed
run continues with identical LRs. Warmup is a parameter of every schedule, plateau ones included.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional

import torch
from pydantic import Field

from nntrain.config import Monitor
from nntrain.errors import CheckpointError, ConfigError, RunError
from nntrain.metrics import monitor_mode, monitorable
from nntrain.registries import SCHEDULERS


class Warmup:
    """The first `steps` optimizer updates: the LR ramps from `start_factor` x the schedule's first LR.

    Args:
        steps: warmup length in optimizer updates (0: no warmup).
        start_factor: LR multiplier at update 0.
        mode: "linear" ramps to 1 over `steps` updates; "constant" holds `start_factor` until the end.
    """

    def __init__(self, steps: int, start_factor: float, mode: str):
        self.steps, self.start_factor, self.mode = steps, start_factor, mode

    def factor(self, update: int) -> float:
        """LR multiplier of update `update` (0-based); 1.0 once warmup is over."""
        if update >= self.steps:
            return 1.0
        if self.mode == "constant":
            return self.start_factor
        return self.start_factor + (1.0 - self.start_factor) * update / self.steps


class Plateau:
    """ReduceLROnPlateau's rule, as torch defines it: after more than `patience` epochs without an
    improvement of the monitored metric, the LR is multiplied by `factor` (never below `min_lr`),
    then `cooldown` epochs pass before counting resumes."""

    def __init__(self, monitor: str, mode: str, factor: float, patience: int, threshold: float,
                 threshold_mode: str, cooldown: int, min_lr: float):
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, factor, patience
        self.threshold, self.threshold_mode, self.cooldown, self.min_lr = threshold, threshold_mode, cooldown, min_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def improved(self, value: float) -> bool:
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if rel else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if rel else self.best + self.threshold)

    def step(self, value: float) -> bool:
        """Records one epoch's metric (NaN never improves); True when the LR must be reduced now."""
        if self.improved(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown don't count
        if self.num_bad_epochs > self.patience:
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
            return True
        return False

    def reduce(self, lr: float) -> float:
        new = max(lr * self.factor, self.min_lr)
        return new if lr - new > 1e-8 else lr  # torch's eps: ignore reductions too small to matter

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]
        self.cooldown_counter = state["cooldown_counter"]


# (base_lr, t, e) -> lr, where t counts optimizer updates after warmup and e epochs completed after it.
LrFn = Callable[[float, int, int], float]


class Schedule:
    """Sets every parameter group's LR (and momentum, for onecycle) from the run's progress.

    The LR of update u (0-based) is a pure function of the state, so a checkpoint restores it exactly:
    while u < W (warmup updates) it is `warmup.factor(u)` x the schedule's first LR; afterwards the
    schedule takes over from its start, with t = u - W updates and e = epochs that ended after warmup
    (an epoch made only of warmup updates doesn't count, neither for decay nor for plateau patience).

    Args:
        optimizer: its groups' `lr` at construction are the base LRs.
        interval: "step" (advances per optimizer update) or "epoch": the schedule's unit, for previews.
        warmup: the warmup (may have 0 steps).
        lr_fn: the schedule after warmup; None for plateau schedules.
        plateau: the plateau rule of reduce_on_plateau and newbob.
        momentum_fn: t -> momentum, for onecycle's cycling; applied to groups with momentum > 0 or betas.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, interval: str, warmup: Warmup,
                 lr_fn: LrFn | None = None, plateau: Plateau | None = None,
                 momentum_fn: Callable[[int], float] | None = None):
        self.optimizer, self.interval, self.warmup = optimizer, interval, warmup
        self.lr_fn, self.plateau, self.momentum_fn = lr_fn, plateau, momentum_fn
        # torch's convention: `initial_lr` survives a second schedule built on the same optimizer.
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.plateau_lrs = list(self.base_lrs)
        self.updates = 0  # optimizer updates done
        self.epochs = 0  # epochs done
        self.epochs_after_warmup = 0
        self._momentum_keys = [
            "betas" if "betas" in g else "momentum" if g.get("momentum", 0) > 0 else None
            for g in optimizer.param_groups
        ] if momentum_fn is not None else []
        self._apply()

    def lr(self, group: int = 0) -> float:
        """The LR the next optimizer update of parameter group `group` uses."""
        base, t = self.base_lrs[group], self.updates - self.warmup.steps
        if t < 0:
            first = base if self.lr_fn is None else self.lr_fn(base, 0, 0)
            return self.warmup.factor(self.updates) * first
        if self.lr_fn is None:
            return self.plateau_lrs[group]
        return self.lr_fn(base, t, self.epochs_after_warmup)

    def momentum(self) -> float | None:
        """The cycled momentum (SGD momentum or Adam beta1) for the next update; None if not cycled."""
        if self.momentum_fn is None:
            return None
        return self.momentum_fn(max(0, self.updates - self.warmup.steps))

    def _apply(self) -> None:
        momentum = self.momentum()
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr(i)
            key = self._momentum_keys[i] if momentum is not None else None
            if key == "betas":
                group["betas"] = (momentum, *group["betas"][1:])
            elif key == "momentum":
                group["momentum"] = momentum

    def seek(self, updates: int) -> None:
        """Continues from update `updates` (a resume with another number of updates per epoch)."""
        self.updates = updates
        self._apply()

    def after_update(self) -> None:
        """Called after every optimizer update (not every batch: accumulation never stretches it)."""
        self.updates += 1
        self._apply()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        """Called after every epoch with its metrics ("train/loss", "val/loss", "val/acc", "lr")."""
        self.epochs += 1
        if self.updates > self.warmup.steps:
            self.epochs_after_warmup += 1
            if self.plateau is not None:
                if self.plateau.monitor not in metrics:
                    raise RunError(
                        f"'{self.plateau.monitor}' is not recorded by this run "
                        f"(recorded: {', '.join(sorted(metrics))})", key=("scheduler", "monitor")
                    )
                if self.plateau.step(float(metrics[self.plateau.monitor])):
                    self.plateau_lrs = [self.plateau.reduce(lr) for lr in self.plateau_lrs]
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """Plain data (loads with weights_only=True); the LRs follow from it exactly."""
        return {
            "updates": self.updates,
            "epochs": self.epochs,
            "epochs_after_warmup": self.epochs_after_warmup,
            "base_lrs": list(self.base_lrs),
            "plateau_lrs": list(self.plateau_lrs),
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "updates" not in state:
            raise CheckpointError("the checkpoint's scheduler state is from an older nntrain; it cannot resume")
        self.updates, self.epochs = state["updates"], state["epochs"]
        self.epochs_after_warmup = state["epochs_after_warmup"]
        self.base_lrs, self.plateau_lrs = list(state["base_lrs"]), list(state["plateau_lrs"])
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])
        self._apply()


# ---------------------------------------------------------------- the SCHEDULERS registry
#
# Builders receive the optimizer, `steps_per_epoch` (optimizer updates per epoch: batches divided by
# train.accumulate) and `epochs`; the run has steps_per_epoch * epochs updates. Units: per-step
# schedules (cosine, linear, onecycle, and every warmup) advance once per optimizer update;
# step, multistep, exponential and the plateau ones once per epoch.

_RUNTIME = ("optimizer", "steps_per_epoch", "epochs")
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
Factor = Annotated[float, Field(gt=0.0, le=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
WarmupSteps = Optional[NonNegInt]
WarmupEpochs = Optional[NonNegFloat]
WarmupMode = Literal["linear", "constant"]
Mode = Optional[Literal["min", "max"]]

_WARMUP_DOC = """
        warmup_steps: warmup length in optimizer updates (give this or warmup_epochs).
        warmup_epochs: warmup length in epochs, converted to updates (rounded); may be fractional.
        warmup_start_factor: the LR starts at this fraction of the schedule's first LR.
        warmup_mode: linear (ramp to the full LR by the end of warmup) or constant (hold, then jump)."""


def _warmup(steps_per_epoch: int, steps: int | None, epochs: float | None, start_factor: float,
            mode: str) -> Warmup:
    if steps is not None and epochs is not None:
        raise ValueError("give warmup_steps or warmup_epochs, not both")
    return Warmup(steps if steps is not None else round((epochs or 0.0) * steps_per_epoch), start_factor, mode)


def _span(steps_per_epoch: int, epochs: int, warmup: Warmup) -> int:
    """Optimizer updates the schedule runs for after warmup."""
    return max(1, steps_per_epoch * epochs - warmup.steps)


def _documented(fn: Callable) -> Callable:
    fn.__doc__ = (fn.__doc__ or "").rstrip() + _WARMUP_DOC + "\n"
    return fn


@SCHEDULERS.register("step", runtime=_RUNTIME)
@_documented
def step(optimizer, steps_per_epoch, epochs, step_size: PositiveInt = 10, gamma: Factor = 0.1,
         warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
         warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per epoch: multiplies the LR by `gamma` every `step_size` epochs.

    Args:
        step_size: epochs between decays.
        gamma: LR multiplier at each decay."""
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    return Schedule(optimizer, "epoch", warmup, lambda base, t, e: base * gamma ** (e // step_size))


@SCHEDULERS.register("multistep", runtime=_RUNTIME)
@_documented
def multistep(optimizer, steps_per_epoch, epochs, milestones: list[PositiveInt], gamma: Factor = 0.1,
              warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
              warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per epoch: multiplies the LR by `gamma` at each epoch in `milestones`.

    Args:
        milestones: increasing epoch counts (after warmup) at which the LR decays.
        gamma: LR multiplier at each milestone."""
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"milestones must be increasing (got {milestones})")
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    return Schedule(
        optimizer, "epoch", warmup, lambda base, t, e: base * gamma ** bisect.bisect_right(milestones, e)
    )


@SCHEDULERS.register("exponential", runtime=_RUNTIME)
@_documented
def exponential(optimizer, steps_per_epoch, epochs, gamma: Factor = 0.9,
                warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
                warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per epoch: multiplies the LR by `gamma` after every epoch.

    Args:
        gamma: LR multiplier per epoch."""
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    return Schedule(optimizer, "epoch", warmup, lambda base, t, e: base * gamma**e)


@SCHEDULERS.register("cosine", runtime=_RUNTIME)
@_documented
def cosine(optimizer, steps_per_epoch, epochs, min_lr: NonNegFloat = 0.0,
           warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
           warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per update: cosine decay from the LR to `min_lr` over the rest of the run after warmup.

    Args:
        min_lr: the LR at the end of the run (absolute)."""
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    span = _span(steps_per_epoch, epochs, warmup)

    def lr(base: float, t: int, e: int) -> float:
        return min_lr + (base - min_lr) * (1 + math.cos(math.pi * min(t / span, 1.0))) / 2

    return Schedule(optimizer, "step", warmup, lr)


@SCHEDULERS.register("linear", runtime=_RUNTIME)
@_documented
def linear(optimizer, steps_per_epoch, epochs, min_lr: NonNegFloat | None = None,
           end_factor: Fraction | None = None,
           warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
           warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per update: linear decay from the LR to a floor over the rest of the run after warmup.

    Args:
        min_lr: the floor as an absolute LR, or
        end_factor: the floor as a fraction of the LR (default 0.0 when neither is given)."""
    if min_lr is not None and end_factor is not None:
        raise ValueError("give min_lr or end_factor, not both")
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    span = _span(steps_per_epoch, epochs, warmup)

    def lr(base: float, t: int, e: int) -> float:
        floor = min_lr if min_lr is not None else base * (end_factor or 0.0)
        return base + (floor - base) * min(t / span, 1.0)

    return Schedule(optimizer, "step", warmup, lr)


def _anneal(start: float, end: float, pct: float, strategy: str) -> float:
    if strategy == "cos":
        return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2
    return start + (end - start) * pct


def _two_phases(t: int, end1: float, end2: float, values: tuple[float, float, float], strategy: str) -> float:
    """torch's OneCycleLR interpolation: values[0] -> values[1] until update `end1`, then -> values[2]."""
    if t <= end1:
        return _anneal(values[0], values[1], t / end1 if end1 > 0 else 1.0, strategy)
    pct = (t - end1) / (end2 - end1) if end2 > end1 else 1.0
    return _anneal(values[1], values[2], min(pct, 1.0), strategy)


@SCHEDULERS.register("onecycle", runtime=_RUNTIME)
@_documented
def onecycle(optimizer, steps_per_epoch, epochs, max_lr: Annotated[float, Field(gt=0.0)] | None = None,
             pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3,
             anneal_strategy: Literal["cos", "linear"] = "cos",
             div_factor: Annotated[float, Field(gt=0.0)] = 25.0,
             final_div_factor: Annotated[float, Field(gt=0.0)] = 1e4,
             cycle_momentum: bool = True, base_momentum: Fraction = 0.85, max_momentum: Fraction = 0.95,
             warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
             warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per update: torch's OneCycleLR over the run: LR up to `max_lr`, then far below the start.

    The LR rises from max_lr/div_factor to max_lr over the first `pct_start` of the updates, then
    anneals to max_lr/(div_factor*final_div_factor); momentum (SGD momentum > 0, RMSprop momentum > 0,
    Adam-family beta1) cycles the opposite way, max_momentum -> base_momentum -> max_momentum.
    It has its own warm-up phase: an extra warmup_* ramp (to max_lr/div_factor) is rarely wanted.

    Args:
        max_lr: the peak LR (default: the optimizer's lr).
        pct_start: fraction of the updates spent rising.
        anneal_strategy: cos or linear interpolation.
        div_factor: initial LR = max_lr / div_factor.
        final_div_factor: final LR = initial LR / final_div_factor.
        cycle_momentum: cycle momentum / beta1 inversely to the LR.
        base_momentum: momentum at the LR peak.
        max_momentum: momentum at the start and the end."""
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    span = _span(steps_per_epoch, epochs, warmup)
    end1, end2 = pct_start * span - 1, span - 1

    def lr(base: float, t: int, e: int) -> float:
        peak = max_lr if max_lr is not None else base
        start = peak / div_factor
        return _two_phases(t, end1, end2, (start, peak, start / final_div_factor), anneal_strategy)

    def momentum(t: int) -> float:
        return _two_phases(t, end1, end2, (max_momentum, base_momentum, max_momentum), anneal_strategy)

    return Schedule(optimizer, "step", warmup, lr, momentum_fn=momentum if cycle_momentum else None)


@SCHEDULERS.register("reduce_on_plateau", runtime=_RUNTIME)
@_documented
def reduce_on_plateau(optimizer, steps_per_epoch, epochs, monitor: Monitor = "val/loss", mode: Mode = None,
                      factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1, patience: NonNegInt = 10,
                      threshold: NonNegFloat = 1e-4, threshold_mode: Literal["rel", "abs"] = "rel",
                      cooldown: NonNegInt = 0, min_lr: NonNegFloat = 0.0,
                      warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
                      warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per epoch: multiplies the LR by `factor` when `monitor` stops improving (torch's rule).

    Epochs that end inside the warmup are not counted.

    Args:
        monitor: the metric watched (train/loss, val/loss or val/acc).
        mode: min or max (default: max for accuracies, min for losses).
        factor: LR multiplier at each reduction.
        patience: epochs without improvement tolerated; the LR drops on the next one.
        threshold: smallest change that counts as an improvement.
        threshold_mode: rel (threshold is a fraction of the best value) or abs.
        cooldown: epochs after a reduction during which nothing is counted.
        min_lr: the LR never goes below this (absolute)."""
    warmup = _warmup(steps_per_epoch, warmup_steps, warmup_epochs, warmup_start_factor, warmup_mode)
    plateau = Plateau(monitor, monitor_mode(monitor, mode), factor, patience, threshold, threshold_mode,
                      cooldown, min_lr)
    return Schedule(optimizer, "epoch", warmup, plateau=plateau)


@SCHEDULERS.register("newbob", runtime=_RUNTIME)
@_documented
def newbob(optimizer, steps_per_epoch, epochs, monitor: Monitor = "val/loss", mode: Mode = None,
           factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5, threshold: NonNegFloat = 0.0,
           min_lr: NonNegFloat = 0.0,
           warmup_steps: WarmupSteps = None, warmup_epochs: WarmupEpochs = None,
           warmup_start_factor: Fraction = 0.1, warmup_mode: WarmupMode = "linear") -> Schedule:
    """Per epoch: halves the LR after every epoch where `monitor` did not improve (plateau, patience 0).

    Args:
        monitor: the metric watched (default val/loss).
        mode: min or max (default: max for accuracies, min for losses).
        factor: LR multiplier at each reduction.
        threshold: smallest relative improvement that counts.
        min_lr: the LR never goes below this (absolute)."""
    return reduce_on_plateau(
        optimizer, steps_per_epoch, epochs, monitor, mode, factor, patience=0, threshold=threshold,
        threshold_mode="rel", cooldown=0, min_lr=min_lr, warmup_steps=warmup_steps,
        warmup_epochs=warmup_epochs, warmup_start_factor=warmup_start_factor, warmup_mode=warmup_mode,
    )


def _dry_build(spec: dict[str, Any]) -> Schedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1, momentum=0.9)
    return SCHEDULERS.build(spec, optimizer=optimizer, steps_per_epoch=10, epochs=2)


SCHEDULERS.set_checks(dry_build=_dry_build)


def build_schedule(
    spec: dict[str, Any] | None, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> Schedule | None:
    """Builds the `scheduler` section; `steps_per_epoch` counts optimizer updates, not batches."""
    if spec is None:
        return None
    schedule = SCHEDULERS.build(spec, optimizer=optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs)
    total = steps_per_epoch * epochs
    if schedule.warmup.steps > total:
        raise ConfigError(
            f"the warmup ({schedule.warmup.steps} optimizer updates) is longer than the run "
            f"({total} updates = {epochs} epochs x {steps_per_epoch} updates per epoch); "
            f"shorten warmup_steps/warmup_epochs or train longer", key=("scheduler",)
        )
    return schedule


def preview_schedule(
    spec: dict[str, Any] | None, optimizer_spec: dict[str, Any], steps_per_epoch: int, epochs: int
) -> tuple[list[tuple[int, int, float, float | None]], int]:
    """(update, epoch, lr, momentum) for every optimizer update of a run, and the warmup's length.

    Simulated on a throwaway optimizer; momentum is SGD's momentum or Adam's beta1 (None without one).

    Plateau schedules see the same metric values after every epoch, i.e. they never improve after the
    first post-warmup epoch: the LR drops as early as the rule allows (the lowest LR curve possible).
    """
    from nntrain.optim import OPTIMIZERS

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = OPTIMIZERS.build(optimizer_spec, params=[weight])
    schedule = build_schedule(spec, optimizer, steps_per_epoch, epochs)
    flat = dict.fromkeys(monitorable(), 1.0)
    rows = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            group = optimizer.param_groups[0]
            momentum = group["betas"][0] if "betas" in group else group.get("momentum")
            rows.append((len(rows), epoch, group["lr"], momentum))
            if schedule is not None:
                schedule.after_update()
        if schedule is not None:
            schedule.after_epoch({**flat, "lr": optimizer.param_groups[0]["lr"]})
    return rows, 0 if schedule is None else schedule.warmup.steps
