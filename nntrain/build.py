"""From a config (or a checkpoint) to built parts: data, model, loss, optimizer, schedule, the
train loader and the Trainer with its callbacks.

`fit`, `check`, `lr-find`, `eval`, `predict`, `export` and `report` all build through here:
`build_parts` from a config, `load_trained` from a checkpoint.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nntrain import distributed, metrics
from nntrain.averaging import Averaging
from nntrain.callbacks import (
    Callback,
    EarlyStopping,
    MetricsLog,
    ModelCheckpoint,
    ProgressBar,
    TensorBoardLogger,
)
from nntrain.checkpoint import load_checkpoint
from nntrain.config import Config
from nntrain.data.augment import check_augmentations, random_augmentations
from nntrain.data.balance import balanced_sample_weights
from nntrain.data.info import DataInfo
from nntrain.data.loaders import Data, TensorLoader, build_data, min_train_batch, normalizer_spec
from nntrain.device import autocast, device_warnings, resolve_device
from nntrain.errors import CheckpointError, ConfigError, ConfigWarning, DataError
from nntrain.evaluate import class_names, evaluate
from nntrain.losses import build_loss, penalized_parameters
from nntrain.lr_find import range_test
from nntrain.metrics import monitor_mode
from nntrain.models import build_model
from nntrain.optim import build_optimizer
from nntrain.registries import AUGMENTATIONS, NORMALIZERS
from nntrain.schedules import Schedule, build_schedule
from nntrain.trainer import Trainer, TrainSettings
from nntrain.validate import config_from_dict


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Parts:
    """Everything built from a config before training: what `fit`, `check` and `lr-find` share."""

    cfg: Config
    data: Data
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule | None
    device: torch.device
    train_loader: TensorLoader  # this rank's batches: the one owner of the number of updates per epoch
    found_lr: float | None = None  # the LR chosen for `optimizer.lr: auto`
    # The metrics each validation computes: the task's defaults, `log.metrics` and every monitored one.
    metric_names: list[str] | None = None

    @property
    def updates_per_epoch(self) -> int:
        return self.train_loader.updates_per_epoch(self.cfg.train.accumulate)


def _probe(model: nn.Module, data: Data, cfg: Config, monitors: dict[str, str]) -> list[str]:
    """Runs two samples through the model so a shape mismatch is reported before training; checks
    the monitors and returns the metrics each validation computes (`_check_monitors`)."""
    x = data.train[0][:2]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        raise DataError(
            f"model '{cfg.model.name}' does not fit the data of '{cfg.data.dataset.name}' "
            f"(inputs of shape {tuple(x.shape[1:])}): {str(exc).splitlines()[0]}"
        ) from None
    finally:
        model.train()
    info, name = data.info, cfg.model.name
    if info.task == "classification" and (out.dim() != 2 or out.shape[-1] != info.num_classes):
        hint = ""
        if out.shape[1:] == x.shape[1:]:
            hint = " (it reconstructs its input: set data.task: reconstruction)"
        raise DataError(
            f"model '{name}' gives outputs of shape {tuple(out.shape[1:])} but the data has "
            f"{info.num_classes} classes{hint}"
        )
    target = data.train[1][:2]
    if info.task != "classification" and out.shape != target.shape:
        raise DataError(
            f"model '{name}' gives outputs of shape {tuple(out.shape[1:])} but the {info.task} "
            f"targets have shape {tuple(target.shape[1:])}"
        )
    if cfg.loss.name == "bce_with_logits" and info.task == "reconstruction":
        y = data.train[1]
        if bool((y.min() < 0) | (y.max() > 1)):
            raise DataError(
                "bce_with_logits needs targets in [0, 1] but the normalized inputs leave it; "
                "use data.normalize: {name: minmax}, no normalizer, or loss mse", key=("loss", "name")
            )
    return _check_monitors(cfg, info.task, monitors, info.num_classes)


def _check_monitors(cfg: Config, task: str, extra: dict[str, str], num_classes: int | None = None) -> list[str]:
    """Every `monitor` and `log.metrics` entry must name a metric this task has (val/acc exists for
    classification only); returns the metrics each validation computes: the task's defaults, then
    those `log.metrics` lists and those a monitor names (costly ones only when asked for)."""
    available = metrics.for_task(task, everything=True, num_classes=num_classes)
    measured = [metrics.TRAIN_LOSS, *(f"val/{name}" for name in available)]
    names = metrics.for_task(task)
    for i, name in enumerate(cfg.log.metrics):
        if name not in available:
            raise ConfigError(f"'{name}' is not measured on {task} data (measured: {', '.join(available)})",
                              key=("log", "metrics", i))
        names.append(name)
    monitors = {tuple(k.split(".")): v for k, v in extra.items()}
    monitors[("train", "checkpoint", "monitor")] = cfg.train.checkpoint.monitor
    if cfg.train.early_stopping is not None:
        monitors[("train", "early_stopping", "monitor")] = cfg.train.early_stopping.monitor
    if cfg.scheduler is not None and isinstance(cfg.scheduler.model_dump().get("monitor"), str):
        monitors[("scheduler", "monitor")] = cfg.scheduler.model_dump()["monitor"]
    for key, monitor in monitors.items():
        if monitor not in measured:
            raise ConfigError(f"'{monitor}' is not measured on {task} data (measured: {', '.join(measured)})", key=key)
        if monitor.startswith("val/"):
            names.append(monitor.removeprefix("val/"))
    return list(dict.fromkeys(names))


def build_parts(
    cfg: Config,
    normalizer_state: dict | None = None,
    data_info: dict | None = None,
    monitors: dict[str, str] | None = None,
    class_weights: dict[str, list[float]] | None = None,
) -> Parts:
    """Seeds, loads the data and builds model, loss, optimizer and schedule for `cfg`.

    `normalizer_state` and `data_info` come from a checkpoint: data is then prepared exactly as
    in training (normalizer statistics; a source's vocabulary or scaler, `DataInfo.source_state`).
    `monitors` are metrics other parts of a job watch (`{"sweep.metric": "val/acc"}`), checked
    like the config's own monitors. `class_weights` come from a checkpoint too: the loss's
    resolved `weight: auto` / `pos_weight: auto`. Errors that name a config key get the key's file and line.
    """
    try:
        return _build_parts(cfg, normalizer_state, data_info, monitors or {}, class_weights)
    except (ConfigError, DataError) as exc:
        raise cfg.locate(exc) from None


def _build_parts(
    cfg: Config, normalizer_state: dict | None, data_info: dict | None, monitors: dict[str, str],
    class_weights: dict[str, list[float]] | None = None,
) -> Parts:
    seed_everything(cfg.seed)
    if cfg.train.threads is not None:  # torch already follows OMP_NUM_THREADS when it is set
        torch.set_num_threads(cfg.train.threads)
    device = distributed.init(cfg.train.device) or resolve_device(cfg.train.device)
    if cfg.train.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (torch's reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.train.deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.train.deterministic
    source_state = None if data_info is None else data_info.get("source_state")
    data = build_data(cfg.data, cfg.seed, normalizer_state, source_state)
    model = build_model(cfg.model.model_dump(), data.info.model_kwargs(), device)
    metric_names = _probe(model, data, cfg, monitors)
    _check_averaging(cfg)
    check_augmentations(cfg.data.augment, data.train[0])  # images, channels, value range
    model.to(device)
    # In-memory data lives where training runs (no per-step copy), unless it doesn't fit there.
    data.to(device, resident=_data_on_device(cfg, data, device))
    for message in device_warnings(cfg, device, data) if distributed.is_main() else ():
        warnings.warn(str(cfg.locate(message)), ConfigWarning, stacklevel=2)
    train_loader = TensorLoader(
        *data.train, cfg.data.batch_size, cfg.data.shuffle, cfg.seed,
        rank=distributed.rank(), world=distributed.world_size(), device=device,
        weights=_sampler_weights(cfg, data), min_batch=min_train_batch(model, data.train[0]),
    )
    loss_fn = build_loss(cfg.loss.model_dump(), data.info, data.train[1], class_weights).to(device)
    opt_spec = cfg.optimizer.model_dump()
    if device.type == "cuda" and opt_spec["name"] in ("adam", "adamw", "sgd"):
        opt_spec.setdefault("fused", True)  # one kernel for the whole update instead of one per tensor
    auto_lr = opt_spec.get("lr") == "auto"
    if auto_lr:
        opt_spec["lr"] = 1e-3  # a placeholder: the range test sets every LR itself
    optimizer = build_optimizer(opt_spec, model, cfg.regularization.include_bias_and_norm)
    parts = Parts(cfg, data, model, loss_fn, optimizer, None, device, train_loader, metric_names=metric_names)
    if auto_lr:
        _choose_lr(parts, opt_spec)
    spec = None if cfg.scheduler is None else cfg.scheduler.model_dump()
    parts.schedule = build_schedule(spec, optimizer, parts.updates_per_epoch, cfg.train.epochs)
    return parts


def _sampler_weights(cfg: Config, data: Data) -> torch.Tensor | None:
    """`data.sampler: balanced`: each training sample's draw weight, 1 / (its class's count)."""
    if cfg.data.sampler is None:
        return None
    key = ("data", "sampler")
    if data.info.task != "classification":
        raise ConfigError(f"'{cfg.data.sampler}' balances classes, but this is {data.info.task} data", key=key)
    if not cfg.data.shuffle:
        raise ConfigError(f"'{cfg.data.sampler}' draws a random order every epoch; remove data.shuffle: false", key=key)
    return balanced_sample_weights(data.train[1], data.info.num_classes)


def _data_on_device(cfg: Config, data: Data, device: torch.device) -> bool:
    """`data.on_device: auto` keeps the tensors in GPU memory if they take at most half of what is
    free (the rest is for weights, activations and optimizer state); else they stay on the host."""
    if device.type != "cuda":
        return True  # CPU: already there; MPS: unified memory
    if cfg.data.on_device != "auto":
        return cfg.data.on_device
    free, _ = torch.cuda.mem_get_info(device)
    return data.nbytes() <= free // 2


def _choose_lr(parts: Parts, opt_spec: dict[str, Any]) -> None:
    """`optimizer.lr: auto`: an LR range test picks the LR, recorded in the resolved config.

    The test restores the model and RNG states, so training starts as it would with that LR given.
    """
    lr = range_test(build_trainer(parts)).suggestion
    parts.cfg.optimizer.lr = parts.found_lr = lr
    opt_spec["lr"] = lr
    parts.optimizer = build_optimizer(opt_spec, parts.model, parts.cfg.regularization.include_bias_and_norm)


def train_settings(cfg: Config, device: torch.device, data: Data) -> TrainSettings:
    """The loop's settings from the config's `train`, `log` and `regularization` sections."""
    train, reg = cfg.train, cfg.regularization
    if train.on_nan == "skip" and distributed.world_size() > 1:
        # A rank that skips its backward would leave the others waiting in DDP's all-reduce.
        raise ConfigError("'skip' works in one process only; use 'stop' with torchrun", key=("train", "on_nan"))
    return TrainSettings(
        epochs=train.epochs,
        accumulate=train.accumulate,
        grad_clip=train.grad_clip,
        skip_nan=train.on_nan == "skip",
        every_n_steps=cfg.log.every_n_steps,
        l1=reg.l1,
        l2=reg.l2,
        # channels_last lets cuDNN pick its fastest convolution kernels (a no-op elsewhere).
        channels_last=device.type == "cuda" and data.train[0].dim() == 4 and train.channels_last is not False,
    )


def build_trainer(
    parts: Parts, callbacks: Sequence[Callback] = (), meta: dict[str, Any] | None = None
) -> Trainer:
    """The Trainer for `parts`: precision, DDP wrapper, compile, augmentations, penalties.

    Args:
        parts: from `build_parts`.
        callbacks: from `build_callbacks` (none for `check` and lr-find).
        meta: extra checkpoint entries besides the config (data info, normalizer, provenance).
    """
    cfg, model, device, data = parts.cfg, parts.model, parts.device, parts.data
    settings = train_settings(cfg, device, data)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    averaging = _averaging(parts, settings)  # a copy of the unwrapped model, made before DDP wraps it
    # DDP averages gradients across ranks in backward; the Trainer's `model` stays the unwrapped module.
    ddp = None
    if distributed.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(ddp or model) if cfg.train.compile else (ddp or model)
    precision = autocast(device, cfg.train.precision)
    # Each rank draws its own augmentations (the same seed would repeat them across ranks).
    generator = torch.Generator(device=device).manual_seed(cfg.seed + distributed.rank())
    augment = [AUGMENTATIONS.build(s, generator=generator) for _, s in random_augmentations(cfg.data.augment)]

    # Classification with TensorBoard: each validation also counts its confusion matrix (one bincount
    # per batch), drawn by TensorBoardLogger; counted on every rank alike (its sums are all-reduced).
    confusion = {} if cfg.log.tensorboard and data.info.task == "classification" else None
    for callback in callbacks:
        if isinstance(callback, TensorBoardLogger):
            callback.confusion = confusion

    def evaluate_split(split: str) -> dict[str, float]:
        # The averaged weights once there are some (train.ema / train.swa), else the trained model.
        target = trainer.eval_model
        return evaluate(forward if target is model else target, parts.loss_fn, data, split, cfg, precision, target,
                        names=parts.metric_names, detail=confusion)

    trainer = Trainer(
        model, parts.loss_fn, parts.optimizer, parts.schedule, parts.train_loader, evaluate_split, settings,
        device,
        forward=forward,
        ddp=ddp,
        autocast=precision,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        augment=augment,
        aug_generator=generator,
        penalty_params=penalized_parameters(model, cfg.regularization.include_bias_and_norm),
        callbacks=callbacks,
        meta={
            "config": cfg.to_dict(), "config_hash": cfg.hash(), "seed": cfg.seed,
            # The loss's per-class weights as resolved (`weight: auto`): eval weighs classes alike.
            "class_weights": getattr(parts.loss_fn, "class_weights", {}),
            **(meta or {}),
        },
        averaging=averaging,
    )
    return trainer


def _averaging(parts: Parts, settings: TrainSettings) -> Averaging | None:
    """`train.ema` / `train.swa`: the averaged copy of the model (None without either)."""
    cfg, data = parts.cfg, parts.data
    if cfg.train.ema is None and cfg.train.swa is None:
        return None

    def bn_batches() -> Iterator[torch.Tensor]:
        """This rank's training inputs in a fixed order, without augmentation (SWA's update_bn)."""
        loader = TensorLoader(
            *data.train, cfg.data.batch_size, rank=distributed.rank(), world=distributed.world_size(),
            device=parts.device, even=False, min_batch=parts.train_loader.min_batch,
        )
        for x, _ in loader.epoch():
            yield x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x

    return Averaging(parts.model, cfg.train.ema, cfg.train.swa, bn_batches)


def _check_averaging(cfg: Config) -> None:
    train = cfg.train
    if train.ema is not None and train.swa is not None:
        raise ConfigError("give train.ema or train.swa, not both: each keeps its own average", key=("train", "swa"))
    if train.swa is not None and train.swa.start_epoch > train.epochs:
        raise ConfigError(f"SWA would start after the last epoch ({train.epochs}); lower start_epoch",
                          key=("train", "swa", "start_epoch"))


def build_callbacks(
    cfg: Config,
    run_dir: Path,
    resume_step: int | None = None,
    main: bool = True,
    progress: bool = True,
    console: Any = None,
    extra: Sequence[Callback] = (),
    data: Data | None = None,
) -> tuple[list[Callback], ModelCheckpoint]:
    """The callbacks `fit` attaches, in the order their hooks run.

    Early stopping (if configured), TensorBoard (if `log.tensorboard`), metrics.jsonl, the progress
    bar (if `progress`), `extra`, and the checkpointer last. Only the main process (`main`) writes
    files, so the other ranks get early stopping and `extra` only.

    Args:
        cfg: the run's config.
        run_dir: the run folder the loggers and the checkpointer write into.
        resume_step: the step a resumed run continues from (loggers drop later entries), or None.
        main: whether this is the process that writes files (rank 0 under torchrun).
        progress: whether to show the progress bar.
        console: the rich console the progress bar draws on (None: rich's default).
        extra: callbacks to run after the built-in ones and before the checkpointer.
        data: the run's data (TensorBoard shows validation reconstructions of images).

    Returns:
        The callbacks, and the checkpointer (also built off the main process: it tracks the best value).
    """
    callbacks: list[Callback] = []
    es = cfg.train.early_stopping
    if es is not None:
        callbacks.append(
            EarlyStopping(
                es.monitor, monitor_mode(es.monitor, es.mode), es.patience, es.min_delta, es.restore_best
            )
        )
    ckpt_cfg = cfg.train.checkpoint
    checkpointer = ModelCheckpoint(
        run_dir / "checkpoints", ckpt_cfg.monitor, monitor_mode(ckpt_cfg.monitor, ckpt_cfg.mode),
        ckpt_cfg.every_n_epochs, ckpt_cfg.every_n_steps, ckpt_cfg.keep_top_k, write=main,
    )
    if cfg.log.tensorboard and main:
        x_val = data.val[0] if data is not None and data.val is not None else None
        show = data is not None and data.info.task == "reconstruction" and x_val is not None and x_val.dim() == 4
        callbacks.append(TensorBoardLogger(
            run_dir, cfg.to_dict(), resume_step, cfg.log.histograms_every_n_steps,
            reconstruct=x_val[:16] if show else None, logits=cfg.loss.name == "bce_with_logits",
            checkpointer=checkpointer,
            classes=class_names(data.info) if data is not None else None,
        ))
    if main:
        callbacks.append(MetricsLog(run_dir / "metrics.jsonl", resume_step))
    if progress and main:
        callbacks.append(ProgressBar(console))
    callbacks.extend(extra)
    # Last: the checkpoint holds the other callbacks' updated state. On every rank: building a
    # checkpoint gathers each rank's loss sums (a collective); only rank 0 writes it.
    callbacks.append(checkpointer)
    return callbacks, checkpointer


@dataclass
class Trained:
    """A trained model rebuilt from its checkpoint, ready for inference (eval mode, on its device)."""

    path: Path
    ckpt: dict[str, Any]
    parts: Parts

    @property
    def model(self) -> nn.Module:
        return self.parts.model

    @property
    def cfg(self) -> Config:
        return self.parts.cfg


def load_trained(path: str | Path, overrides: Sequence[str] = ()) -> Trained:
    """Rebuilds the model of the checkpoint at `path` with its weights, and its data as in training.

    The checkpoint's stored config is the recipe (with `overrides` applied); what the data was
    fitted with (normalizer statistics, a source's vocabulary or scaler) comes from the checkpoint.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, purpose="eval")
    stored = dict(ckpt["config"])
    if isinstance(stored.get("model"), dict):
        # The weights come from this checkpoint: the pretrained file init_from named may be gone.
        stored["model"] = {k: v for k, v in stored["model"].items() if k != "init_from"}
    cfg = config_from_dict(stored, list(overrides), where=f"{path} (stored config)")
    parts = build_parts(cfg, normalizer_state=ckpt.get("normalizer"), data_info=ckpt.get("data_info"),
                        class_weights=ckpt.get("class_weights"))
    trained_on = (ckpt.get("data_info") or {}).get("classes")
    classes = parts.data.info.classes
    if trained_on is not None and classes is not None and list(classes) != list(trained_on):
        # Same number of classes in another order would load and give silently wrong metrics.
        shown = lambda names: ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")  # noqa: E731
        raise cfg.locate(DataError(
            f"the data's classes ({shown(classes)}) are not the ones {path} was trained "
            f"on ({shown(trained_on)}); evaluate on data with the same labels", key=("data", "dataset")
        ))
    try:
        parts.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path}: the weights don't fit the model the config builds "
            f"(a different architecture?): {detail}"
        ) from None
    parts.model.eval()
    return Trained(path, ckpt, parts)


