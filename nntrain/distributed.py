"""Data-parallel training on torch's own runtime: torchrun starts the processes, DDP syncs gradients.

`nntrain fit CONFIG --nproc N` only re-launches itself under `torch.distributed.run` (torchrun).
Inside each process, WORLD_SIZE/RANK/LOCAL_RANK from torchrun select the shard and the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Only rank 0 writes TensorBoard, metrics, progress and checkpoints."""
    return rank() == 0


def planned_world_size() -> int:
    """The number of processes torchrun started for this job (known before the group is joined)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def launched() -> bool:
    """True in a process started by torchrun with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_name: str, timeout_s: float = 300.0) -> torch.device | None:
    """Joins the process group torchrun set up; returns this rank's device (None when not launched).

    nccl on CUDA, gloo on CPU. The timeout makes a collective fail instead of hanging forever
    when another rank died.
    """
    if not launched() or dist.is_initialized():
        return None
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    die_with_parent()  # a torchrun killed with -9 takes its workers with it
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sums `tensors` in place across ranks (no-op in a single process)."""
    if world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t`, in rank order (`[t]` in a single process)."""
    if world_size() == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is True on any rank: decisions (stop on a signal) are taken by all together."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (e.g. the run folder it created)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """Runs `python -m nntrain <argv>` under torchrun with `nproc` local processes; returns the
    job's exit code (128 + the signal's number when a signal stopped it).

    torchrun runs in a session of its own, so a terminal's Ctrl-C reaches this process only; a
    SIGINT or SIGTERM here is forwarded to torchrun, which forwards it once to every worker: each
    finishes its update, rank 0 saves last.pt, and this returns only after all of them are gone.
    """
    import signal

    command = [
        sys.executable, "-m", "nntrain.launch",
        "--nproc_per_node", str(nproc), "--standalone",
        "-m", "nntrain", *argv,
    ]
    proc = subprocess.Popen(command, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 128 + received[0] if received and code != 0 else code


def die_with_parent(signum: int = 15) -> None:
    """Linux: this process gets `signum` (SIGTERM: finish the update, save, stop) when the process
    that started it dies, so a torchrun killed with -9 leaves no worker training on its own."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl: nobody will stop this process
        os.kill(os.getpid(), signum)
