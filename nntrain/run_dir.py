"""The run folder: where a run is written, how a run is resumed, and what changed since it started.

Layout (DESIGN.md): `<log.dir>/<name>/<YYYYmmdd-HHMMSS>/` with config.yaml, checkpoints/,
metrics.jsonl, TensorBoard event files and summary.json.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from nntrain import jsonfile
from nntrain.config import Config
from nntrain.validate import config_from_dict
from nntrain.errors import ConfigError, RunError


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

