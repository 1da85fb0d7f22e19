"""Optimizers (torch built-ins by short name) and parameter groups; LR schedules are in schedules.py."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nntrain.losses import penalized_parameters
from nntrain.registries import OPTIMIZERS


_INTERNAL = ("capturable", "differentiable")  # torch internals, not training choices
OPTIMIZERS.register("sgd", _INTERNAL, "SGD; momentum and nesterov for the heavy-ball and Nesterov variants")(
    torch.optim.SGD
)
OPTIMIZERS.register("adam", _INTERNAL, "Adam (Kingma & Ba); amsgrad for AMSGrad")(torch.optim.Adam)
OPTIMIZERS.register("adamw", _INTERNAL, "Adam with decoupled weight decay (Loshchilov & Hutter)")(torch.optim.AdamW)
OPTIMIZERS.register("rmsprop", _INTERNAL, "RMSProp (Hinton): divides by a running RMS of gradients")(
    torch.optim.RMSprop
)
OPTIMIZERS.register("adagrad", _INTERNAL, "Adagrad (Duchi et al.): per-parameter LR from summed squares")(
    torch.optim.Adagrad
)
OPTIMIZERS.register("adadelta", _INTERNAL, "Adadelta (Zeiler): LR-free running-average updates")(
    torch.optim.Adadelta
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
