"""Checking a config's components against the registries before anything is built.

A component is `{name: ..., **kwargs}`. Its name must be in the registry and its kwargs must be
keyword arguments of the builder, of the annotated type and range; then the registry's own hooks
run (`Registry.set_checks`: extra keys, filled-in arguments, placeholders, a dry build). Importing
this module imports every implementation package, so every registry is full.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

import nntrain.data.augment  # noqa: F401 - registers augmentations
import nntrain.data.sources  # noqa: F401 - registers datasets
import nntrain.data.transforms  # noqa: F401 - registers normalizers
import nntrain.losses  # noqa: F401 - registers losses
import nntrain.models  # noqa: F401 - registers models, activations, inits
import nntrain.optim  # noqa: F401 - registers optimizers
import nntrain.schedules  # noqa: F401 - registers schedulers
from nntrain.config import unknown_key, value_problem
from nntrain.data.info import INFERRED
from nntrain.errors import Key, quote, shorten
from nntrain.registries import (
    AUGMENTATIONS,
    DATASETS,
    LOSSES,
    MODELS,
    NORMALIZERS,
    OPTIMIZERS,
    REGISTRIES,
    SCHEDULERS,
)
from nntrain.registry import Registry

__all__ = ["INFERRED", "REGISTRIES", "component_errors", "spec_errors"]

Problems = list[tuple[Key, str]]


def _components(raw: dict[str, Any]) -> Iterator[tuple[Key, Registry, Any]]:
    """(config key, registry, spec) of every component a raw config names."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    yield ("data", "dataset"), DATASETS, data.get("dataset")
    yield ("data", "normalize"), NORMALIZERS, data.get("normalize")
    augment = data.get("augment")
    for i, spec in enumerate(augment if isinstance(augment, list) else []):
        yield ("data", "augment", i), AUGMENTATIONS, spec
    yield ("model",), MODELS, raw.get("model")
    yield ("loss",), LOSSES, raw.get("loss")
    yield ("optimizer",), OPTIMIZERS, raw.get("optimizer")
    yield ("scheduler",), SCHEDULERS, raw.get("scheduler")


def component_errors(raw: dict[str, Any]) -> Problems:
    """Problems of every component of a raw config mapping, as (dotted key, message)."""
    errors: Problems = []
    for key, registry, spec in _components(raw):
        errors += spec_errors(key, registry, spec)
    return errors


def spec_errors(key: Key, registry: Registry, spec: Any) -> Problems:
    """Problems of one component `spec` at config `key`; [] when it can be built."""
    if isinstance(spec, str) and registry.bare_name:
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return []  # the schema reports the shape
    name = spec["name"]
    if name not in registry:
        return [(key + ("name",), registry.unknown_message(name))]
    spec = {k: _resolved(registry, k, v) for k, v in spec.items()}
    errors: Problems = []
    for arg, value in spec.items():
        if arg != "name":
            errors += [(key + (arg,) + sub, msg) for sub, msg in _argument_errors(registry, name, arg, value)]
    params = registry.parameters(name)
    for arg, p in params.items():
        if p.default is p.empty and arg not in registry.filled and arg not in spec:
            errors.append((key + (arg,), f"missing: {registry.kind} '{name}' needs it"))
    if not errors and registry.dry_build is not None:
        errors += _dry_build(key, registry, spec)
    return errors


def _resolved(registry: Registry, arg: str, value: Any) -> Any:
    """A placeholder the registry resolves before building (`lr: auto`) -> the value checked."""
    if arg in registry.stand_ins and isinstance(value, str) and value == registry.stand_ins[arg][0]:
        return registry.stand_ins[arg][1]
    return value


def _argument_errors(registry: Registry, name: str, arg: str, value: Any) -> Problems:
    """Problems of one keyword argument, keyed below it (`()` for the argument itself)."""
    if arg in registry.extra_keys:
        return registry.extra_keys[arg](value)
    params = registry.parameters(name)
    if arg not in params:
        return [((), f"{unknown_key(arg, list(params))} for {registry.kind} '{name}'")]
    if arg in registry.nested:
        return [] if value is None else spec_errors((), registry.nested[arg], value)
    annotation = registry.hints(name).get(arg, Any)
    msg = value_problem(value, annotation) or _type_error(annotation, value)
    return [((), msg)] if msg else []


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True, allow_inf_nan=False))
    except Exception:  # noqa: BLE001 - e.g. annotations pydantic can't express
        return None


def _type_error(annotation: Any, value: Any) -> str | None:
    adapter = None if annotation is Any else _adapter(annotation)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        # A union (`degrees: 10` or `degrees: [-5, 10]`) fails in every branch; the branch of the
        # value's own shape says what is wrong with it, not "Input should be a valid number".
        error = min(exc.errors(), key=_error_rank)
        return f"{error['msg'].removeprefix('Value error, ')} (got {shorten(value)})"
    return None


def _error_rank(error: Any) -> int:
    """Range and value errors first, then wrong lengths, then wrong types (another union branch),
    and last "an instance of Tensor": torch's `lr: float | Tensor` should say a number is expected."""
    kind = error["type"]
    if kind == "is_instance_of":
        return 3
    if kind.endswith(("_type", "_parsing")):
        return 2
    return 1 if kind in ("too_long", "too_short") else 0


def _dry_build(key: Key, registry: Registry, spec: dict[str, Any]) -> Problems:
    """Runs the registry's dry build so the builder's own argument checks run before any data loads."""
    try:
        registry.dry_build(spec)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        return [(key, f"{registry.kind} '{spec['name']}' rejects these arguments: {quote(str(exc), 200)}")]
    return []
