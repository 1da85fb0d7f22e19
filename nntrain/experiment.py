"""From a validated config to built parts, and the `fit` and `check` commands' work."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from nntrain.callbacks import EarlyStopping, MetricsLog, ModelCheckpoint, ProgressBar, TensorBoardLogger
from nntrain.checkpoint import load_checkpoint, provenance
from nntrain.config import Config, monitor_mode, to_yaml
from nntrain.data.loaders import Data, build_data
from nntrain.errors import ConfigError, DataError, RunError
from nntrain.losses import build_loss
from nntrain.models import build_model
from nntrain.optim import Schedule, build_optimizer, build_schedule
from nntrain.trainer import Trainer, evaluate


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise ConfigError(
                f"train.device: '{name}' is not available (this machine has {count} CUDA devices); "
                f"use auto or cpu"
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: 'mps' is not available on this machine; use auto or cpu")
    return torch.device(name)


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
    expected = data.info.num_classes
    if data.info.task == "classification" and out.shape[-1] != expected:
        raise DataError(
            f"model '{cfg.model.name}' gives {out.shape[-1]} outputs but the data has {expected} classes"
        )


def build_parts(cfg: Config, normalizer_state: Optional[dict] = None) -> Parts:
    """Seeds, loads the data and builds model, loss, optimizer and schedule for `cfg`."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = build_data(cfg.data, cfg.seed, normalizer_state)
    model = build_model(cfg.model.model_dump(), data.info.model_kwargs())
    _probe(model, data, cfg)
    model.to(device)
    data.to(device)  # in-memory data lives where training runs: no per-step host-to-device copy
    loss_fn = build_loss(cfg.loss.model_dump(), data.info).to(device)
    optimizer = build_optimizer(
        cfg.optimizer.model_dump(), model, cfg.regularization.include_bias_and_norm
    )
    parts = Parts(cfg, data, model, loss_fn, optimizer, None, device)
    spec = None if cfg.scheduler is None else cfg.scheduler.model_dump()
    parts.schedule = build_schedule(spec, optimizer, parts.updates_per_epoch, cfg.train.epochs)
    return parts


def make_run_dir(cfg: Config) -> Path:
    """`<log.dir>/<name>/<YYYYmmdd-HHMMSS>`, never an existing folder."""
    parent = Path(cfg.log.dir) / cfg.name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
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
        raise RunError(f"cannot create the run folder under {parent}: {exc.strerror or exc}") from None
    raise RunError(f"cannot create a new run folder under {parent}")


def fit(cfg: Config, console: Any = None, progress: bool = True) -> dict[str, Any]:
    """Trains `cfg` into a new run folder; returns the summary (also written to summary.json)."""
    parts = build_parts(cfg)  # every config and data error surfaces before the run folder exists
    run_dir = make_run_dir(cfg)
    try:
        (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {run_dir / 'config.yaml'}: {exc.strerror or exc}") from None
    train = cfg.train
    ckpt = train.checkpoint
    callbacks: list = []
    if train.early_stopping is not None:
        es = train.early_stopping
        callbacks.append(
            EarlyStopping(es.monitor, monitor_mode(es.monitor, es.mode), es.patience, es.min_delta)
        )
    if cfg.log.tensorboard:
        callbacks.append(TensorBoardLogger(run_dir))
    callbacks.append(MetricsLog(run_dir / "metrics.jsonl"))
    if progress:
        callbacks.append(ProgressBar(console))
    checkpointer = ModelCheckpoint(run_dir / "checkpoints", ckpt.monitor, monitor_mode(ckpt.monitor, ckpt.mode))
    callbacks.append(checkpointer)  # last: the checkpoint holds the other callbacks' updated state
    meta = {
        "data_info": parts.data.info.to_dict(),
        "normalizer": None if parts.data.normalizer is None else parts.data.normalizer.state_dict(),
        "provenance": provenance(),
    }
    trainer = Trainer(
        cfg, parts.model, parts.loss_fn, parts.optimizer, parts.schedule, parts.data,
        parts.device, callbacks, meta,
    )
    start = time.perf_counter()
    trainer.fit()
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "stop_reason": trainer.stop_reason,
        "final": trainer.last_metrics,
        "best": {"monitor": ckpt.monitor, "value": checkpointer.best, "epoch": checkpointer.best_epoch},
        "time_s": round(time.perf_counter() - start, 3),
        "train_time_s": round(trainer.train_time, 3),
        "samples_per_s": round(trainer.samples_seen / max(trainer.train_time, 1e-9), 1),
    }
    best_path = run_dir / "checkpoints" / "best.pt"
    if train.test_at_end and parts.data.test is not None and best_path.exists():
        parts.model.load_state_dict(load_checkpoint(best_path)["model"])
        summary["test"] = evaluate(trainer.forward, parts.loss_fn, parts.data, "test", cfg, trainer.autocast, parts.model)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
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
    x = parts.data.train[0][: parts.cfg.data.batch_size]
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
