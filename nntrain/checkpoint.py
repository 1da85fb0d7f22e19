"""Atomic checkpoint writes, safe loads (`weights_only=True`), RNG state and provenance."""

from __future__ import annotations

import os
import pickle
import platform
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nntrain.errors import CheckpointError, RunError, shorten

FORMAT = "nntrain/1"


def save_atomic(obj: Any, path: str | Path) -> None:
    """Writes `obj` with torch.save so that `path` is always either the old or the new file.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then renamed
    over `path`: a crash at any moment leaves a loadable checkpoint.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def load_checkpoint(path: str | Path, purpose: str | None = None) -> dict[str, Any]:
    """Loads an nntrain checkpoint with `weights_only=True`: no pickled code is ever run.

    Its structure is checked once, here: every entry it holds has the right type, and those that
    `purpose` needs ("weights", "eval", "resume"; PURPOSES) are present.

    Raises:
        CheckpointError: missing, unreadable, truncated, carrying code, not nntrain's, or with
            entries missing or wrong (one message naming the file and every problem).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a checkpoint file such as {path / 'checkpoints' / 'best.pt'}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        detail = message.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail = detail[0][:200] if detail else ""
        if "global" not in detail.lower() and "reduce" not in detail.lower():
            # Not a class or callable the unpickler met: the bytes are simply not a pickle.
            raise CheckpointError(
                f"{path}: not a readable checkpoint (damaged, or not written by torch.save)"
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled Python objects, which could run code "
            f"({detail}); nntrain checkpoints hold only tensors and plain data"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        lines = str(exc).strip().splitlines()  # empty for an empty file
        detail = lines[0] if lines else "the file is empty" if path.stat().st_size == 0 else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged?): {detail[:200]}") from None
    except (KeyError, IndexError):
        # Arbitrary bytes (a text file, say) reach torch's legacy unpickler, which fails this way.
        raise CheckpointError(f"{path}: not a readable checkpoint: torch.save did not write this file") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nntrain checkpoint (no '{FORMAT}' format marker)")
    problems = checkpoint_problems(ckpt, purpose)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise CheckpointError(
            f"{path}: a damaged nntrain checkpoint, it can't be used {PURPOSES[purpose][0]}: {shown}"
        )
    return ckpt


# ---------------------------------------------------------------- structure


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _state_dict(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _mapping(*keys: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(k in v for k in keys)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _rng(v: Any) -> bool:
    return (
        isinstance(v, dict) and isinstance(v.get("python"), (list, tuple)) and len(v["python"]) == 3
        and _mapping("bit_generator", "key", "pos", "has_gauss", "gauss")(v.get("numpy"))
        and isinstance(v["numpy"]["key"], torch.Tensor) and isinstance(v.get("torch"), torch.Tensor)
    )


# Each entry a checkpoint may hold: what it must be, and the test. The trainer writes them all
# (Trainer.state_dict); `load_checkpoint` checks every entry present, and that those its purpose
# needs are present, so that no caller meets a KeyError or TypeError deep inside torch.
ENTRIES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("a state dict (parameter names to tensors)", _state_dict),
    "raw_model": ("a state dict (parameter names to tensors)", _state_dict),
    "config": ("a mapping (the run's config)", lambda v: isinstance(v, dict)),
    "optimizer": ("an optimizer state (with 'state' and 'param_groups')", _mapping("state", "param_groups")),
    "scheduler": ("a schedule's state or null", _optional(lambda v: isinstance(v, dict))),
    "scaler": ("a gradient scaler's state", lambda v: isinstance(v, dict)),
    "epoch": ("a count (an integer >= 0)", _count),
    "step": ("a count (an integer >= 0)", _count),
    "batch_in_epoch": ("a count (an integer >= 0)", _count),
    "world_size": ("a number of processes (an integer >= 1)", lambda v: _count(v) and v >= 1),
    "loss_sums": (
        "the loss sums (interval, interval_count, epoch, epoch_count)",
        lambda v: _mapping("interval", "interval_count", "epoch", "epoch_count")(v)
        and isinstance(v["epoch"], torch.Tensor) and _number(v["interval_count"]) and _number(v["epoch_count"]),
    ),
    "counters": (
        "the counters (samples_seen, train_time, data_time, nan_skipped)",
        lambda v: _mapping("samples_seen", "train_time", "data_time", "nan_skipped")(v)
        and all(_number(v[k]) for k in ("samples_seen", "train_time", "data_time", "nan_skipped")),
    ),
    "rng": ("the random generators' states (python, numpy, torch)", _rng),
    "aug_rng": ("a generator state (a tensor)", lambda v: isinstance(v, torch.Tensor)),
    "callbacks": ("a mapping of the callbacks' states", lambda v: isinstance(v, dict)),
    "metrics": ("a mapping of metric names to values", lambda v: isinstance(v, dict)),
    "normalizer": ("the normalizer's statistics (names to tensors) or null", _optional(_state_dict)),
    "data_info": ("a mapping (task, input shape, classes) or null", _optional(lambda v: isinstance(v, dict))),
    "class_weights": ("a mapping or null", _optional(lambda v: isinstance(v, dict))),
}

# What each use of a checkpoint needs: (how messages say it, the entries it reads).
PURPOSES: dict[str | None, tuple[str, tuple[str, ...]]] = {
    None: ("", ()),
    "weights": ("for its weights", ("model",)),
    "eval": ("to evaluate, predict or export", ("model", "config", "epoch", "step")),
    "resume": ("to resume", (
        "model", "config", "optimizer", "scheduler", "scaler", "epoch", "step", "batch_in_epoch",
        "loss_sums", "counters", "rng", "aug_rng", "callbacks", "metrics",
    )),
}


def checkpoint_problems(ckpt: dict[str, Any], purpose: str | None = None) -> list[str]:
    """What is missing or wrong in `ckpt` for `purpose` (a key of PURPOSES); [] when it is usable."""
    problems = [f"no '{k}' entry" for k in PURPOSES[purpose][1] if k not in ckpt]
    for key, (what, check) in ENTRIES.items():
        if key in ckpt and not check(ckpt[key]):
            problems.append(f"'{key}' is not {what} (it holds {_kind(ckpt[key])})")
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a mapping with keys {shorten(list(value)[:8])}"
    return f"{type(value).__name__} {shorten(value)}"


def rng_state() -> dict[str, Any]:
    """Every RNG state, as plain data and tensors (loadable with weights_only=True)."""
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(keys), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def provenance() -> dict[str, Any]:
    """Versions of what produced a checkpoint, and the git commit when run from a checkout."""
    from nntrain import __version__

    info: dict[str, Any] = {
        "nntrain": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
