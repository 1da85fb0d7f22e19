"""How much memory a model or a data set needs, compared with what the machine has, before allocating it.

A model or data set larger than memory would otherwise fail inside the allocator (a traceback, or
the kernel's OOM killer after minutes of swapping). Builders estimate first (`need`), and turn an
allocation failure that happens anyway into the same message (`is_out_of_memory`).

Leaf module: torch only.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import torch

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def format_bytes(n: float) -> str:
    """`1536` -> `1.5 KiB`; `4e12` -> `3.6 TiB`."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # unreachable


def host_memory() -> tuple[int | None, str]:
    """(bytes, what they are): the most memory this process can use on the host, the smallest of
    the physical memory, a container's (cgroup) limit and an address-space limit (`ulimit -v`,
    less what the process has mapped already); (None, "") where none of these can be read."""
    found: list[tuple[int, str]] = []
    try:
        found.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine has"))
    except (AttributeError, OSError, ValueError):
        pass
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            found.append((int(text), "this container may use"))
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            found.append((max(0, soft - _mapped()), "this process may map at most (ulimit -v)"))
    except (OSError, ValueError):
        pass
    return min(found) if found else (None, "")


def _mapped() -> int:
    """Bytes of address space this process maps now (Linux; 0 elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
        return int(status.split("VmSize:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return 0


def device_memory(device: torch.device | None) -> tuple[int | None, str]:
    """(bytes, what they are) where tensors on `device` live: the GPU's free memory on CUDA, else the host's."""
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return free, f"{device} has free"
        except (RuntimeError, AssertionError):
            return None, ""
    return host_memory()


def need(nbytes: int, device: torch.device | None = None) -> str | None:
    """None when `nbytes` fit in memory (or memory is unknown); else `needs X; this machine has Y`."""
    have, what = device_memory(device)
    if have is None or nbytes <= have:
        return None
    return f"needs {format_bytes(nbytes)}; {what} {format_bytes(have)}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure (host or GPU) rather than a bug."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("not enough memory", "can't allocate memory", "out of memory", "cannot allocate memory")
    )


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (works on the meta device, which allocates nothing)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
