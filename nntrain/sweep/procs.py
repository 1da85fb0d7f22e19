"""Processes of a sweep: which are alive, and workers that die with the process that started them.

`nntrain sweep --workers N` starts N worker processes in their own sessions (a Ctrl-C at the
terminal reaches the parent only, which passes it on once). Their own sessions also mean that
nothing ends them when the parent is killed with -9, so each worker asks the kernel for SIGTERM
when its parent dies (Linux: prctl PR_SET_PDEATHSIG) and, on every system, watches its parent's
pid from a thread: an orphaned worker stops its trial like on a SIGTERM (last.pt saved, the trial
failed so that a resume runs it again) and is killed outright if it has not stopped 20 s later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nntrain.errors import Interrupted

PARENT_ENV = "NNTRAIN_SWEEP_PARENT"  # set by the parent for its --worker processes: its pid
KILL_AFTER_S = 20.0  # an orphaned worker that did not stop on SIGTERM is killed this long after
_PR_SET_PDEATHSIG = 1


def host() -> str:
    return socket.gethostname()


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, exited but not yet reaped, is not).

    A pid reused by another program counts as alive: the safe side, as its trials then wait for
    their heartbeat to expire instead of being run twice.
    """
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS), or it exited meanwhile: the kernel said alive
        return True


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Waits up to `timeout` seconds for `pids` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left


def _pdeathsig(signum: int) -> bool:
    """Linux: the kernel sends `signum` to this process when its parent dies. False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """In a --worker process: stop when the sweep process that started it is gone.

    The parent's pid comes from $NNTRAIN_SWEEP_PARENT (a worker started by hand has none: no-op).
    """
    text = os.environ.get(PARENT_ENV, "")
    if not text.isdigit():
        return
    parent = int(text)
    armed = _pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the kernel was asked
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        if not armed:
            os.kill(os.getpid(), signal.SIGTERM)  # stops the trial like a SIGTERM from the parent
        time.sleep(KILL_AFTER_S)
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    threading.Thread(target=watch, name="nntrain-parent-watch", daemon=True).start()


class SignalStop(KeyboardInterrupt):
    """Raised by `StopGate` inside a trial for SIGINT or SIGTERM (`signum`). A KeyboardInterrupt, so
    that no `except Exception` of the trial's code swallows it and optuna fails the trial with it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopGate:
    """SIGINT and SIGTERM while a process runs trials (`nntrain/sweep/study.py: work`): raised
    where a trial can take it.

    A signal's default (SIGTERM ends the process on the spot; SIGINT raises KeyboardInterrupt
    anywhere) could land while optuna records a trial's end in the storage: the trial stays
    RUNNING, or optuna itself fails ("Should not reach"). Here a signal raises `SignalStop` only
    inside a trial's objective (`trial_may_stop`; optuna then fails the trial, and it is marked to
    be run again); elsewhere it is remembered and raised at the next `check`, between trials, or
    when the block ends. Leaving `installed`, a stop is `Interrupted` (exit 130 / 143). `fit`
    takes both signals over while it trains (finish the update, save last.pt) and gives them back.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._in_trial = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The gate handles SIGINT and SIGTERM in this block (main thread only: signals reach it
        alone). Raises Interrupted if a signal stopped it, or came and was not raised yet."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.signum, self._in_trial = None, False
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
            self.check()
        except SignalStop as exc:
            raise Interrupted(f"{signal.Signals(exc.signum).name}: sweep stopped", exc.signum, "") from None
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def trial_may_stop(self) -> Iterator[None]:
        """A trial's objective: a signal (now, or one that came before) raises SignalStop here."""
        self._in_trial = True  # first: a signal between the two lines is raised by the check below
        try:
            self.check()
            yield
        finally:
            self._in_trial = False

    def check(self) -> None:
        """Raises SignalStop if a signal came."""
        if self.signum is not None:
            raise SignalStop(self.signum)

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self._in_trial:
            self.check()


STOP = StopGate()  # signals are the process's: one gate per process


def read_pids(path: Path) -> list[int]:
    """sweep.pid: the sweep process's pid on the first line, its worker processes' below."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")  # a damaged file: what can be read of it
    except OSError:
        return []
    # A pid is positive and below Linux's limit (2**22); anything else is damage, not a process.
    return [int(w) for w in text.split() if w.isascii() and w.isdigit() and 0 < int(w) < 2**22]


def write_pids(path: Path, pids: list[int]) -> None:
    path.write_text("".join(f"{p}\n" for p in pids), encoding="utf-8")
