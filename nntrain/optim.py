"""Optimizers (torch built-ins by short name) and parameter groups; LR schedules are in schedules.py."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from nntrain.losses import NonNegative, penalized_parameters
from nntrain.registries import OPTIMIZERS

# torch's annotations say `float`; these are the ranges its constructors enforce.
_BOUNDS = {
    **{k: NonNegative for k in ("lr", "momentum", "dampening", "weight_decay", "eps", "alpha", "lr_decay",
                                "initial_accumulator_value")},
    "betas": tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]],
    "rho": Annotated[float, Field(ge=0.0, le=1.0)],
}
_INTERNAL = ("capturable", "differentiable")  # torch internals, not training choices


def _register(name: str, note: str, cls: type) -> None:
    OPTIMIZERS.register(name, _INTERNAL, note, _BOUNDS)(cls)


_register("sgd", "SGD; momentum and nesterov for the heavy-ball and Nesterov variants", torch.optim.SGD)
_register("adam", "Adam (Kingma & Ba); amsgrad for AMSGrad", torch.optim.Adam)
_register("adamw", "Adam with decoupled weight decay (Loshchilov & Hutter)", torch.optim.AdamW)
_register("rmsprop", "RMSProp (Hinton): divides by a running RMS of gradients", torch.optim.RMSprop)
_register("adagrad", "Adagrad (Duchi et al.): per-parameter LR from summed squares", torch.optim.Adagrad)
_register("adadelta", "Adadelta (Zeiler): LR-free running-average updates", torch.optim.Adadelta)


OPTIMIZERS.set_checks(
    # torch checks its ranges when it builds: on a throwaway parameter, before any data loads
    dry_build=lambda spec: OPTIMIZERS.build(spec, params=[torch.nn.Parameter(torch.zeros(2, 2))]),
    stand_ins={"lr": ("auto", 1e-3)},  # `lr: auto`: chosen by an LR range test before training
)


def param_groups(model: nn.Module, weight_decay: float, include_bias_and_norm: bool) -> list[dict]:
    """Two groups so weight decay skips biases and norm parameters, unless asked otherwise (timm).

    Without weight decay there is one group: each group costs the optimizer its own kernel launches.
    """
    if not weight_decay:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]
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
