"""Autoencoders (`autoencoder`) and classifiers on an encoder (`encoder_classifier`), for transfer.

Both build their `.encoder` with the same function, so an `encoder_classifier` with the same
`variant`, `latent_dim`, `hidden` and `activation` as a trained `autoencoder` can take its
weights: `model.init_from: {checkpoint: runs/ae/.../best.pt, component: encoder, freeze: true}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import torch
from pydantic import Field
from torch import nn

from nntrain.errors import ConfigError
from nntrain.models import MODELS
from nntrain.models.init import apply_init, build_activation

PositiveInt = Annotated[int, Field(gt=0)]
Activation = Union[str, dict[str, Any]]
Variant = Literal["mlp", "conv"]

_DEFAULT_HIDDEN = {"mlp": [256, 128], "conv": [32, 64]}


def _conv_sides(image_size: int, layers: int) -> list[int]:
    """Feature-map sides after each stride-2, 3x3, padding-1 convolution."""
    sides = [image_size]
    for _ in range(layers):
        sides.append((sides[-1] - 1) // 2 + 1)
    return sides


def _check(variant: str, in_channels: int | None, image_size: int | None, hidden: list[int]) -> None:
    if variant == "conv" and (in_channels is None or image_size is None):
        raise ConfigError(
            "'conv' needs square images (N, C, H, W) as inputs; use variant: mlp for other data",
            key=("model", "variant"),
        )
    if not hidden:
        raise ConfigError("give at least one layer width (mlp) or channel count (conv)", key=("model", "hidden"))


def build_encoder(
    variant: str, in_features: int, in_channels: int | None, image_size: int | None,
    latent_dim: int, hidden: list[int], activation: Activation,
) -> nn.Sequential:
    """mlp: Flatten -> [Linear -> act] * len(hidden) -> Linear(latent_dim).

    conv: [Conv3x3 stride 2 -> act] * len(hidden) -> Flatten -> Linear(latent_dim).
    """
    layers: list[nn.Module] = []
    if variant == "mlp":
        layers.append(nn.Flatten())
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), build_activation(activation)]
            width = h
    else:
        channels = in_channels
        for c in hidden:
            layers += [nn.Conv2d(channels, c, 3, stride=2, padding=1), build_activation(activation)]
            channels = c
        side = _conv_sides(image_size, len(hidden))[-1]
        layers.append(nn.Flatten())
        width = channels * side * side
    layers.append(nn.Linear(width, latent_dim))
    return nn.Sequential(*layers)


def build_decoder(
    variant: str, in_features: int, in_channels: int | None, image_size: int | None,
    latent_dim: int, hidden: list[int], activation: Activation,
) -> nn.Sequential:
    """The encoder's mirror image; its last layer is linear (logits or values, no activation)."""
    layers: list[nn.Module] = []
    if variant == "mlp":
        width = latent_dim
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), build_activation(activation)]
            width = h
        layers.append(nn.Linear(width, in_features))
        return nn.Sequential(*layers)
    sides = _conv_sides(image_size, len(hidden))
    layers += [
        nn.Linear(latent_dim, hidden[-1] * sides[-1] ** 2),
        build_activation(activation),
        nn.Unflatten(1, (hidden[-1], sides[-1], sides[-1])),
    ]
    outs = [*reversed(hidden[:-1]), in_channels]
    for i, (c_in, c_out) in enumerate(zip(reversed(hidden), outs)):
        side_in, side_out = sides[-1 - i], sides[-2 - i]
        # output_padding picks the side the matching convolution came from (even or odd).
        layers.append(
            nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=side_out - (2 * side_in - 1))
        )
        if i < len(hidden) - 1:
            layers.append(build_activation(activation))
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """x -> `.encoder` -> latent code -> `.decoder` -> reconstruction of x's shape.

    With `noise_std` > 0 it is a denoising autoencoder: Gaussian noise is added to the inputs in
    training mode only, and the target stays the clean input.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, noise_std: float = 0.0):
        super().__init__()
        self.encoder, self.decoder, self.noise_std = encoder, decoder, noise_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return self.decoder(self.encoder(x)).reshape(x.shape)


class EncoderClassifier(nn.Module):
    """x -> `.encoder` -> latent code -> `.head` (an MLP, or one linear layer: a linear probe)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@MODELS.register("autoencoder")
def autoencoder(
    in_features: PositiveInt,
    in_channels: PositiveInt | None = None,
    image_size: PositiveInt | None = None,
    variant: Variant = "mlp",
    latent_dim: PositiveInt = 32,
    hidden: list[PositiveInt] | None = None,
    activation: Activation = "relu",
    noise_std: Annotated[float, Field(ge=0.0)] = 0.0,
    init: Activation | None = None,
) -> nn.Module:
    """Encoder to `latent_dim`, symmetric decoder; `hidden` widths (mlp, default [256, 128]) or
    channels (conv, default [32, 64]).

    Train with `data.task: reconstruction` and loss `mse`, or `bce_with_logits` on inputs in [0, 1].
    """
    hidden = list(hidden) if hidden is not None else _DEFAULT_HIDDEN[variant]
    _check(variant, in_channels, image_size, hidden)
    args = (variant, in_features, in_channels, image_size, latent_dim, hidden, activation)
    model = AutoEncoder(build_encoder(*args), build_decoder(*args), noise_std)
    apply_init(model, init)
    return model


@MODELS.register("encoder_classifier")
def encoder_classifier(
    in_features: PositiveInt,
    num_classes: PositiveInt,
    in_channels: PositiveInt | None = None,
    image_size: PositiveInt | None = None,
    variant: Variant = "mlp",
    latent_dim: PositiveInt = 32,
    hidden: list[PositiveInt] | None = None,
    activation: Activation = "relu",
    head_hidden: list[PositiveInt] = [],
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
    init: Activation | None = None,
) -> nn.Module:
    """An autoencoder's `.encoder` (same arguments) and a classifier `.head` on its latent code.

    `head_hidden: []` makes the head one linear layer (a linear probe). Load a pretrained
    encoder with `init_from: {checkpoint: ..., component: encoder}`.
    """
    hidden = list(hidden) if hidden is not None else _DEFAULT_HIDDEN[variant]
    _check(variant, in_channels, image_size, hidden)
    encoder = build_encoder(variant, in_features, in_channels, image_size, latent_dim, hidden, activation)
    drop = lambda: [nn.Dropout(dropout)] if dropout > 0 else []  # noqa: E731
    layers: list[nn.Module] = drop()
    width = latent_dim
    for h in head_hidden:
        layers += [nn.Linear(width, h), build_activation(activation), *drop()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    model = EncoderClassifier(encoder, nn.Sequential(*layers))
    apply_init(model, init)
    return model
