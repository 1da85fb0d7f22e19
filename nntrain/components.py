"""Which registry each config section names, and checking components before anything is built.

A component is `{name: ..., **kwargs}`. Its name must be in the registry and its kwargs must
be keyword arguments of the builder, of the annotated type and range.
"""

from __future__ import annotations

import functools
import typing
from typing import Any, Iterator

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError

from nntrain.config import Key, _unknown_key
from nntrain.data.datasets import DATASETS
from nntrain.data.transforms import AUGMENTATIONS, NORMALIZERS
from nntrain.losses import LOSSES
from nntrain.models import MODELS, InitFrom
from nntrain.models.init import ACTIVATIONS, INITS
from nntrain.optim import OPTIMIZERS
from nntrain.schedules import SCHEDULERS
from nntrain.registry import Registry

# Registries by the KIND argument of `nntrain list`.
REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "losses": LOSSES,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "augmentations": AUGMENTATIONS,
    "activations": ACTIVATIONS,
    "inits": INITS,
    "normalizers": NORMALIZERS,
}

# Model arguments the data determines (DESIGN.md): optional in configs, checked against the data.
INFERRED = (
    "in_features", "in_channels", "image_size", "num_classes",
    "input_size", "vocab_size", "padding_idx", "output_size", "variable_length",
)

# Model arguments that name a component of another registry.
_NESTED = {"activation": ACTIVATIONS, "init": INITS}

# Torch built-ins carry no range annotations; these names are never negative.
_NON_NEGATIVE = {"lr", "weight_decay", "momentum", "dampening", "lr_decay", "eps", "label_smoothing"}


def _components(raw: dict[str, Any]) -> Iterator[tuple[Key, Registry, Any]]:
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


@functools.lru_cache(maxsize=None)
def _hints(registry: Registry, name: str) -> dict[str, Any]:
    fn = registry.get(name)
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip the type check
        return {}


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # noqa: BLE001 - e.g. annotations pydantic can't express
        return None


def _type_error(annotation: Any, value: Any) -> str | None:
    adapter = _adapter(annotation)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        # A union (`degrees: 10` or `degrees: [-5, 10]`) fails in every branch; the branch of the
        # value's own shape says what is wrong with it, not "Input should be a valid number".
        error = min(exc.errors(), key=_error_rank)
        return f"{error['msg'].removeprefix('Value error, ')} (got {value!r})"
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


def spec_errors(key: Key, registry: Registry, spec: Any) -> list[tuple[Key, str]]:
    """Problems of one component `spec` at config `key`; [] when it can be built."""
    if isinstance(spec, str) and registry in _NESTED.values():
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return []  # the schema reports the shape
    name = spec["name"]
    if name not in registry:
        return [(key + ("name",), registry.unknown_message(name))]
    params = registry.parameters(name)
    hints = _hints(registry, name)
    errors: list[tuple[Key, str]] = []
    for arg, value in spec.items():
        if arg == "name":
            continue
        if registry is MODELS and arg == "init_from":
            errors += _init_from_errors(key + (arg,), value)
        elif arg not in params:
            errors.append((key + (arg,), _unknown_key(arg, list(params)) + f" for {registry.kind} '{name}'"))
        elif registry is MODELS and arg in _NESTED:
            if value is not None:
                errors += spec_errors(key + (arg,), _NESTED[arg], value)
        elif registry is OPTIMIZERS and arg == "lr" and value == "auto":
            continue  # chosen by an LR range test before training (experiment.build_parts)
        elif arg in _NON_NEGATIVE and isinstance(value, (int, float)) and value < 0:
            errors.append((key + (arg,), f"must be >= 0 (got {value!r})"))
        elif arg in hints and (msg := _type_error(hints[arg], value)):
            errors.append((key + (arg,), msg))
    for arg, p in params.items():
        required = p.default is p.empty and not (registry is MODELS and arg in INFERRED)
        if required and arg not in spec:
            errors.append((key + (arg,), f"missing: {registry.kind} '{name}' needs it"))
    if not errors:
        errors += _dry_build(key, registry, spec)
    return errors


def _init_from_errors(key: Key, value: Any) -> list[tuple[Key, str]]:
    """`model.init_from` ({checkpoint, component, freeze}), allowed for every model."""
    if value is None:
        return []
    try:
        InitFrom.model_validate(value)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(str(loc[-1]), list(InitFrom.model_fields))
            else:
                msg = err["msg"]
            errors.append((key + loc, msg))
        return errors
    return []


def _dry_build(key: Key, registry: Registry, spec: dict[str, Any]) -> list[tuple[Key, str]]:
    """Builds cheap components once so torch's own argument checks run before any data loads."""
    try:
        if registry is OPTIMIZERS or registry is SCHEDULERS:
            weight = torch.nn.Parameter(torch.zeros(2, 2))
            if registry is OPTIMIZERS:
                concrete = {**spec, "lr": 1e-3} if spec.get("lr") == "auto" else spec
                OPTIMIZERS.build(concrete, params=[weight])
            else:
                optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
                SCHEDULERS.build(spec, optimizer=optimizer, steps_per_epoch=10, epochs=2)
        elif registry is LOSSES:
            LOSSES.build(spec)
    except (ValueError, TypeError, KeyError) as exc:
        return [(key, f"{registry.kind} '{spec['name']}' rejects these arguments: {exc}")]
    return []


def component_errors(raw: dict[str, Any]) -> list[tuple[Key, str]]:
    """Problems of every component of a raw config mapping."""
    errors: list[tuple[Key, str]] = []
    for key, registry, spec in _components(raw):
        errors += spec_errors(key, registry, spec)
    return errors
