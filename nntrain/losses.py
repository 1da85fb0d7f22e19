"""Losses by name, and the explicit L1/L2 penalties of the course."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nntrain.data.datasets import DataInfo
from nntrain.registries import LOSSES


_DEPRECATED = ("size_average", "reduce")  # torch's old spellings of `reduction`
LOSSES.register("cross_entropy", _DEPRECATED, "softmax cross-entropy on logits; label_smoothing in [0, 1]")(
    nn.CrossEntropyLoss
)
LOSSES.register("mse", _DEPRECATED, "mean squared error (one-hot targets on classification data)")(nn.MSELoss)
LOSSES.register("l1", _DEPRECATED, "mean absolute error")(nn.L1Loss)
LOSSES.register("smooth_l1", _DEPRECATED, "squared below beta, absolute above (Fast R-CNN)")(nn.SmoothL1Loss)
LOSSES.register("huber", note="squared below delta, linear above")(nn.HuberLoss)
LOSSES.register("bce_with_logits", _DEPRECATED, "sigmoid + binary cross-entropy, numerically stable")(
    nn.BCEWithLogitsLoss
)


@LOSSES.register("nll", _DEPRECATED)
class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood of log_softmax(outputs): models emit logits, so it equals cross-entropy."""

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(F.log_softmax(outputs, dim=-1), target)


# Losses that take class indices; the others get one-hot float targets on classification data.
_INDEX_TARGETS = {"cross_entropy", "nll"}


class _OneHotTargets(nn.Module):
    """Turns class indices into one-hot vectors for a regression-style loss (e.g. MSE on MNIST)."""

    def __init__(self, loss: nn.Module, num_classes: int):
        super().__init__()
        self.loss, self.num_classes = loss, num_classes

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, F.one_hot(target, self.num_classes).to(outputs.dtype))


def build_loss(spec: dict[str, Any], info: DataInfo) -> nn.Module:
    """Builds the `loss` section for data described by `info`."""
    if info.task != "classification" and spec["name"] in _INDEX_TARGETS:
        from nntrain.errors import ConfigError

        raise ConfigError(
            f"loss.name: '{spec['name']}' needs class labels but this is {info.task} data; "
            f"use mse, l1, smooth_l1 or huber" + (", or bce_with_logits on inputs in [0, 1]" if info.task == "reconstruction" else "")
        )
    loss = LOSSES.build(spec)
    if info.task == "classification" and spec["name"] not in _INDEX_TARGETS:
        loss = _OneHotTargets(loss, info.num_classes)
    return loss


def penalized_parameters(model: nn.Module, include_bias_and_norm: bool = False) -> list[nn.Parameter]:
    """Parameters that penalties and weight decay apply to: weights, not biases or norm scales (timm)."""
    return [
        p for p in model.parameters() if p.requires_grad and (include_bias_and_norm or p.ndim > 1)
    ]


def penalty(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """l1 * sum|w| + l2 * sum w^2 over `params`."""
    total = params[0].new_zeros(())
    for p in params:
        if l1:
            total = total + l1 * p.abs().sum()
        if l2:
            total = total + l2 * p.pow(2).sum()
    return total
