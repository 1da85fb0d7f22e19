"""Where training runs: the device, its mixed precision, and options that do nothing on it."""

from __future__ import annotations

import contextlib
import platform
from typing import TYPE_CHECKING

import torch

from nntrain.errors import ConfigError, NntrainError

if TYPE_CHECKING:
    from nntrain.config import Config
    from nntrain.data.loaders import Data


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
                f"'{name}' is not available (this machine has {count} CUDA devices); use auto or cpu",
                key=("train", "device"),
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("'mps' is not available on this machine; use auto or cpu", key=("train", "device"))
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for `bf16`/`fp16`; a no-op for `fp32`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def device_warnings(cfg: Config, device: torch.device, data: Data) -> list[NntrainError]:
    """Options that do nothing (or harm) on `device`, each as a message that carries its key
    (`str(w)`: `key: why`; `cfg.locate(w)` adds where the key was written)."""
    train, found = cfg.train, []
    images = data.train[0].dim() == 4
    if train.channels_last and (device.type != "cuda" or not images):
        what = f"device {device.type}" if device.type != "cuda" else f"{cfg.data.dataset.name} gives no images"
        found.append(NntrainError(
            f"applies to image batches on CUDA only; ignored here ({what})", key=("train", "channels_last")
        ))
    if device.type == "cpu" and train.precision != "fp32" and platform.machine().lower() in ("x86_64", "amd64"):
        # Intel's bf16/fp16 instructions (AVX512-BF16, AMX-FP16); torch can't say for other CPUs.
        native = {"bf16": "_is_avx512_bf16_supported", "fp16": "_is_amx_fp16_supported"}[train.precision]
        if not getattr(torch.cpu, native, lambda: False)():
            found.append(NntrainError(
                f"{train.precision} has no native support on this CPU, so it is "
                f"emulated and usually slower than fp32; it is meant for GPUs",
                key=("train", "precision"),
            ))
    if device.type != "cuda" and cfg.data.on_device is False:
        found.append(NntrainError(
            f"false keeps data off GPU memory; ignored on device {device.type}", key=("data", "on_device")
        ))
    return found
