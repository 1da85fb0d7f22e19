"""Normalizers (fitted on the training split) and batched, on-device augmentations."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nntrain.registry import Registry

NORMALIZERS = Registry("normalizer")
AUGMENTATIONS = Registry("augmentation")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _stat_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Images (N, C, H, W): one statistic per channel. Sequences (N, T, F): one per feature over
    all time steps. Tabular (N, F): one per feature."""
    return {4: (0, 2, 3), 3: (0, 1)}.get(x.dim(), (0,))


# The statistics skip NaN: variable-length sequences are padded with NaN rows (DataInfo).
def _nan_mean_std(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.nanmean(dim=dims, keepdim=True)
    count = (~x.isnan()).sum(dim=dims, keepdim=True)
    var = (x - mean).pow(2).nansum(dim=dims, keepdim=True) / (count - 1).clamp_min(1)
    return mean, var.sqrt()


def _nan_min_max(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    nan = x.isnan()
    low = x.masked_fill(nan, float("inf")).amin(dim=dims, keepdim=True)
    high = x.masked_fill(nan, float("-inf")).amax(dim=dims, keepdim=True)
    return low, high


class Normalizer:
    """Base: `fit` on training inputs, then `__call__` on any split; state goes in checkpoints."""

    def fit(self, x: torch.Tensor) -> "Normalizer":
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@NORMALIZERS.register("standardize")
class Standardize(Normalizer):
    """(x - mean) / std, per channel for images and per feature otherwise."""

    def __init__(self, eps: Annotated[float, Field(gt=0)] = 1e-8):
        self.eps = eps

    def fit(self, x: torch.Tensor) -> "Standardize":
        mean, std = _nan_mean_std(x, _stat_dims(x))
        self.mean, self.std = mean[0], std[0].clamp_min(self.eps)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


@NORMALIZERS.register("minmax")
class MinMax(Normalizer):
    """(x - min) / (max - min), into [0, 1], per channel for images and per feature otherwise."""

    def __init__(self, eps: Annotated[float, Field(gt=0)] = 1e-8):
        self.eps = eps

    def fit(self, x: torch.Tensor) -> "MinMax":
        low, high = _nan_min_max(x, _stat_dims(x))
        self.low, self.span = low[0], (high[0] - low[0]).clamp_min(self.eps)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low.to(x.device)) / self.span.to(x.device)


@NORMALIZERS.register("whiten")
class Whiten(Normalizer):
    """PCA or ZCA whitening: decorrelated features of unit variance (covariance ~ identity).

    Each sample is one vector (images and tabular data); sequences (N, T, F) are whitened per
    time step over their F features. `pca` rotates onto the principal axes (x - mean) U S^-1/2;
    `zca` rotates back, (x - mean) U S^-1/2 U^T, so the result stays close to the input
    (images still look like images). `epsilon` is added to the eigenvalues: it bounds the
    amplification of low-variance directions (noise).
    """

    def __init__(self, method: Literal["pca", "zca"] = "zca", epsilon: Annotated[float, Field(ge=0)] = 1e-5):
        self.method, self.epsilon = method, epsilon

    @staticmethod
    def _rows(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]) if x.dim() == 3 else x.reshape(len(x), -1)

    def fit(self, x: torch.Tensor) -> "Whiten":
        rows = self._rows(x).double()
        rows = rows[~rows.isnan().any(dim=1)]  # padding rows of variable-length sequences
        mean = rows.mean(dim=0)
        centred = rows - mean
        cov = centred.T @ centred / max(len(rows) - 1, 1)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        matrix = eigvecs / (eigvals.clamp_min(0) + self.epsilon).sqrt()
        if self.method == "zca":
            matrix = matrix @ eigvecs.T
        self.mean, self.matrix = mean.float(), matrix.float()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._rows(x)
        out = (rows - self.mean.to(x.device)) @ self.matrix.to(x.device)
        return out.reshape(x.shape)


# Augmentations: callables on a whole batch (N, C, H, W) on its device, drawing from `generator`.


@AUGMENTATIONS.register("random_crop", runtime=("generator",))
class RandomCrop:
    """Pads by `padding`, then crops `size` x `size` at a random offset per sample."""

    def __init__(
        self,
        generator: torch.Generator,
        size: Annotated[int, Field(gt=0)],
        padding: Annotated[int, Field(ge=0)] = 0,
        padding_mode: Literal["constant", "reflect", "replicate", "circular"] = "constant",
    ):
        self.generator, self.size, self.padding, self.mode = generator, size, padding, padding_mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p), mode=self.mode)
        n, _, h, w = x.shape
        gen = self.generator
        top = torch.randint(0, h - self.size + 1, (n,), generator=gen, device=gen.device)
        left = torch.randint(0, w - self.size + 1, (n,), generator=gen, device=gen.device)
        ar = torch.arange(self.size, device=x.device)
        rows = (top.to(x.device)[:, None] + ar)[:, None, :, None]  # (N, 1, S, 1)
        cols = (left.to(x.device)[:, None] + ar)[:, None, None, :]  # (N, 1, 1, S)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[batch, channel, rows, cols]


@AUGMENTATIONS.register("horizontal_flip", runtime=("generator",))
class HorizontalFlip:
    """Mirrors each sample left-right with probability `p`."""

    def __init__(self, generator: torch.Generator, p: Probability = 0.5):
        self.generator, self.p = generator, p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = self.generator
        flip = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) < self.p
        return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


@AUGMENTATIONS.register("gaussian_noise", runtime=("generator",))
class GaussianNoise:
    """Adds N(0, std^2) noise to every input value."""

    def __init__(self, generator: torch.Generator, std: Annotated[float, Field(ge=0)] = 0.1):
        self.generator, self.std = generator, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gen = self.generator
        noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype)
        return x + self.std * noise.to(x.device)
