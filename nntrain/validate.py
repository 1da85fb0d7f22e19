"""A whole config checked before anything is built: `load_config` for a file, `config_from_dict`
for a stored one, both through `validate`.

The schema (config.py) and every component against its registry (components.py); all problems
are reported together, one line each, in file order: `cfg.yaml:12 optimizer.lr: what is wrong`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nntrain.components import component_errors
from nntrain.config import Config, check_schema
from nntrain.config_file import Source, apply_overrides, raw_problems, read_yaml
from nntrain.errors import ConfigError, Key


def validate(raw: dict[str, Any], source: Source | None = None) -> Config:
    """Validates a raw mapping: its keys, the schema, then every component against its registry.

    Args:
        raw: the config as read (overrides applied).
        source: where each key came from, for messages (default: no file).

    Raises:
        ConfigError: every problem found, one line each.
    """
    source = source or Source("<config>")
    problems = raw_problems(raw)
    cfg = None
    if not problems:  # keys that are no names would only confuse the schema
        cfg, problems = check_schema(raw)
        problems += component_errors(raw)
    if problems:
        raise report(problems, source)
    assert cfg is not None
    return cfg.with_source(source)


def report(problems: list[tuple[Key, str]], source: Source) -> ConfigError:
    """One ConfigError for many problems: one line each, each once, in file order (overrides and
    problems the file has no line for last)."""
    lines = {str(ConfigError(msg, key, source.where(key))): source.order(key) for key, msg in problems}
    return ConfigError("\n".join(sorted(lines, key=lines.__getitem__)))


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Reads, overrides and validates a YAML config file."""
    raw, source = read_yaml(Path(path))
    raw = apply_overrides(raw, list(overrides), source)
    return validate(raw, source)


def config_from_dict(raw: dict[str, Any], overrides: list[str] = (), where: str = "<checkpoint>") -> Config:
    """Validates a config stored in a checkpoint, with optional `--set` overrides."""
    source = Source(where)
    return validate(apply_overrides(raw, list(overrides), source), source)
