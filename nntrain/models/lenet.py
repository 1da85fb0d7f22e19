"""LeNet-5 (LeCun et al. 1998), with a choice of activation, pooling, dropout and batch norm."""

from collections import OrderedDict
from typing import Annotated, Any, Literal, Union

from pydantic import Field
from torch import nn

from nntrain.models import MODELS
from nntrain.models.init import apply_init, build_activation

Activation = Union[str, dict[str, Any]]


@MODELS.register("lenet")
def lenet(
    in_channels: Annotated[int, Field(gt=0)],
    image_size: Annotated[int, Field(ge=8)],
    num_classes: Annotated[int, Field(gt=0)],
    activation: Activation = "relu",
    pool: Literal["max", "avg"] = "max",
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
    batch_norm: bool = False,
    init: Activation | None = None,
) -> nn.Module:
    """conv5x5(6, pad 2) -> pool -> conv5x5(16) -> pool -> fc120 -> fc84 -> fc(num_classes)."""
    pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d

    def conv_block(i: int, c_in: int, c_out: int, padding: int) -> dict[str, nn.Module]:
        block: dict[str, nn.Module] = {f"conv{i}": nn.Conv2d(c_in, c_out, 5, padding=padding)}
        if batch_norm:
            block[f"bn{i}"] = nn.BatchNorm2d(c_out)
        return {**block, f"act{i}": build_activation(activation), f"pool{i}": pool_cls(2)}

    def fc_block(i: int, f_in: int, f_out: int) -> dict[str, nn.Module]:
        block: dict[str, nn.Module] = {f"fc{i}": nn.Linear(f_in, f_out)}
        if batch_norm:
            block[f"bn_fc{i}"] = nn.BatchNorm1d(f_out)
        block[f"act_fc{i}"] = build_activation(activation)
        if dropout > 0:
            block[f"drop{i}"] = nn.Dropout(dropout)
        return block

    # 28x28 -> 28 -> 14 -> 10 -> 5 (the original pads MNIST to 32x32; padding 2 does the same).
    side = ((image_size // 2) - 4) // 2
    layers = {
        **conv_block(1, in_channels, 6, padding=2),
        **conv_block(2, 6, 16, padding=0),
        "flatten": nn.Flatten(),
        **fc_block(1, 16 * side * side, 120),
        **fc_block(2, 120, 84),
        "out": nn.Linear(84, num_classes),
    }
    model = nn.Sequential(OrderedDict(layers))
    apply_init(model, init)
    return model
