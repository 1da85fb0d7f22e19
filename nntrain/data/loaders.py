"""In-memory data: validation split, normalization and batching by index slicing."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from nntrain.data.datasets import DATASETS, DataInfo
from nntrain.data.transforms import NORMALIZERS, Normalizer
from nntrain.errors import DataError


class TensorLoader:
    """Batches of (x, y) sliced from tensors; the order of epoch e is a function of (seed, e).

    Because the order is derived, not stored, a resumed run can start an epoch at any batch.
    Under data-parallel training each of `world` ranks takes every `world`-th sample of the
    epoch's order (as torch's DistributedSampler does, padding by repetition so that every rank
    has as many batches); without shuffling, rank r simply gets samples r, r + world, ...
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        if world > 1 and not shuffle:
            x, y = x[rank::world], y[rank::world]
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world = rank, world
        self.num_samples = -(-len(x) // world) if shuffle else len(x)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_sizes(self) -> list[int]:
        n, b = self.num_samples, self.batch_size
        return [min(b, n - i * b) for i in range(len(self))]

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields the batches of `epoch`, beginning at batch index `start`."""
        b = self.batch_size
        if not self.shuffle:
            for i in range(start, len(self)):
                yield self.x[i * b : (i + 1) * b], self.y[i * b : (i + 1) * b]
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.x), generator=gen)
        if self.world > 1:
            padding = self.num_samples * self.world - len(order)
            order = torch.cat([order, order[:padding]])[self.rank :: self.world]
        order = order.to(self.x.device)
        for i in range(start, len(self)):
            idx = order[i * b : (i + 1) * b]
            yield self.x[idx], self.y[idx]


@dataclass
class Data:
    """The splits as tensors, plus what the trainer and checkpoints need to know about them."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: Optional[tuple[torch.Tensor, torch.Tensor]]
    test: Optional[tuple[torch.Tensor, torch.Tensor]]
    info: DataInfo
    normalizer: Optional[Normalizer]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = getattr(self, name)
        if tensors is None:
            from nntrain.errors import ConfigError

            raise ConfigError(f"split '{name}' is empty for this config (val_split 0 or no test set)")
        return tensors

    def to(self, device: torch.device) -> "Data":
        def move(t: Optional[tuple[torch.Tensor, torch.Tensor]]) -> Any:
            if t is None:
                return None
            x = t[0].to(device)
            return x, x if t[1] is t[0] else t[1].to(device)  # reconstruction: one copy, not two

        self.train, self.val, self.test = move(self.train), move(self.val), move(self.test)
        return self


def build_data(
    cfg: Any,
    seed: int,
    normalizer_state: Optional[dict[str, torch.Tensor]] = None,
    source_state: Optional[dict[str, Any]] = None,
) -> Data:
    """Loads `cfg.dataset`, holds out `cfg.val_split` of training (seeded) and normalizes.

    Sources that give their own validation split (chronological, or needed before fitting a
    vocabulary) keep it. With `cfg.task: reconstruction` the target of every split is its input.

    Args:
        cfg: the `data` section.
        seed: the run's seed; the validation split depends on it only.
        normalizer_state: statistics from a checkpoint; if None they are fitted on the training split.
        source_state: `DataInfo.source_state` from a checkpoint (a vocabulary, a scaler), for
            sources that fit something on their training split; None fits it again.
    """
    name = cfg.dataset.name
    accepted = inspect.signature(DATASETS.get(name)).parameters
    runtime = {"val_split": cfg.val_split, "seed": seed, "state": source_state}
    splits = DATASETS.build(cfg.dataset, **{k: v for k, v in runtime.items() if k in accepted})
    x, y = splits.x_train, splits.y_train
    val = None
    if splits.x_val is not None:
        val = (splits.x_val, splits.y_val)
    elif cfg.val_split > 0:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(cfg.val_split * len(x)))
        val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
        val = (x[val_idx], y[val_idx])
        x, y = x[train_idx], y[train_idx]
    test = None if splits.x_test is None else (splits.x_test, splits.y_test)

    normalizer = None
    if cfg.normalize is not None:
        if not x.is_floating_point():
            raise DataError(
                f"data.normalize: '{name}' gives token ids ({x.dtype}), which can't be normalized; remove data.normalize"
            )
        normalizer = NORMALIZERS.build(cfg.normalize)
        if normalizer_state is None:
            normalizer.fit(x)
        else:
            normalizer.load_state_dict(normalizer_state)
        norm = lambda t: None if t is None else (normalizer(t[0]), t[1])  # noqa: E731
        (x, y), val, test = norm((x, y)), norm(val), norm(test)
    info = splits.info
    if getattr(cfg, "task", None) == "reconstruction":
        # The target is the (normalized) input; augmentations later change only the input.
        same = lambda t: None if t is None else (t[0], t[0])  # noqa: E731
        (x, y), val, test = same((x, y)), same(val), same(test)
        info = dataclasses.replace(
            info, task="reconstruction", num_classes=None, classes=None, output_size=None,
            target_shift=None, target_scale=None,
        )
    elif info.task == "unlabeled":
        raise DataError(f"data.dataset: '{name}' has no labels (y_key: null); set data.task: reconstruction")
    return Data((x, y), val, test, info, normalizer)
