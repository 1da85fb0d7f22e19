"""The run folder: where a run is written, how a run is resumed, and what changed since it started.

Layout (README, "What a run leaves"): `<log.dir>/<name>/<YYYYmmdd-HHMMSS>/` with config.yaml, checkpoints/,
metrics.jsonl, TensorBoard event files and summary.json.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from nntrain import jsonfile
from nntrain.config import Config
from nntrain.errors import ConfigError, RunError
from nntrain.validate import config_from_dict


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
            raise cfg.locate(ConfigError(
                f"'{folder}' is a file, so no run folder can be made under '{cfg.log.dir}'; "
                f"set log.dir to a folder", key=("log", "dir")
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


def with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the defaults of keys added since it was written, so that a
    newer nntrain doesn't report them as changes on resume."""
    try:
        return config_from_dict(stored).to_dict()
    except ConfigError:  # no longer valid: compare as stored, and let the diff show why
        return stored


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Writes `record` as JSON atomically (temp file + rename): a reader never sees half a file.
    NaN and infinities are written as null (`jsonfile`): the file stays valid JSON."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(jsonfile.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None



# ---------------------------------------------------------------- one writer per run folder

LOCK_FILE = "run.lock"


class RunLock:
    """`<run_dir>/run.lock`, held while a process writes the run folder: `lock_run_dir` makes it,
    `release` (or the end of the process) removes it."""

    def __init__(self, path: Path, record: dict[str, Any]):
        self.path, self.record = path, record
        atexit.register(self.release)

    def release(self) -> None:
        """Removes the lock file if it is still this process's (idempotent)."""
        if _read_lock(self.path) == self.record:
            with contextlib.suppress(OSError):
                self.path.unlink()
        atexit.unregister(self.release)


def lock_run_dir(run_dir: Path) -> RunLock:
    """Takes `run_dir`'s lock: one process writes a run folder at a time.

    The lock file (pid, its start time and host) is created with O_EXCL, so of two processes one
    gets it. A lock left by a process that is gone (same host: kill -9, a crash) is taken over;
    a live holder, or one on another host (which can't be checked from here), is a ConfigError
    naming it (exit 2).
    """
    from nntrain.run_status import process_alive, process_start

    path = Path(run_dir) / LOCK_FILE
    record = {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname()}
    for _ in range(5):  # each turn either takes the lock or moves a stale one away
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None and _age_s(path) < 10:  # being written by its creator right now
                time.sleep(0.2)
                continue
            if holder is not None and (
                holder.get("host") != record["host"] or process_alive(holder.get("pid", -1), holder.get("pid_start"))
            ):
                raise ConfigError(
                    f"{run_dir} is in use by process {holder.get('pid')} on {holder.get('host')} "
                    f"(since {holder.get('since', '?')}); two processes writing one run folder would mix "
                    f"their steps and checkpoints. Wait for it to end, or stop it; if it is no longer "
                    f"running, delete {path}"
                ) from None
            _take_over(path, holder)
            continue
        except OSError as exc:
            raise RunError(f"cannot lock the run folder {run_dir}: {exc.strerror or exc}") from None
        record["since"] = datetime.now().astimezone().isoformat(timespec="seconds")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(jsonfile.dumps(record))
        return RunLock(path, record)
    raise ConfigError(f"{run_dir}: could not take its lock {path} (other processes keep taking it); try again")


def _take_over(path: Path, stale: dict[str, Any] | None) -> None:
    """Moves the stale lock `stale` away (a rename: of several processes that found it stale, one
    moves it). One that moved a newer lock instead (another process took over first) puts it back."""
    moved = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return  # another process moved it first
    if _read_lock(moved) != stale:
        with contextlib.suppress(OSError):
            os.link(moved, path)  # the live lock back where it was (fails only if a third made one)
    moved.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# Temporary files of nntrain's atomic writes: `.<name>.<pid>.tmp` (checkpoints, save_atomic),
# `.<name>.tmp-<pid>` (write_json) and `.<name>.tmp-<pid>-<thread>` (run.json).
_TEMPORARY = re.compile(r"^\..+?(?:\.(\d+)\.tmp|\.tmp-(\d+)(?:-\d+)?)$")


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Deletes the temporary files in `run_dir` and its checkpoints/ that writers which are gone
    left behind (a kill -9 while a checkpoint was written leaves one as large as the checkpoint);
    returns them. Call it holding the run's lock: no other process writes there then."""
    from nntrain.run_status import process_alive

    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if match is None or not entry.is_file():
                continue
            pid = int(match.group(1) or match.group(2))
            if pid == os.getpid() or process_alive(pid):
                continue
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


# ---------------------------------------------------------------- output files of commands


def check_output_path(path: Path, option: str, make_folders: bool = False) -> Path:
    """Refuses, before any work, an output file that can't be written: a ConfigError (exit 2)
    naming `option` when `path` is a folder, or its folder is missing (unless `make_folders`: the
    first existing folder above it must then be writable), a file, or not writable. Returns `path`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name (e.g. {path / 'metrics.json'})")
    folder = path.parent
    if make_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.exists():
        raise ConfigError(
            f"{option} {path}: the folder {folder} does not exist; create it first, or give a file in "
            f"an existing folder"
        )
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {path}: no permission to write {path if path.exists() else folder}")
    return path
