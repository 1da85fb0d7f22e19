"""What a data source receives (`SourceContext`) and returns (`Splits`), and the seeded splits.

The source protocol itself is described in `nntrain.data.sources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import Field

from nntrain.data.info import DataInfo

# Argument types sources share; pydantic checks them when the config is validated.
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]

# Test splits that a source holds out itself are drawn with this fixed seed, so runs with
# different `seed`s are compared on the same test set.
TEST_SEED = 0


@dataclass(frozen=True)
class SourceContext:
    """The runtime arguments every source receives (as `context=`), never set by configs.

    Attributes:
        val_split: `data.val_split`, for sources that hold out their own validation split.
        seed: the run's seed (the random validation split depends on it).
        state: `DataInfo.source_state` of the run being evaluated (a vocabulary, a scaler), or
            None to fit it on the training split.
    """

    val_split: float = 0.1
    seed: int = 0
    state: dict[str, Any] | None = None


# The context of a source built on its own (tests, `nntrain list`): defaults, nothing restored.
DEFAULT_CONTEXT = SourceContext()


@dataclass
class Splits:
    """Tensors of a data source, before the validation split and normalization.

    A source that must split chronologically, or fit something on the training split only,
    gives its own validation split in `x_val`/`y_val`; otherwise `build_data` holds out
    `data.val_split` of the training split at random (`holdout`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    info: DataInfo
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


def permutation(n: int, seed: int) -> torch.Tensor:
    """A random order of range(n), a function of `seed` alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded validation split of n samples: (kept, held) indices, each in ascending order.

    At least one sample is held out. `build_data` splits every source this way; a source that
    needs its validation split before fitting (text_csv's vocabulary) calls it itself.
    """
    order = permutation(n, seed)
    n_held = max(1, round(fraction * n))
    return order[n_held:].sort().values, order[:n_held].sort().values
