"""In-memory data: validation split, normalization and batching by index slicing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from nntrain import memory
from nntrain.data.balance import subsample_classes
from nntrain.data.info import DataInfo
from nntrain.data.sources import DATASETS
from nntrain.data.splits import SourceContext, holdout
from nntrain.data.transforms import NORMALIZE_KEY, NORMALIZERS, Normalizer
from nntrain.errors import ConfigError, DataError, Key


class TensorLoader:
    """Batches of (x, y) sliced from tensors; the order of epoch e is a function of (seed, e).

    Because the order is derived, not stored, a resumed run can start an epoch at any batch.
    Under data-parallel training each of `world` ranks takes every `world`-th sample of the
    epoch's order (as torch's DistributedSampler does, padding by repetition so that every rank
    has as many batches); without shuffling, rank r gets samples r, r + world, ... (padded alike
    for training; `even=False` for evaluation, which must count every sample once).

    Tensors that live on the host while training runs on `device` (data too big for GPU memory)
    are gathered batch by batch into pinned buffers and copied without blocking, one batch ahead
    (`_Stager`); otherwise batches are sliced where the tensors are, with no copy at all.

    `min_batch` is the fewest samples a batch can train on (2 for a model whose batch norm sees one
    value per channel per sample: `min_train_batch`): a last batch smaller than that joins the
    batch before it (that batch is larger by at most `min_batch - 1`), so every sample is still
    used each epoch. A split or batch size that can't give such batches is a DataError or ConfigError.
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
        device: torch.device | None = None,
        even: bool = True,
        weights: torch.Tensor | None = None,
        min_batch: int = 1,
    ):
        # `weights` (the balanced sampler, one per sample): each epoch draws len(x) samples with
        # replacement, with these probabilities (`torch.multinomial` seeded from seed and epoch).
        self.weights = None if weights is None else weights.detach().double().cpu()
        shuffle = shuffle or weights is not None
        if world > 1 and not shuffle:
            # Rank r takes samples r, r + world, ...; `even` (training) pads the shards by repetition
            # to one length, as the shuffled path does: every rank runs as many updates, or the
            # others would wait in an all-reduce. Evaluation counts each sample once (`even=False`).
            rows = torch.arange(len(x))
            if even:
                padding = -(-len(x) // world) * world - len(x)
                rows = torch.cat([rows, rows[:padding]])
            rows = rows[rank::world].to(x.device)
            same = y is x
            x = x[rows]
            y = x if same else y[rows]  # reconstruction: keep the target the input itself
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world, self.min_batch = rank, world, min_batch
        self.num_samples = -(-len(x) // world) if shuffle else len(x)
        _check_min_batch(self.num_samples, batch_size, min_batch, world)
        device = torch.device(device) if device is not None else x.device
        largest = batch_size + min_batch - 1  # a short last batch merged into the one before
        self.stager = _Stager(x, y, largest, device) if device.type != x.device.type else None

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        if self.drop_last or (full and rest < self.min_batch):
            return full  # a last batch too small to train on joins the one before (min_batch)
        return full + (rest > 0)

    def _bounds(self, i: int) -> tuple[int, int]:
        """Where batch `i` starts and ends in the epoch's order: the last one runs to the end."""
        b = self.batch_size
        last = i == len(self) - 1 and not self.drop_last
        return i * b, self.num_samples if last else (i + 1) * b

    def updates_per_epoch(self, accumulate: int = 1) -> int:
        """Optimizer updates per epoch: one per `accumulate` batches, and one for a short last group.

        The one owner of this count (schedules, `check --plot-lr`, lr-find and progress ask it):
        under torchrun it counts this rank's shard, not the whole training split.
        """
        return -(-len(self) // accumulate)

    def batch_sizes(self) -> list[int]:
        return [end - start for start, end in map(self._bounds, range(len(self)))]

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields the batches of `epoch`, beginning at batch index `start`."""
        if not self.shuffle:
            order = None
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if self.weights is None:
                order = torch.randperm(len(self.x), generator=gen)
            else:  # the balanced sampler: every rank draws the same order and takes its share
                order = torch.multinomial(self.weights, self.num_samples * self.world, replacement=True, generator=gen)
            if self.world > 1:
                padding = self.num_samples * self.world - len(order)
                order = torch.cat([order, order[:padding]])[self.rank :: self.world]
            order = order.to(self.x.device)
        # A slice is a view (no copy); a shuffled batch is gathered by index.
        bounds = map(self._bounds, range(start, len(self)))
        batches = (slice(first, end) if order is None else order[first:end] for first, end in bounds)
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


def _check_min_batch(samples: int, batch_size: int, min_batch: int, world: int) -> None:
    """Batches of at least `min_batch` samples (batch norm in training): the batch size and the
    samples of this process must allow them."""
    if min_batch <= 1:
        return
    why = "the model's batch norm needs more than one value per channel to train (here one per sample)"
    if batch_size < min_batch:
        raise ConfigError(f"{batch_size}: {why}; use a batch size of {min_batch} or more", key=("data", "batch_size"))
    if samples < min_batch:
        each = " per process" if world > 1 else ""
        raise DataError(
            f"{samples} training sample{'s' if samples != 1 else ''}{each}: {why}; give at least {min_batch}"
            f"{each}", key=("data", "dataset"),
        )


def min_train_batch(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The fewest samples a training batch of `model` may hold: 2 when one of its batch-norm layers
    sees a single value per channel per sample (BatchNorm1d after a Linear), which torch refuses
    for a batch of one in training; else 1. Found with hooks on two samples `x[:2]` (eval mode, no grad)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 1
    per_sample: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _, args: per_sample.append(args[0][0].numel() // args[0].shape[1]))
             for m in norms]
    was_training = model.training
    device = next(iter([*model.parameters(), *model.buffers()]), x).device
    try:
        model.eval()
        with torch.no_grad():
            model(x[:2].to(device))
    except Exception:  # noqa: BLE001 - the probe is a hint: merging a short last batch is always safe
        return 2
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return 2 if not per_sample or min(per_sample) <= 1 else 1


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
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor] | None
    info: DataInfo
    normalizer: Normalizer | None
    device: torch.device | None = None  # where training runs, once set by `to` (tensors may stay on the host)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = getattr(self, name)
        if tensors is None:
            raise ConfigError(f"split '{name}' is empty for this config (val_split 0 or no test set)")
        return tensors

    def nbytes(self) -> int:
        splits = [t for t in (self.train, self.val, self.test) if t is not None]
        return sum(x.nbytes + (0 if y is x else y.nbytes) for x, y in splits)

    def to(self, device: torch.device, resident: bool = True) -> Data:
        """Trains on `device`; `resident` moves the tensors there once, else they stay on the host
        (in pageable memory: loaders stage their batches through small pinned buffers)."""
        self.device = device
        if not resident:
            return self

        def each(t: tuple[torch.Tensor, torch.Tensor] | None) -> Any:
            if t is None:
                return None
            x = t[0].to(device)
            return x, x if t[1] is t[0] else t[1].to(device)  # reconstruction: one copy, not two

        self.train, self.val, self.test = each(self.train), each(self.val), each(self.test)
        return self


def normalizer_spec(cfg: Any) -> tuple[Any, Key]:
    """The normalizer to apply and its config key: `data.normalize`, or a `normalize` listed in
    `data.augment` (torchvision habit; it isn't random, so it applies to every split)."""
    augment = getattr(cfg, "augment", [])
    listed = [i for i, spec in enumerate(augment) if spec.name == "normalize"]
    if not listed:
        return cfg.normalize, NORMALIZE_KEY
    i = listed[0]
    if cfg.normalize is not None or len(listed) > 1:
        other = "data.normalize" if cfg.normalize is not None else f"data.augment.{listed[1]}"
        raise DataError(f"normalize is given twice (also as {other}); keep one", key=("data", "augment", i))
    return augment[i], ("data", "augment", i)


def build_data(
    cfg: Any,
    seed: int,
    normalizer_state: dict[str, torch.Tensor] | None = None,
    source_state: dict[str, Any] | None = None,
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
    context = SourceContext(val_split=cfg.val_split, seed=seed, state=source_state)
    try:
        splits = DATASETS.build(cfg.dataset, context=context)
    except (MemoryError, RuntimeError) as exc:  # sources estimate first where they can; this is the rest
        if not memory.is_out_of_memory(exc):
            raise
        have, what = memory.host_memory()
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(
            f"'{name}' does not fit in memory ({detail})" + (f"; {what} {memory.format_bytes(have)}" if have else ""),
            key=("data", "dataset"),
        ) from None
    (x, y), val = _train_val(splits, cfg.val_split, seed, name)
    fractions = getattr(cfg, "class_fraction", None)
    if fractions:  # after the validation hold-out: only the training split loses samples
        if splits.info.task != "classification":
            raise ConfigError(
                f"'{name}' gives {splits.info.task} data, which has no classes", key=("data", "class_fraction")
            )
        classes = splits.info.classes or [str(i) for i in range(splits.info.num_classes)]
        x, y = subsample_classes(x, y, fractions, classes, seed)
    test = None if splits.x_test is None else (splits.x_test, splits.y_test)
    for split, tensors in (("validation", val), ("test", test)):
        _check_agrees(split, tensors, (x, y), name)
    normalizer = _normalizer(cfg, x, normalizer_state, name)
    if normalizer is not None:
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
    else:
        _check_labelled(info, name)
    return Data((x, y), val, test, info, normalizer)


Pair = tuple[torch.Tensor, torch.Tensor]


def _train_val(splits: Any, val_split: float, seed: int, name: str) -> tuple[Pair, Pair | None]:
    """The training and validation tensors: the source's own validation split, or `holdout`'s."""
    x, y = splits.x_train, splits.y_train
    val = None
    if splits.x_val is not None:
        val = (splits.x_val, splits.y_val)
    elif val_split > 0:
        kept, held = holdout(len(x), val_split, seed)
        val, (x, y) = (x[held], y[held]), (x[kept], y[kept])
        if len(x) == 0:
            raise DataError(
                f"'{name}' has {len(held)} samples; holding out {len(held)} for validation "
                f"leaves none to train on (lower val_split, or give more data)",
                key=("data", "val_split"),
            )
    if len(x) == 0:
        raise DataError(f"'{name}' gives no training samples", key=("data", "dataset"))
    return (x, y), val


def _check_agrees(split: str, tensors: Pair | None, train: Pair, name: str) -> None:
    """A split's samples and targets must pair up and have the training ones' shape and type."""
    if tensors is None:
        return
    (x, y), (x_train, y_train) = tensors, train
    if len(x) != len(y):
        raise DataError(f"'{name}' gives {len(x)} {split} inputs but {len(y)} {split} targets", key=("data", "dataset"))
    for what, a, b in (("inputs", x, x_train), ("targets", y, y_train)):
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            raise DataError(
                f"'{name}' gives {split} {what} of shape {tuple(a.shape[1:])} ({a.dtype}), "
                f"but training {what} of shape {tuple(b.shape[1:])} ({b.dtype})",
                key=("data", "dataset"),
            )


def _normalizer(cfg: Any, x: torch.Tensor, state: dict[str, torch.Tensor] | None, name: str) -> Normalizer | None:
    """The configured normalizer, fitted on the training inputs `x` or restored from `state`."""
    spec, key = normalizer_spec(cfg)
    if spec is None:
        return None
    if not x.is_floating_point():
        raise DataError(f"'{name}' gives token ids ({x.dtype}), which can't be normalized; remove it", key=key)
    normalizer = NORMALIZERS.build(spec)
    if state is not None:
        normalizer.load_state_dict(state)
        return normalizer
    try:
        normalizer.fit(x)
    except DataError as exc:  # its key is under data.normalize: move it to where this one is configured
        if exc.key is None or exc.key[: len(NORMALIZE_KEY)] != NORMALIZE_KEY:
            raise
        raise DataError(exc.message, key=key + exc.key[len(NORMALIZE_KEY) :]) from None
    return normalizer


def _check_labelled(info: DataInfo, name: str) -> None:
    """A DataError for data that can't train a classifier or regressor as it is."""
    if info.task == "classification" and (info.num_classes or 0) < 2:
        has_task = "task" in DATASETS.parameters(name)
        hint = " (for a regression target, set data.dataset.task: regression)" if has_task else ""
        raise DataError(
            f"'{name}' gives one class ({', '.join(info.classes or ['?'])}); classification needs at least 2{hint}",
            key=("data", "dataset"),
        )
    if info.task == "unlabeled":
        raise DataError(f"'{name}' has no labels (y_key: null); set data.task: reconstruction", key=("data", "dataset"))
