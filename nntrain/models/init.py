"""Activations and weight-initialization schemes, by name."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from nntrain.registries import ACTIVATIONS, INITS

ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("leaky_relu")(nn.LeakyReLU)
ACTIVATIONS.register("prelu")(nn.PReLU)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("gelu", bounds={"approximate": Literal["none", "tanh"]})(nn.GELU)
ACTIVATIONS.register("silu")(nn.SiLU)
ACTIVATIONS.register("swish", note="alias of silu")(nn.SiLU)
ACTIVATIONS.register("mish")(nn.Mish)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)


ACTIVATIONS.set_checks(dry_build=ACTIVATIONS.build)
INITS.set_checks(dry_build=lambda spec: INITS.build(spec, weight=torch.empty(4, 4)))


def as_spec(value: str | dict[str, Any]) -> dict[str, Any]:
    """`relu` or `{name: leaky_relu, negative_slope: 0.1}` -> a component mapping."""
    return {"name": value} if isinstance(value, str) else dict(value)


def build_activation(value: str | dict[str, Any]) -> nn.Module:
    return ACTIVATIONS.build(as_spec(value))


@INITS.register("xavier_uniform", runtime=("weight",))
def xavier_uniform(weight: torch.Tensor, gain: float = 1.0) -> None:
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    nn.init.xavier_uniform_(weight, gain=gain)


@INITS.register("xavier_normal", runtime=("weight",))
def xavier_normal(weight: torch.Tensor, gain: float = 1.0) -> None:
    """Glorot normal: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(weight, gain=gain)


@INITS.register("kaiming_uniform", runtime=("weight",))
def kaiming_uniform(
    weight: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "relu"
) -> None:
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan_mode)."""
    nn.init.kaiming_uniform_(weight, a=a, mode=mode, nonlinearity=nonlinearity)


@INITS.register("kaiming_normal", runtime=("weight",))
def kaiming_normal(
    weight: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "relu"
) -> None:
    """He normal: N(0, gain^2 / fan_mode)."""
    nn.init.kaiming_normal_(weight, a=a, mode=mode, nonlinearity=nonlinearity)


@INITS.register("orthogonal", runtime=("weight",))
def orthogonal(weight: torch.Tensor, gain: float = 1.0) -> None:
    """Orthogonal matrix (Saxe et al.); delta-orthogonal for convolutions (Xiao et al. 2018)."""
    if weight.dim() > 2:
        # Delta-orthogonal: an orthogonal matrix at the kernel centre, zeros elsewhere.
        with torch.no_grad():
            weight.zero_()
            centre = tuple(k // 2 for k in weight.shape[2:])
            matrix = torch.empty(weight.shape[0], weight.shape[1])
            nn.init.orthogonal_(matrix, gain=gain)
            weight[(slice(None), slice(None), *centre)] = matrix
    else:
        nn.init.orthogonal_(weight, gain=gain)


@INITS.register("normal", runtime=("weight",))
def normal(weight: torch.Tensor, mean: float = 0.0, std: float = 0.01) -> None:
    """N(mean, std^2)."""
    nn.init.normal_(weight, mean=mean, std=std)


@INITS.register("uniform", runtime=("weight",))
def uniform(weight: torch.Tensor, a: float = -0.05, b: float = 0.05) -> None:
    """U(a, b)."""
    nn.init.uniform_(weight, a=a, b=b)


@INITS.register("zeros", runtime=("weight",))
def zeros(weight: torch.Tensor) -> None:
    """All zeros (for biases; a network of zero weights cannot learn)."""
    nn.init.zeros_(weight)


@INITS.register("constant", runtime=("weight",))
def constant(weight: torch.Tensor, val: float = 0.0) -> None:
    """Every entry equal to `val`."""
    nn.init.constant_(weight, val)


def apply_init(model: nn.Module, init: str | dict[str, Any] | None) -> None:
    """Initializes every linear, convolution and recurrent weight of `model`; biases get zeros.

    `None` keeps torch's defaults.
    """
    if init is None:
        return
    spec = as_spec(init)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
            INITS.build(spec, weight=module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            for pname, p in module.named_parameters():
                if pname.startswith("weight"):
                    INITS.build(spec, weight=p)
                else:
                    nn.init.zeros_(p)

