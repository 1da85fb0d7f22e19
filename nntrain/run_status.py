"""A run's status: `run.json` in its folder says who runs it and how it ended.

`fit` writes it when the run starts ("running", with the process id, its host and a heartbeat a
thread renews every HEARTBEAT_S seconds) and when the run ends ("finished", "interrupted" or
"failed", with the reason). A run killed with `kill -9`, or on a machine that went down, never
writes its end: `state` reads such a run as "stopped", because its process is gone (same host) or
its heartbeat is older than STALE_S (any host).

Light on purpose (no torch, no config schema): `nntrain runs` reads many of these.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from nntrain import jsonfile

STATUS_FILE = "run.json"
HEARTBEAT_S = 15.0
STALE_S = 120.0  # no heartbeat for this long: the process is gone (or stopped with kill -STOP)
ENDED = ("finished", "interrupted", "failed")
STATUSES = ("running", *ENDED, "stopped")


class RunStatus:
    """Writes `<run_dir>/run.json` for the run `fit` trains there.

    Resuming a run in its folder starts it again: "running", `resumes` one more, `started` kept.

    Args:
        run_dir: the run folder.
        cfg: the run's config (its planned epochs and monitored metric are recorded).
        write: False on processes that write no files (ranks other than 0): then it does nothing.
    """

    def __init__(self, run_dir: Path, cfg: Any, write: bool = True):
        self.path, self.write = Path(run_dir) / STATUS_FILE, write
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None
        self.record: dict[str, Any] = {}
        if not write:
            return
        from nntrain.metrics import monitor_mode

        previous = read_status(self.path.parent)
        now = _now()
        checkpoint = cfg.train.checkpoint
        self.record = {
            "status": "running",
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),  # tells this process from a later one with its pid
            "host": socket.gethostname(),
            "started": previous["started"] if previous and previous.get("started") else now,
            "resumes": previous.get("resumes", 0) + 1 if previous else 0,
            "epochs_planned": cfg.train.epochs,
            "monitor": checkpoint.monitor,
            "mode": monitor_mode(checkpoint.monitor, checkpoint.mode),
            "heartbeat": now,
            "ended": None,
            "reason": None,
        }
        self._write(strict=True)
        self._thread = threading.Thread(target=self._beat, name="nntrain-heartbeat", daemon=True)
        self._thread.start()

    def _write(self, strict: bool = False) -> None:
        with self._lock:
            try:
                write_atomic(self.path, self.record)
            except OSError as exc:
                if strict:  # at the start: the run folder is not writable, say so now
                    from nntrain.errors import RunError

                    raise RunError(f"cannot write {self.path}: {exc.strerror or exc}") from None
                # later: a full disk must not end the run from a side thread; the run's own writes will

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.record["heartbeat"] = _now()
            self._write()

    def end(self, status: str, reason: str | None = None) -> None:
        """Records how the run ended ("finished", "interrupted", "failed") and stops the heartbeat."""
        if not self.write or self.record.get("ended"):
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = _now()
        self.record.update(status=status, heartbeat=now, ended=now, reason=reason)
        self._write()

    def end_with(self, exc: BaseException) -> None:
        """Records the exception `fit` leaves with: a signal is "interrupted", anything else "failed"."""
        from nntrain.errors import Interrupted, NntrainError

        if isinstance(exc, Interrupted):
            self.end("interrupted", str(exc).splitlines()[0])
        elif isinstance(exc, KeyboardInterrupt):
            self.end("interrupted", "aborted at once (a second interrupt)")
        elif isinstance(exc, NntrainError):
            self.end("failed", str(exc))
        else:
            self.end("failed", f"{type(exc).__name__}: {exc}")


def write_atomic(path: Path, record: dict[str, Any]) -> None:
    """JSON through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(jsonfile.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """run.json of a run folder as written; None if there is none or it is unreadable."""
    try:
        record = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def state(record: dict[str, Any], now: datetime | None = None) -> tuple[str, str | None]:
    """(status, reason) of a run from its run.json: an ended run as recorded; a "running" one is
    "stopped" if its process is gone (same host) or its heartbeat is older than STALE_S."""
    status = record.get("status")
    if status in ENDED:
        return status, record.get("reason")
    now = now or datetime.now().astimezone()
    beat = parse_time(record.get("heartbeat"))
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        if not process_alive(record["pid"], record.get("pid_start")):
            return "stopped", f"process {record['pid']} is gone (killed?) without recording an end"
    if beat is None or (now - beat).total_seconds() > STALE_S:
        seen = "never" if beat is None else f"since {beat.strftime('%Y-%m-%d %H:%M:%S')}"
        return "stopped", f"no heartbeat {seen} (process {record.get('pid')} on {record.get('host')})"
    return "running", None


def process_start(pid: int) -> int | None:
    """When process `pid` started (Linux: clock ticks after boot, from /proc/<pid>/stat); None
    where that is unknown, or for a process that is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (command) ": state, ..., starttime (22nd)
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs, and is the one that started at `started` (process_start) if given."""
    if Path("/proc/self/stat").exists():
        now = process_start(pid)
        return now is not None and (started is None or now == started)
    try:  # no /proc (macOS): the kernel's word that the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def parse_time(text: Any) -> datetime | None:
    """An ISO time of run.json (with its UTC offset); None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.astimezone()


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")
