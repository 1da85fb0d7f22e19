"""Normalizers, fitted on the training split and applied to every split.

The augmentations (training split only) live in augment.py, which builds on this module.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nntrain.errors import DataError, Key
from nntrain.registries import NORMALIZERS

# Where a normalizer is usually configured; errors of `fit` name their argument under it.
NORMALIZE_KEY: Key = ("data", "normalize")

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

    def fit(self, x: torch.Tensor) -> Normalizer:
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

    def fit(self, x: torch.Tensor) -> Standardize:
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

    def fit(self, x: torch.Tensor) -> MinMax:
        low, high = _nan_min_max(x, _stat_dims(x))
        self.low, self.span = low[0], (high[0] - low[0]).clamp_min(self.eps)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low.to(x.device)) / self.span.to(x.device)


@NORMALIZERS.register("normalize")
class Normalize(Normalizer):
    """(x - mean) / std with given values per channel (images) or per feature; nothing is fitted.

    As torchvision's Normalize, e.g. MNIST's `mean: [0.1307], std: [0.3081]`; one value applies
    to every channel.
    """

    def __init__(
        self,
        mean: Annotated[list[float], Field(min_length=1)],
        std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)],
    ):
        self.mean_values, self.std_values = [float(v) for v in mean], [float(v) for v in std]

    def fit(self, x: torch.Tensor) -> Normalize:
        channels = x.shape[1] if x.dim() == 4 else x.shape[-1]
        for key, values in (("mean", self.mean_values), ("std", self.std_values)):
            if len(values) not in (1, channels):
                what = "channels" if x.dim() == 4 else "features"
                raise DataError(
                    f"{len(values)} values, but the data has {channels} {what} "
                    f"(give one value, or one per {what[:-1]})",
                    key=(*NORMALIZE_KEY, key),
                )
        shape = (-1, 1, 1) if x.dim() == 4 else (-1,)
        self.mean = torch.tensor(self.mean_values).view(shape)
        self.std = torch.tensor(self.std_values).view(shape)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


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

    def fit(self, x: torch.Tensor) -> Whiten:
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
