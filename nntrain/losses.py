"""Losses by name, and the explicit L1/L2 penalties of the course."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import nn

from nntrain.data.balance import class_counts, inverse_frequency, per_class
from nntrain.data.info import DataInfo
from nntrain.errors import ConfigError
from nntrain.registries import LOSSES


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


# For torch's built-ins, whose annotations say `float` only: the ranges torch enforces (or trips on).
NonNegative = Annotated[float, AfterValidator(_non_negative)]
_BOUNDS = {
    "label_smoothing": Annotated[float, Field(ge=0.0, le=1.0)],
    "delta": Annotated[float, Field(gt=0.0)],  # huber
    "beta": NonNegative,  # smooth_l1
    "reduction": Literal["mean", "sum"],  # "none" gives a loss per sample, which training can't use
}
# Per-class weights for imbalanced classes (`weight` of cross_entropy, nll and bce_with_logits,
# `pos_weight` of bce_with_logits): `auto` (from the training split's class counts), a list with
# one number per class, or a mapping by class name or index (classes not named get 1).
def _class_weights(value: Any) -> Any:
    """`auto`, a list of numbers >= 0, or a mapping class -> number >= 0 (ValueError otherwise)."""
    if value is None or value == "auto":
        return value
    numbers = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if numbers is None:
        raise ValueError("expected auto, a list with one number per class, or a mapping class -> number")
    for v in numbers:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"every weight must be a number >= 0, which {v!r} is not")
    if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
        raise ValueError("class names must be strings")
    return value


ClassWeights = Optional[Annotated[Any, AfterValidator(_class_weights)]]
CLASS_WEIGHT_KEYS = ("weight", "pos_weight")
_BOUNDS.update(dict.fromkeys(CLASS_WEIGHT_KEYS, ClassWeights))

_DEPRECATED = ("size_average", "reduce")  # torch's old spellings of `reduction`
LOSSES.register("cross_entropy", _DEPRECATED, "softmax cross-entropy on logits; label_smoothing in [0, 1]; "
                "weight: auto, a list or {class: w} for imbalanced classes",
                _BOUNDS)(nn.CrossEntropyLoss)
LOSSES.register("mse", _DEPRECATED, "mean squared error (one-hot targets on classification data)", _BOUNDS)(
    nn.MSELoss
)
LOSSES.register("l1", _DEPRECATED, "mean absolute error", _BOUNDS)(nn.L1Loss)
LOSSES.register("smooth_l1", _DEPRECATED, "squared below beta, absolute above (Fast R-CNN)", _BOUNDS)(
    nn.SmoothL1Loss
)
LOSSES.register("huber", note="squared below delta, linear above", bounds=_BOUNDS)(nn.HuberLoss)
LOSSES.register("bce_with_logits", _DEPRECATED, "sigmoid + binary cross-entropy, numerically stable; "
                "pos_weight / weight: auto, a list or {class: w}", _BOUNDS)(
    nn.BCEWithLogitsLoss
)


@LOSSES.register("nll", _DEPRECATED, "negative log-likelihood of log_softmax(outputs) (= cross_entropy); "
                 "weight: auto, a list or {class: w}", _BOUNDS)
class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood of log_softmax(outputs): models emit logits, so it equals cross-entropy."""

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(F.log_softmax(outputs, dim=-1), target)


def _dry_build(spec: dict[str, Any]) -> nn.Module:
    """Builds `spec` with its class weights left out: they are resolved against the data (`build_loss`)."""
    return LOSSES.build({k: v for k, v in spec.items() if k not in CLASS_WEIGHT_KEYS})


LOSSES.set_checks(dry_build=_dry_build)

# Losses that take class indices; the others get one-hot float targets on classification data.
_INDEX_TARGETS = {"cross_entropy", "nll"}


class _OneHotTargets(nn.Module):
    """Turns class indices into one-hot vectors for a regression-style loss (e.g. MSE on MNIST)."""

    def __init__(self, loss: nn.Module, num_classes: int):
        super().__init__()
        self.loss, self.num_classes = loss, num_classes

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, F.one_hot(target, self.num_classes).to(outputs.dtype))


def build_loss(
    spec: dict[str, Any],
    info: DataInfo,
    targets: torch.Tensor | None = None,
    stored: dict[str, list[float]] | None = None,
) -> nn.Module:
    """Builds the `loss` section for data described by `info`.

    Args:
        spec: the `loss` section.
        info: the data's DataInfo.
        targets: the training split's class indices, for `weight: auto` / `pos_weight: auto`.
        stored: class weights resolved before (a checkpoint's `class_weights`): `auto` takes these,
            so `nntrain eval` weighs classes as training did.

    The resolved per-class weights are on the returned module as `class_weights` ({} if none).
    """
    if info.task != "classification" and spec["name"] in _INDEX_TARGETS:
        bce = ", or bce_with_logits on inputs in [0, 1]" if info.task == "reconstruction" else ""
        raise ConfigError(
            f"'{spec['name']}' needs class labels but this is {info.task} data; use mse, l1, smooth_l1 or huber{bce}",
            key=("loss", "name"),
        )
    weights = class_weights(spec, info, targets, stored)
    loss = LOSSES.build({**spec, **{k: torch.tensor(v) for k, v in weights.items()}})
    if info.task == "classification" and spec["name"] not in _INDEX_TARGETS:
        loss = _OneHotTargets(loss, info.num_classes)
    loss.class_weights = weights
    return loss


def class_weights(
    spec: dict[str, Any],
    info: DataInfo,
    targets: torch.Tensor | None = None,
    stored: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """The loss's per-class weights (`weight`, `pos_weight`) as one number per class.

    `weight: auto` is n / (k * n_c) (n training samples, k classes, n_c of class c: 1 for every class
    of a balanced split); `pos_weight: auto` is (n - n_c) / n_c, positives against negatives, as
    torch's BCEWithLogitsLoss documents it. On data without classes only a plain list is taken
    (torch's own broadcasting applies).
    """
    out: dict[str, list[float]] = {}
    for name in CLASS_WEIGHT_KEYS:
        value, key = spec.get(name), ("loss", name)
        if value is None:
            continue
        if info.task != "classification":
            if value == "auto" or isinstance(value, dict):
                raise ConfigError(f"'auto' and class names need class labels, but this is {info.task} data; "
                                  f"give a list of numbers", key=key)
            out[name] = [float(v) for v in value]
            continue
        classes = info.classes or [str(i) for i in range(info.num_classes)]
        if value == "auto":
            if stored and name in stored:
                out[name] = [float(v) for v in stored[name]]
                continue
            if targets is None:
                raise ConfigError("'auto' needs the training split's labels", key=key)
            counts = class_counts(targets, len(classes))
            empty = [classes[i] for i in (counts == 0).nonzero().flatten().tolist()]
            if empty:
                raise ConfigError(f"'auto' weighs classes by their training samples, but class '{empty[0]}' has "
                                  f"none; give the weights as a list or mapping", key=key)
            n = counts.sum()
            weights = inverse_frequency(counts) if name == "weight" else (n - counts) / counts
            out[name] = weights.tolist()
        else:
            out[name] = per_class(value, classes, key)
        if name == "weight" and not any(out[name]):
            raise ConfigError("every class has weight 0: nothing would be learned", key=key)
    return out


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
