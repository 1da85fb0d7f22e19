"""`nntrain config CONFIG [--explain]`: the resolved config with every default filled in, and
where each value came from.

A value comes from a file (`configs/a.yaml:12`, the config or one of its bases), from a `--set`,
from a default (the schema's, or the keyword default of a component's builder: `default (optimizer
'sgd')`), or from the data (`inferred from the data`: the sizes `DataInfo.model_kwargs` gives a
model that its config leaves out).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nntrain.errors import Key

SCHEMA_DEFAULT = "default"
SCALARS = (str, int, float, bool, type(None))


@dataclass
class Explained:
    """The resolved config (`values`, a plain mapping in config order) and each leaf's origin."""

    values: dict[str, Any]
    origins: dict[Key, str]
    note: str | None = None  # why inferred sizes are missing (the data could not be loaded)


def _yaml_value(value: Any) -> tuple[bool, Any]:
    """(representable, value as YAML takes it): tuples become lists; objects are not shown."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return False, None
    if isinstance(value, SCALARS):
        return True, value
    if isinstance(value, list) and all(_yaml_value(v)[0] for v in value):
        return True, [_yaml_value(v)[1] for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) and _yaml_value(v)[0] for k, v in value.items()):
        return True, {k: _yaml_value(v)[1] for k, v in value.items()}
    return False, None


def _components(values: dict[str, Any]) -> Iterator[tuple[Key, Any]]:
    """(config key, registry) of every component the resolved config names."""
    from nntrain.registries import AUGMENTATIONS, DATASETS, LOSSES, MODELS, NORMALIZERS, OPTIMIZERS, SCHEDULERS

    data = values.get("data") or {}
    yield ("data", "dataset"), DATASETS
    if isinstance(data.get("normalize"), dict):
        yield ("data", "normalize"), NORMALIZERS
    for i, spec in enumerate(data.get("augment") or []):
        if isinstance(spec, dict):
            yield ("data", "augment", i), AUGMENTATIONS
    yield ("model",), MODELS
    yield ("loss",), LOSSES
    yield ("optimizer",), OPTIMIZERS
    if isinstance(values.get("scheduler"), dict):
        yield ("scheduler",), SCHEDULERS


def _get(tree: Any, key: Key) -> Any:
    for part in key:
        tree = tree[part]
    return tree


def written(source: Any, key: Key) -> str | None:
    """Where `key` itself was written (a file line, or a `--set` at or above it); None if nowhere."""
    for i in range(len(key), -1, -1):
        if key[:i] in source.overrides:
            return source.where(key)
    if key in source.lines:
        return source.where(key)
    return None


def explain(path: Path, overrides: list[str], load_data: bool = True) -> Explained:
    """Reads, overrides and validates a config, fills every default in, and says where each
    value came from.

    Args:
        path: the config file.
        overrides: `--set` texts.
        load_data: load the data to show the sizes it determines (False: they are left out).

    Raises:
        ConfigError: the config is invalid (as `nntrain fit` would say).
    """
    from nntrain.config_file import apply_overrides, read_yaml
    from nntrain.validate import validate

    raw, source = read_yaml(Path(path))
    raw = apply_overrides(raw, list(overrides), source)
    cfg = validate(raw, source)
    values = cfg.to_dict()
    filled: dict[Key, str] = {}
    for key, registry in _components(values):
        spec = _get(values, key)
        name = spec.get("name")
        if name not in registry:
            continue
        for arg, param in registry.parameters(name).items():
            if arg in spec or param.default is inspect.Parameter.empty or arg in registry.filled:
                continue
            ok, value = _yaml_value(param.default)
            if ok:
                spec[arg] = value
                filled[key + (arg,)] = f"default ({registry.kind} '{name}')"
    note = None
    if load_data:
        note = _infer(cfg, values, filled)
    origins: dict[Key, str] = {}
    for key, _ in leaves(values):
        origins[key] = written(source, key) or filled.get(key) or SCHEMA_DEFAULT
    return Explained(values, origins, note)


def _infer(cfg: Any, values: dict[str, Any], filled: dict[Key, str]) -> str | None:
    """Adds the model sizes the data determines (and the config leaves out); returns why it could
    not, or None."""
    from nntrain.data.loaders import build_data
    from nntrain.errors import NntrainError
    from nntrain.registries import MODELS

    try:
        data = build_data(cfg.data, cfg.seed)
    except NntrainError as exc:
        return f"the data could not be loaded, so the sizes it determines are not shown: {exc}"
    model = values["model"]
    accepted = MODELS.parameters(model["name"]) if model["name"] in MODELS else {}
    for arg, value in data.info.model_kwargs().items():
        if arg in accepted and arg not in model:
            ok, shown = _yaml_value(value)
            if ok:
                model[arg] = shown
                filled[("model", arg)] = f"inferred from the data ({cfg.data.dataset.name})"
    return None


def leaves(tree: Any, key: Key = ()) -> Iterator[tuple[Key, Any]]:
    """(key, value) of every leaf: scalars, lists of scalars, empty sections."""
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from leaves(v, key + (k,))
    elif isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        for i, v in enumerate(tree):
            yield from leaves(v, key + (i,))
    else:
        yield key, tree


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render(explained: Explained, with_origins: bool) -> str:
    """The config as YAML; with `with_origins`, each value's origin as a comment after it."""
    lines: list[tuple[str, str | None]] = []

    def walk(tree: Any, key: Key, indent: str, first_prefix: str | None = None) -> None:
        items = list(tree.items())
        for n, (k, v) in enumerate(items):
            pad = first_prefix if (first_prefix is not None and n == 0) else indent
            sub = key + (k,)
            if isinstance(v, dict) and v:
                lines.append((f"{pad}{k}:", None))
                walk(v, sub, indent + "  ")
            elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
                lines.append((f"{pad}{k}:", None))
                for i, item in enumerate(v):
                    if isinstance(item, dict) and item:
                        walk(item, sub + (i,), indent + "    ", indent + "  - ")
                    else:
                        lines.append((f"{indent}  - {_scalar(item)}", explained.origins.get(sub + (i,))))
            else:
                lines.append((f"{pad}{k}: {_scalar(v)}", explained.origins.get(sub)))

    walk(explained.values, (), "")
    if not with_origins:
        return "\n".join(text for text, _ in lines) + "\n"
    width = min(max(len(text) for text, _ in lines) + 2, 60)
    out = [text if origin is None else f"{text.ljust(width)}# {origin}" for text, origin in lines]
    return "\n".join(out) + "\n"


def summary(explained: Explained) -> dict[str, int]:
    """How many values came from each kind of origin (files, --set, defaults, the data)."""
    counts: dict[str, int] = {}
    for origin in explained.origins.values():
        kind = ("--set" if origin.startswith("--set") else "default" if origin.startswith("default")
                else "data" if origin.startswith("inferred") else "file")
        counts[kind] = counts.get(kind, 0) + 1
    return counts

