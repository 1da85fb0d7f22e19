"""Optimizers (torch built-ins by short name), parameter groups, and LR schedules."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import torch
from pydantic import Field
from torch import nn

from nntrain.losses import penalized_parameters
from nntrain.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")

OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("rmsprop")(torch.optim.RMSprop)
OPTIMIZERS.register("adagrad")(torch.optim.Adagrad)
OPTIMIZERS.register("adadelta")(torch.optim.Adadelta)


def param_groups(model: nn.Module, weight_decay: float, include_bias_and_norm: bool) -> list[dict]:
    """Two groups so weight decay skips biases and norm parameters, unless asked otherwise (timm)."""
    decay = penalized_parameters(model, include_bias_and_norm)
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def build_optimizer(
    spec: dict[str, Any], model: nn.Module, include_bias_and_norm: bool = False
) -> torch.optim.Optimizer:
    """Builds the `optimizer` section over `model`'s parameters."""
    weight_decay = spec.get("weight_decay", 0.0)
    groups = param_groups(model, weight_decay, include_bias_and_norm)
    return OPTIMIZERS.build(spec, params=groups)


class Schedule:
    """An LR scheduler and the unit it advances in.

    Args:
        scheduler: a torch LR scheduler.
        interval: "step" advances after every optimizer update, "epoch" after every epoch.
    """

    def __init__(self, scheduler: Any, interval: str):
        self.scheduler, self.interval = scheduler, interval

    def after_update(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


_RUNTIME = ("optimizer", "steps_per_epoch", "epochs")
PositiveInt = Annotated[int, Field(gt=0)]
Factor = Annotated[float, Field(gt=0.0, le=1.0)]


@SCHEDULERS.register("step", runtime=_RUNTIME)
def step(optimizer, steps_per_epoch, epochs, step_size: PositiveInt = 10, gamma: Factor = 0.1) -> Schedule:
    """Multiplies the LR by `gamma` every `step_size` epochs."""
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma), "epoch")


@SCHEDULERS.register("exponential", runtime=_RUNTIME)
def exponential(optimizer, steps_per_epoch, epochs, gamma: Factor = 0.9) -> Schedule:
    """Multiplies the LR by `gamma` after every epoch."""
    return Schedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def build_schedule(
    spec: Optional[dict[str, Any]], optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> Optional[Schedule]:
    """Builds the `scheduler` section; `steps_per_epoch` counts optimizer updates, not batches."""
    if spec is None:
        return None
    return SCHEDULERS.build(
        spec, optimizer=optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs
    )
