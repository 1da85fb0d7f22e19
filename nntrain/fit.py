"""`nntrain fit` and `nntrain check`: a config trained into a run folder, or tried on one batch."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from nntrain import distributed, memory
from nntrain.build import Parts, build_callbacks, build_parts, build_trainer
from nntrain.callbacks import Callback, ModelCheckpoint
from nntrain.checkpoint import load_checkpoint, provenance
from nntrain.config import Config, to_yaml
from nntrain.errors import CheckpointError, ConfigError, Interrupted, RunError
from nntrain.run_dir import (
    RunLock,
    check_log_dir,
    config_diff,
    lock_run_dir,
    make_run_dir,
    remove_stale_temporaries,
    resume_checkpoint,
    with_defaults,
    write_json,
)
from nntrain.run_status import RunStatus  # run.json, read by `nntrain runs`
from nntrain.trainer import Trainer


def fit(
    cfg: Config,
    console: Any = None,
    progress: bool = True,
    resume: str | Path | None = None,
    allow_config_change: bool = False,
    extra_callbacks: Sequence[Callback] = (),
    run_dir: Path | None = None,
    monitors: dict[str, str] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Trains `cfg` into a new run folder, or continues the run `resume` points at.

    `extra_callbacks` run after the built-in ones and before the checkpointer (a sweep's pruning);
    `run_dir` is the new run's folder (it must not exist) instead of `<log.dir>/<name>/<stamp>`;
    `monitors` are metrics the callbacks of `extra_callbacks` watch (`{"sweep.metric": "val/acc"}`);
    `report: False` skips the report `log.report` asks for (sweep trials). Rank 0 holds the run
    folder's lock (`run_dir.lock_run_dir`) while it writes there.

    Returns the summary (also written to summary.json).

    Raises:
        Interrupted: SIGINT/SIGTERM arrived; last.pt was saved first.
        ConfigError: another process writes the run folder (exit 2).
    """
    locks: list[RunLock] = []
    try:
        ckpt, diff = _resume_state(cfg, resume, allow_config_change, locks) if resume else (None, [])
        if resume is None and run_dir is None:
            check_log_dir(cfg)  # every config and data error surfaces before a run folder is created
        parts = build_parts(
            cfg,
            normalizer_state=None if ckpt is None else ckpt.get("normalizer"),
            data_info=None if ckpt is None else ckpt.get("data_info"),
            monitors=monitors,
            class_weights=None if ckpt is None else ckpt.get("class_weights"),
        )
        if ckpt is not None:
            run_dir = resume_checkpoint(resume).parent.parent
        run_dir = _open_run_dir(cfg, run_dir, resumed=ckpt is not None, diff=diff, locks=locks)
        status = RunStatus(run_dir, cfg, write=distributed.is_main())  # run.json: nntrain runs
        try:
            summary = _train(parts, run_dir, ckpt, resume, progress, console, extra_callbacks, report)
        except BaseException as exc:
            status.end_with(exc)
            raise
        status.end("finished")
        return summary
    finally:
        for lock in locks:
            lock.release()


def _train(
    parts: Parts, run_dir: Path, ckpt: dict[str, Any] | None, resume: str | Path | None, progress: bool,
    console: Any, extra_callbacks: Sequence[Callback], report: bool,
) -> dict[str, Any]:
    """Builds the callbacks and the Trainer, trains, and finishes the run: summary, test, report."""
    cfg, main = parts.cfg, distributed.is_main()
    callbacks, checkpointer = build_callbacks(
        cfg, run_dir, None if ckpt is None else ckpt["step"], main, progress, console, extra_callbacks, parts.data,
    )
    trainer = build_trainer(parts, callbacks, meta={
        "data_info": parts.data.info.to_dict(),
        "normalizer": None if parts.data.normalizer is None else parts.data.normalizer.state_dict(),
        "provenance": provenance(),
    })
    if ckpt is not None:
        _restore(trainer, ckpt, resume)
    start = time.perf_counter()
    try:
        with _stop_on_signals(trainer):
            trainer.fit()
    except OSError as exc:
        raise RunError(f"cannot write to the run folder {run_dir}: {exc.strerror or exc}") from None
    except (RuntimeError, MemoryError) as exc:
        if not memory.is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, f"in epoch {trainer.epoch + 1}, step {trainer.step}") from None
    if trainer.interrupted is not None:
        distributed.barrier()  # rank 0 has saved last.pt before any rank leaves the job
        raise _interrupted(trainer, run_dir)
    summary = _summary(trainer, parts, checkpointer, run_dir, time.perf_counter() - start)
    test = _test_best(trainer, parts, run_dir)
    if test is not None:
        summary["test"] = test
    if main and cfg.log.report and report:  # <run>/report/; its failure is a RunError
        from nntrain.report import report_run

        written = report_run(run_dir, parts, trainer.eval_model, trainer.autocast)
        summary["report"] = None if written is None else str(written)
    if main:
        write_json(run_dir / "summary.json", summary)
    return summary


