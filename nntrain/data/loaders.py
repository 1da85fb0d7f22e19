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

    Tensors that live on the host while training runs on `device` (data too big for GPU memory)
    are gathered batch by batch into pinned buffers and copied without blocking, one batch ahead
    (`_Stager`); otherwise batches are sliced where the tensors are, with no copy at all.
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
        device: Optional[torch.device] = None,
    ):
        if world > 1 and not shuffle:
            same = y is x
            x = x[rank::world]
            y = x if same else y[rank::world]  # reconstruction: keep the target the input itself
        self.x, self.y = x, y
        device = torch.device(device) if device is not None else x.device
        self.stager = _Stager(x, y, batch_size, device) if device.type != x.device.type else None
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
            order = None
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.x), generator=gen)
            if self.world > 1:
                padding = self.num_samples * self.world - len(order)
                order = torch.cat([order, order[:padding]])[self.rank :: self.world]
            order = order.to(self.x.device)
        # A slice is a view (no copy); a shuffled batch is gathered by index.
        batches = (
            slice(i * b, (i + 1) * b) if order is None else order[i * b : (i + 1) * b]
            for i in range(start, len(self))
        )
        if self.stager is not None:
            yield from self._staged(batches)
            return
        for rows in batches:
            if self.y is self.x:  # reconstruction: the target is the input, gathered once
                xb = self.x[rows]
                yield xb, xb
            else:
                yield self.x[rows], self.y[rows]

    def _staged(self, batches: Iterator[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Host batches, each staged one batch ahead of its use (its copy overlaps the step before)."""
        pending = None
        for rows in batches:
            staged = self.stager.stage(rows)
            if pending is not None:
                yield self.stager.ready(pending)
            pending = staged
        if pending is not None:
            yield self.stager.ready(pending)


class _Stager:
    """Host-resident batches to the device: gather into pinned memory, copy without blocking.

    Two pinned buffers alternate. `TensorLoader` stages batch i+1 (gather, then queue its copy)
    before handing out batch i, so the copy overlaps the computation of batch i. On CUDA the copies
    run on a side stream; `ready` makes the compute stream wait for a batch's copy only when that
    batch is used, and `record_stream` keeps the allocator from reusing its memory too early. A
    buffer is refilled only after its previous copy (two batches back) is done, so the host waits
    on a copy, never on the computation. Elsewhere (and in tests on the CPU) the same gathering
    runs with plain copies.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device):
        self.x, self.y, self.device = x, y, device
        self.cuda = device.type == "cuda"
        self.same = y is x  # reconstruction: the target is the input, copied once
        rows = min(batch_size, len(x))
        sources = (x,) if self.same else (x, y)
        # Only these buffers are pinned (pinning needs an accelerator), never the whole data set.
        self.buffers = [
            [torch.empty((rows, *t.shape[1:]), dtype=t.dtype, pin_memory=self.cuda) for t in sources]
            for _ in range(2)
        ]
        self.turn = 0
        if self.cuda:
            self.stream = torch.cuda.Stream(device)
            self.copied = [torch.cuda.Event(), torch.cuda.Event()]  # each buffer's last copy

    def stage(self, rows: slice | torch.Tensor) -> tuple[list[torch.Tensor], Any]:
        """Gathers `rows` into the next buffer and queues its copy; returns (tensors, copy event)."""
        turn, self.turn = self.turn, 1 - self.turn
        if self.cuda:
            self.copied[turn].synchronize()  # the copy out of this buffer, two batches ago
        batch = []
        for t, buffer in zip((self.x, self.y), self.buffers[turn]):
            if isinstance(rows, slice):
                src = t[rows]
                dst = torch.narrow(buffer, 0, 0, len(src))
                dst.copy_(src)
            else:
                dst = torch.narrow(buffer, 0, 0, len(rows))
                torch.index_select(t, 0, rows, out=dst)
            batch.append(dst)
        if not self.cuda:
            return [b.to(self.device, copy=True) for b in batch], None
        with torch.cuda.stream(self.stream):
            out = [b.to(self.device, non_blocking=True) for b in batch]
        self.copied[turn].record(self.stream)
        return out, self.copied[turn]

    def ready(self, staged: tuple[list[torch.Tensor], Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A staged batch, safe to use on the current stream."""
        out, copied = staged
        if copied is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(copied)  # queued on the device: the host doesn't wait
            for t in out:
                t.record_stream(compute)  # its memory is reused only once compute is done with it
        return (out[0], out[0]) if self.same else (out[0], out[1])


@dataclass
class Data:
    """The splits as tensors, plus what the trainer and checkpoints need to know about them."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: Optional[tuple[torch.Tensor, torch.Tensor]]
    test: Optional[tuple[torch.Tensor, torch.Tensor]]
    info: DataInfo
    normalizer: Optional[Normalizer]
    device: Optional[torch.device] = None  # where training runs, once set by `to` (tensors may stay on the host)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = getattr(self, name)
        if tensors is None:
            from nntrain.errors import ConfigError

            raise ConfigError(f"split '{name}' is empty for this config (val_split 0 or no test set)")
        return tensors

    def nbytes(self) -> int:
        splits = [t for t in (self.train, self.val, self.test) if t is not None]
        return sum(x.nbytes + (0 if y is x else y.nbytes) for x, y in splits)

    def to(self, device: torch.device, resident: bool = True) -> "Data":
        """Trains on `device`; `resident` moves the tensors there once, else they stay on the host
        (in pageable memory: loaders stage their batches through small pinned buffers)."""
        self.device = device
        if not resident:
            return self

        def each(t: Optional[tuple[torch.Tensor, torch.Tensor]]) -> Any:
            if t is None:
                return None
            x = t[0].to(device)
            return x, x if t[1] is t[0] else t[1].to(device)  # reconstruction: one copy, not two

        self.train, self.val, self.test = each(self.train), each(self.val), each(self.test)
        return self


def _normalizer_spec(cfg: Any) -> tuple[Any, str]:
    """The normalizer to apply and its config key: `data.normalize`, or a `normalize` listed in
    `data.augment` (torchvision habit; it isn't random, so it applies to every split)."""
    augment = getattr(cfg, "augment", [])
    listed = [i for i, spec in enumerate(augment) if spec.name == "normalize"]
    if not listed:
        return cfg.normalize, "data.normalize"
    i = listed[0]
    if cfg.normalize is not None or len(listed) > 1:
        other = "data.normalize" if cfg.normalize is not None else f"data.augment.{listed[1]}"
        raise DataError(f"data.augment.{i}: normalize is given twice (also as {other}); keep one")
    return augment[i], f"data.augment.{i}"


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
        if len(x) == 0:
            raise DataError(
                f"data.val_split: '{name}' has {n_val} samples; holding out {n_val} for validation leaves "
                f"none to train on (lower val_split, or give more data)"
            )
    if len(x) == 0:
        raise DataError(f"data.dataset: '{name}' gives no training samples")
    test = None if splits.x_test is None else (splits.x_test, splits.y_test)

    normalizer = None
    spec, key = _normalizer_spec(cfg)
    if spec is not None:
        if not x.is_floating_point():
            raise DataError(f"{key}: '{name}' gives token ids ({x.dtype}), which can't be normalized; remove it")
        normalizer = NORMALIZERS.build(spec)
        if normalizer_state is None:
            try:
                normalizer.fit(x)
            except DataError as exc:
                raise DataError(str(exc).replace("data.normalize", key, 1)) from None
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
    elif info.task == "classification" and (info.num_classes or 0) < 2:
        hint = " (for a regression target, set data.dataset.task: regression)" if "task" in accepted else ""
        raise DataError(
            f"data.dataset: '{name}' gives one class ({', '.join(info.classes or ['?'])}); classification "
            f"needs at least 2{hint}"
        )
    elif info.task == "unlabeled":
        raise DataError(f"data.dataset: '{name}' has no labels (y_key: null); set data.task: reconstruction")
    return Data((x, y), val, test, info, normalizer)
