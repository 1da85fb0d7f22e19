"""Multi-layer perceptron: the course's first network."""

from collections import OrderedDict
from typing import Annotated, Any, Union

from pydantic import Field
from torch import nn

from nntrain.models import MODELS
from nntrain.models.init import apply_init, build_activation

Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Activation = Union[str, dict[str, Any]]


@MODELS.register("mlp")
def mlp(
    in_features: Annotated[int, Field(gt=0)],
    num_classes: Annotated[int, Field(gt=0)],
    hidden: list[Annotated[int, Field(gt=0)]] = [128],
    activation: Activation = "relu",
    dropout: Dropout = 0.0,
    batch_norm: bool = False,
    init: Activation | None = None,
) -> nn.Module:
    """Flatten -> [Linear -> (BatchNorm) -> activation -> (Dropout)] * len(hidden) -> Linear."""
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    width = in_features
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
        layers[f"act{i}"] = build_activation(activation)
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, num_classes)
    model = nn.Sequential(OrderedDict(layers))
    apply_init(model, init)
    return model