@dataclass
class Restored:
    """A checkpoint's model rebuilt from the checkpoint alone, no data loaded (`predict`, `export`).

    `info` is the stored DataInfo (task, classes, input shape, the source's vocabulary or scaler);
    `normalizer` the configured normalizer with the stored statistics (None if there is none).
    """

    path: Path
    cfg: Config
    model: nn.Module
    info: DataInfo
    normalizer: Any | None
    device: torch.device
    ckpt: dict[str, Any]


def load_model(path: str | Path, device: str | None = None) -> Restored:
    """Rebuilds the model of the checkpoint at `path` with its weights (eval mode, on `device`,
    default the training device), its DataInfo and normalizer, without reading any data."""
    path = Path(path)
    ckpt = load_checkpoint(path, purpose="eval")
    stored = dict(ckpt["config"])
    if isinstance(stored.get("model"), dict):  # the weights come from this checkpoint
        stored["model"] = {k: v for k, v in stored["model"].items() if k != "init_from"}
    cfg = config_from_dict(stored, [], where=f"{path} (stored config)")
    raw_info = ckpt.get("data_info")
    if not isinstance(raw_info, dict) or "input_shape" not in raw_info:
        raise CheckpointError(f"{path}: the checkpoint holds no data_info (input shape, classes); retrain it")
    known = DataInfo.__dataclass_fields__
    info = DataInfo(**{k: v for k, v in raw_info.items() if k in known})
    info.input_shape = tuple(info.input_shape)
    try:
        spec, _ = normalizer_spec(cfg.data)
        normalizer = None
        if spec is not None:
            if ckpt.get("normalizer") is None:
                raise CheckpointError(f"{path}: the config names a normalizer but the checkpoint holds no statistics")
            normalizer = NORMALIZERS.build(spec)
            normalizer.load_state_dict(ckpt["normalizer"])
        model = build_model(cfg.model.model_dump(), info.model_kwargs())
        target = resolve_device(device or cfg.train.device)
    except (ConfigError, DataError) as exc:
        raise cfg.locate(exc) from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: the weights don't fit the model the stored config builds: {detail}") from None
    model.to(target).eval()
    return Restored(path, cfg, model, info, normalizer, target, ckpt)
