"""From a validated config to built parts, and the `fit` and `check` commands' work."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from nntrain import distributed
from nntrain.callbacks import (
    Callback,
    EarlyStopping,
    MetricsLog,
    ModelCheckpoint,
    ProgressBar,
    TensorBoardLogger,
)
from nntrain.checkpoint import load_checkpoint, provenance
from nntrain.config import TASK_METRICS, Config, config_from_dict, monitor_mode, to_yaml
from nntrain.data.augment import check_augmentations
from nntrain.data.loaders import Data, build_data
from nntrain.device import device_warnings, resolve_device
from nntrain.errors import ConfigError, ConfigWarning, DataError, Interrupted, RunError
from nntrain.evaluate import evaluate
from nntrain.losses import build_loss
from nntrain.models import build_model
from nntrain.optim import build_optimizer
from nntrain.schedules import Schedule, build_schedule
from nntrain.trainer import Trainer


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Parts:
    cfg: Config
    data: Data
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Optional[Schedule]
    device: torch.device
    found_lr: Optional[float] = None  # the LR chosen for `optimizer.lr: auto`

    @property
    def updates_per_epoch(self) -> int:
        batches = math.ceil(len(self.data.train[0]) / self.cfg.data.batch_size)
        return math.ceil(batches / self.cfg.train.accumulate)


def _probe(model: nn.Module, data: Data, cfg: Config) -> None:
    """Runs two samples through the model so a shape mismatch is reported before training."""
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
                "loss.name: bce_with_logits needs targets in [0, 1] but the normalized inputs leave it; "
                "use data.normalize: {name: minmax}, no normalizer, or loss mse"
            )
    _check_monitors(cfg, info.task)


def _check_monitors(cfg: Config, task: str) -> None:
    """Every `monitor` must name a metric this task reports (val/acc exists for classification only)."""
    measured = ("train/loss", "val/loss", *TASK_METRICS.get(task, ()))
    monitors = {("train", "checkpoint", "monitor"): cfg.train.checkpoint.monitor}
    if cfg.train.early_stopping is not None:
        monitors[("train", "early_stopping", "monitor")] = cfg.train.early_stopping.monitor
    if cfg.scheduler is not None and isinstance(cfg.scheduler.model_dump().get("monitor"), str):
        monitors[("scheduler", "monitor")] = cfg.scheduler.model_dump()["monitor"]
    for key, monitor in monitors.items():
        if monitor not in measured:
            raise ConfigError(
                f"{'.'.join(key)}: '{monitor}' is not measured on {task} data "
                f"(measured: {', '.join(measured)})"
            )


def build_parts(
    cfg: Config, normalizer_state: Optional[dict] = None, data_info: Optional[dict] = None
) -> Parts:
    """Seeds, loads the data and builds model, loss, optimizer and schedule for `cfg`.

    `normalizer_state` and `data_info` come from a checkpoint: data is then prepared exactly as
    in training (normalizer statistics; a source's vocabulary or scaler, `DataInfo.source_state`).
    Errors that name a config key get the key's file and line.
    """
    try:
        return _build_parts(cfg, normalizer_state, data_info)
    except (ConfigError, DataError) as exc:
        raise type(exc)(cfg.locate(str(exc))) from None


def _build_parts(cfg: Config, normalizer_state: Optional[dict], data_info: Optional[dict]) -> Parts:
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
    model = build_model(cfg.model.model_dump(), data.info.model_kwargs())
    _probe(model, data, cfg)
    check_augmentations(cfg.data.augment, data.train[0])  # images, channels, value range
    model.to(device)
    # In-memory data lives where training runs (no per-step copy), unless it doesn't fit there.
    data.to(device, resident=_data_on_device(cfg, data, device))
    for message in device_warnings(cfg, device, data) if distributed.is_main() else ():
        warnings.warn(cfg.locate(message), ConfigWarning, stacklevel=2)
    loss_fn = build_loss(cfg.loss.model_dump(), data.info).to(device)
    opt_spec = cfg.optimizer.model_dump()
    if device.type == "cuda" and opt_spec["name"] in ("adam", "adamw", "sgd"):
        opt_spec.setdefault("fused", True)  # one kernel for the whole update instead of one per tensor
    auto_lr = opt_spec.get("lr") == "auto"
    if auto_lr:
        opt_spec["lr"] = 1e-3  # a placeholder: the range test sets every LR itself
    optimizer = build_optimizer(opt_spec, model, cfg.regularization.include_bias_and_norm)
    parts = Parts(cfg, data, model, loss_fn, optimizer, None, device)
    if auto_lr:
        _choose_lr(parts, opt_spec)
    spec = None if cfg.scheduler is None else cfg.scheduler.model_dump()
    parts.schedule = build_schedule(spec, optimizer, parts.updates_per_epoch, cfg.train.epochs)
    return parts


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
    from nntrain.lr_find import range_test

    lr = range_test(parts).suggestion
    parts.cfg.optimizer.lr = parts.found_lr = lr
    opt_spec["lr"] = lr
    parts.optimizer = build_optimizer(opt_spec, parts.model, parts.cfg.regularization.include_bias_and_norm)


def make_run_dir(cfg: Config, prefix: str = "", what: str = "run") -> Path:
    """`<log.dir>/<name>/<prefix><YYYYmmdd-HHMMSS>`, never an existing folder."""
    parent = Path(cfg.log.dir) / cfg.name
    stamp = prefix + datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            run_dir = parent / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as exc:
        raise RunError(f"cannot create the {what} folder under {parent}: {exc.strerror or exc}") from None
    raise RunError(f"cannot create a new {what} folder under {parent}")


def check_log_dir(cfg: Config) -> None:
    """`log.dir` must be a folder, or a path where one can be made: a file on it is a config error."""
    for folder in (Path(cfg.log.dir) / cfg.name, *(Path(cfg.log.dir) / cfg.name).parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(cfg.locate(
                f"log.dir: '{folder}' is a file, so no run folder can be made under '{cfg.log.dir}'; "
                f"set log.dir to a folder"
            ))


def resume_checkpoint(path: str | Path) -> Path:
    """`--resume` takes a run folder (its last.pt) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume {path}: no checkpoint in this folder (looked for {last})")
        return last
    if not path.exists():
        raise ConfigError(f"--resume {path}: no such run folder or checkpoint")
    if path.parent.name != "checkpoints":
        # The run folder is where the checkpoint lies: a loose file would have fit write into its grandparent.
        raise ConfigError(
            f"--resume {path}: not in a run folder (<run>/checkpoints/<file>.pt), so there is no run to "
            f"continue; give a run folder or a checkpoint in one, or start a new run from these weights "
            f"with model.init_from: {{checkpoint: {path}}}"
        )
    return path


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Lines `key: old -> new` for every dotted key whose value differs."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the defaults of keys added since it was written, so that a
    newer nntrain doesn't report them as changes on resume."""
    try:
        return config_from_dict(stored).to_dict()
    except ConfigError:  # no longer valid: compare as stored, and let the diff show why
        return stored


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM: finish the current update, save last.pt, stop. A second one aborts at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.interrupted is not None:
            raise KeyboardInterrupt
        trainer.interrupted = signum
        # os.write, not print: a signal handler must not take the console's locks.
        os.write(2, f"\n{signal.Signals(signum).name}: finishing this step and saving last.pt "
                    f"(press Ctrl-C again to abort at once)\n".encode())

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def build_callbacks(
    cfg: Config,
    run_dir: Path,
    resume_step: Optional[int] = None,
    main: bool = True,
    progress: bool = True,
    console: Any = None,
    extra: Sequence[Callback] = (),
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
    if cfg.log.tensorboard and main:
        callbacks.append(TensorBoardLogger(run_dir, resume_step))
    if main:
        callbacks.append(MetricsLog(run_dir / "metrics.jsonl", resume_step))
    if progress and main:
        callbacks.append(ProgressBar(console))
    callbacks.extend(extra)
    ckpt_cfg = cfg.train.checkpoint
    checkpointer = ModelCheckpoint(
        run_dir / "checkpoints", ckpt_cfg.monitor, monitor_mode(ckpt_cfg.monitor, ckpt_cfg.mode),
        ckpt_cfg.every_n_epochs, ckpt_cfg.every_n_steps, ckpt_cfg.keep_top_k,
    )
    if main:
        callbacks.append(checkpointer)  # last: the checkpoint holds the other callbacks' updated state
    return callbacks, checkpointer


def fit(
    cfg: Config,
    console: Any = None,
    progress: bool = True,
    resume: Optional[str | Path] = None,
    allow_config_change: bool = False,
    extra_callbacks: Sequence[Callback] = (),
    run_dir: Optional[Path] = None,
) -> dict[str, Any]:
    """Trains `cfg` into a new run folder, or continues the run `resume` points at.

    `extra_callbacks` run after the built-in ones and before the checkpointer (a sweep's pruning);
    `run_dir` is the new run's folder (it must not exist) instead of `<log.dir>/<name>/<stamp>`.

    Returns the summary (also written to summary.json).

    Raises:
        Interrupted: SIGINT/SIGTERM arrived; last.pt was saved first.
    """
    ckpt = None
    if resume is not None:
        ckpt_path = resume_checkpoint(resume)
        ckpt = load_checkpoint(ckpt_path)
        if getattr(cfg.optimizer, "lr", None) == "auto":  # keep the LR the range test chose
            cfg.optimizer.lr = ckpt["config"]["optimizer"]["lr"]
        diff = config_diff(_with_defaults(ckpt["config"]), cfg.to_dict())
        if diff and not allow_config_change:
            raise ConfigError(
                f"--resume {resume}: the config differs from the one the run was started with:\n  "
                + "\n  ".join(diff)
                + "\nresume with the same config and --set options, or pass --allow-config-change"
            )
    # Every config and data error surfaces before a run folder is created.
    if resume is None and run_dir is None:
        check_log_dir(cfg)
    parts = build_parts(
        cfg,
        normalizer_state=None if ckpt is None else ckpt.get("normalizer"),
        data_info=None if ckpt is None else ckpt.get("data_info"),
    )
    main = distributed.is_main()  # under torchrun, only rank 0 writes files
    try:
        if ckpt is not None:
            run_dir = ckpt_path.parent.parent
            if diff and main:  # the original config.yaml stays; the changed one is kept beside it
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                (run_dir / f"config.resumed-{stamp}.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        elif main:
            if run_dir is None:
                run_dir = make_run_dir(cfg)
            else:
                run_dir.mkdir(parents=True)  # never an existing folder (FileExistsError is an OSError)
            (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write the run folder: {exc.strerror or exc} ({exc.filename})") from None
    run_dir = Path(distributed.broadcast(str(run_dir) if main else None))
    train = cfg.train
    ckpt_cfg = train.checkpoint
    resume_step = None if ckpt is None else ckpt["step"]
    callbacks, checkpointer = build_callbacks(cfg, run_dir, resume_step, main, progress, console, extra_callbacks)
    meta = {
        "data_info": parts.data.info.to_dict(),
        "normalizer": None if parts.data.normalizer is None else parts.data.normalizer.state_dict(),
        "provenance": provenance(),
    }
    trainer = Trainer(
        cfg, parts.model, parts.loss_fn, parts.optimizer, parts.schedule, parts.data,
        parts.device, callbacks, meta,
    )
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    start = time.perf_counter()
    try:
        with _stop_on_signals(trainer):
            trainer.fit()
    except OSError as exc:
        raise RunError(f"cannot write to the run folder {run_dir}: {exc.strerror or exc}") from None
    if trainer.interrupted is not None:
        name = signal.Signals(trainer.interrupted).name
        raise Interrupted(
            f"{name}: stopped at epoch {trainer.epoch + 1}, step {trainer.step}; "
            f"saved {run_dir / 'checkpoints' / 'last.pt'}",
            trainer.interrupted,
            str(run_dir),
        )
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "stop_reason": trainer.stop_reason,
        "final": trainer.last_metrics,
        "best": {"monitor": ckpt_cfg.monitor, "value": checkpointer.best, "epoch": checkpointer.best_epoch},
        "nan_skipped": trainer.nan_skipped,
        "found_lr": parts.found_lr,
        "time_s": round(time.perf_counter() - start, 3),
        "train_time_s": round(trainer.train_time, 3),
        "samples_per_s": round(trainer.samples_seen * trainer.world / max(trainer.train_time, 1e-9), 1),
        "step_time_ms": round(1000 * trainer.train_time / max(trainer.step, 1), 3),
        "data_wait_share": round(trainer.data_time / max(trainer.train_time, 1e-9), 4),
    }
    best_path = run_dir / "checkpoints" / "best.pt"
    distributed.barrier()  # rank 0 has written best.pt
    if train.test_at_end and parts.data.test is not None and best_path.exists():
        parts.model.load_state_dict(load_checkpoint(best_path)["model"])
        summary["test"] = evaluate(
            trainer.forward, parts.loss_fn, parts.data, "test", cfg, trainer.autocast, parts.model
        )
    try:
        if main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {run_dir / 'summary.json'}: {exc.strerror or exc}") from None
    return summary


def model_summary(parts: Parts) -> list[tuple[str, str, str, int]]:
    """Rows (layer, type, output shape, parameters) from one forward pass of a training batch."""
    rows: list[tuple[str, str, str, int]] = []
    hooks = []
    for name, module in parts.model.named_modules():
        if next(module.children(), None) is not None:
            continue  # leaves only
        def hook(mod, inputs, output, name=name):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else "-"
            rows.append((name, type(mod).__name__, str(shape), sum(p.numel() for p in mod.parameters(recurse=False))))
        hooks.append(module.register_forward_hook(hook))
    x = parts.data.train[0][: parts.cfg.data.batch_size].to(parts.device)
    try:
        with torch.no_grad():
            parts.model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


def check(cfg: Config) -> tuple[Parts, list, dict[str, float]]:
    """Builds everything and runs one forward/backward/update on a training batch, without a run folder."""
    parts = build_parts(cfg)
    rows = model_summary(parts)
    trainer = Trainer(cfg, parts.model, parts.loss_fn, parts.optimizer, parts.schedule, parts.data, parts.device)
    x, y = next(trainer.train_loader.epoch(0))
    trainer.train_step(x, y)
    loss = trainer._flush_loss()
    if loss is None or not math.isfinite(loss):
        raise RunError(f"the first training batch gives a loss of {loss}")
    return parts, rows, {"train/loss": loss}