def _resume_state(
    cfg: Config, resume: str | Path, allow_config_change: bool, locks: list[RunLock]
) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint to continue from, and how `cfg` differs from the run's config (refused
    unless `allow_config_change`). Rank 0 locks the run folder first (into `locks`)."""
    if os.environ.get("RANK", "0") == "0":  # rank 0 (the process group is not joined yet)
        # Before anything is read or written there: a second process resuming the run is refused now.
        folder = resume_checkpoint(resume).parent.parent
        locks.append(lock_run_dir(folder))
        remove_stale_temporaries(folder)  # of writers killed while they wrote (a checkpoint's worth each)
    ckpt = load_checkpoint(resume_checkpoint(resume), purpose="resume")
    stored_lr = (ckpt["config"].get("optimizer") or {}).get("lr")
    if getattr(cfg.optimizer, "lr", None) == "auto" and stored_lr is not None:  # keep the LR the range test chose
        cfg.optimizer.lr = stored_lr
    diff = config_diff(with_defaults(ckpt["config"]), cfg.to_dict())
    saved_world, world = ckpt.get("world_size", 1), distributed.planned_world_size()
    if saved_world != world:
        # Each process gets its share of every batch: another count changes the data order and the
        # number of updates per epoch. Allowed, the schedule is rescaled to the new count.
        diff.append(f"processes (--nproc): {saved_world} -> {world}")
    if diff and not allow_config_change:
        raise ConfigError(
            f"--resume {resume}: the config differs from the one the run was started with:\n  "
            + "\n  ".join(diff)
            + "\nresume with the same config and --set options, or pass --allow-config-change"
        )
    return ckpt, diff


def _restore(trainer: Trainer, ckpt: dict[str, Any], resume: str | Path) -> None:
    """Puts the checkpoint's training state into `trainer`; a state that doesn't fit the model and
    optimizer the config builds (a damaged or edited checkpoint) is a CheckpointError."""
    try:
        trainer.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:300]
        raise CheckpointError(
            f"--resume {resume}: the checkpoint's training state doesn't fit this run "
            f"(damaged, or not from this config?): {type(exc).__name__}: {detail}"
        ) from None


def _open_run_dir(cfg: Config, run_dir: Path | None, resumed: bool, diff: list[str], locks: list[RunLock]) -> Path:
    """Rank 0 creates the run folder, locks it (into `locks`) and writes config.yaml (beside it, on
    a resume with a changed config, config.resumed-<stamp>.yaml); every rank gets its path."""
    main = distributed.is_main()
    try:
        if resumed and diff and main:  # the original config.yaml stays; the changed one is kept beside it
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            (run_dir / f"config.resumed-{stamp}.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        elif not resumed and main:
            if run_dir is None:
                run_dir = make_run_dir(cfg)
            else:
                run_dir.mkdir(parents=True)  # never an existing folder (FileExistsError is an OSError)
            locks.append(lock_run_dir(run_dir))
            (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write the run folder: {exc.strerror or exc} ({exc.filename})") from None
    return Path(distributed.broadcast(str(run_dir) if main else None))


def _out_of_memory(exc: BaseException, when: str) -> RunError:
    """Memory ran out while training (activations of a batch, optimizer state): what to lower."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return RunError(
        f"out of memory {when} ({detail}); lower data.batch_size, make the model smaller, or on a GPU "
        f"set train.precision: bf16"
    )


def _interrupted(trainer: Trainer, run_dir: Path) -> Interrupted:
    name = signal.Signals(trainer.interrupted).name
    return Interrupted(
        f"{name}: stopped at epoch {trainer.epoch + 1}, step {trainer.step}; "
        f"saved {run_dir / 'checkpoints' / 'last.pt'}",
        trainer.interrupted,
        str(run_dir),
    )


def _summary(
    trainer: Trainer, parts: Parts, checkpointer: ModelCheckpoint, run_dir: Path, wall_s: float
) -> dict[str, Any]:
    """What summary.json holds: progress, final and best metrics, timings and throughput."""
    t = trainer
    return {
        "run_dir": str(run_dir),
        "epochs": t.epoch,
        "steps": t.step,
        "stop_reason": t.stop_reason,
        "final": t.last_metrics,
        "best": {"monitor": checkpointer.monitor, "value": checkpointer.best, "epoch": checkpointer.best_epoch},
        "nan_skipped": t.nan_skipped,  # batches whose loss was not finite (train.on_nan: skip)
        "updates_skipped": t.updates_skipped,  # updates none of whose batches had a finite loss
        "found_lr": parts.found_lr,
        "time_s": round(wall_s, 3),
        "train_time_s": round(t.train_time, 3),
        "samples_per_s": round(t.samples_seen * t.world / max(t.train_time, 1e-9), 1),
        "step_time_ms": round(1000 * t.train_time / max(t.step, 1), 3),
        "data_wait_share": round(t.data_time / max(t.train_time, 1e-9), 4),
    }


def _test_best(trainer: Trainer, parts: Parts, run_dir: Path) -> dict[str, float] | None:
    """`train.test_at_end`: the best checkpoint's metrics on the test split (None without one)."""
    best_path = run_dir / "checkpoints" / "best.pt"
    distributed.barrier()  # rank 0 has written best.pt
    if not parts.cfg.train.test_at_end or parts.data.test is None or not best_path.exists():
        return None
    # Into the model the trainer evaluates (the averaged copy with train.ema / train.swa).
    trainer.eval_model.load_state_dict(load_checkpoint(best_path, purpose="weights")["model"])
    return trainer.evaluate("test")


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM: finish the current update, save last.pt, stop. A second SIGINT aborts at once;
    a repeated SIGTERM is ignored while saving."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.interrupted is not None:
            if signum == signal.SIGTERM:  # sent again (a scheduler, a dying parent): keep saving
                return
            raise KeyboardInterrupt  # a second Ctrl-C: abort at once
        trainer.interrupted = signum
        if not distributed.is_main():
            return  # under torchrun, rank 0 speaks for the job
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
    trainer = build_trainer(parts)
    try:
        trainer.update([next(trainer.train_loader.epoch(0))], log=False)
    except (RuntimeError, MemoryError) as exc:
        if not memory.is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, "in the first training step") from None
    loss = trainer.flush_loss()
    if loss is None or not math.isfinite(loss):
        shown = "that is not finite (skipped: train.on_nan: skip)" if loss is None else f"of {loss}"
        raise RunError(f"the first training batch gives a loss {shown}")
    return parts, rows, {"train/loss": loss}
