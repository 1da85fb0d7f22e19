"""Atomic checkpoint writes, safe loads (`weights_only=True`), RNG state and provenance."""

from __future__ import annotations

import os
import pickle
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nntrain.errors import CheckpointError, RunError

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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads an nntrain checkpoint with `weights_only=True`: no pickled code is ever run.

    Raises:
        CheckpointError: missing, unreadable, truncated, carrying code, or not nntrain's.
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
            raise CheckpointError(f"{path}: not a readable checkpoint (damaged, or not written by torch.save)")
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
    return ckpt


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
