"""Model families. Each file registers its builders in MODELS."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from nntrain import memory
from nntrain.data.info import INFERRED
from nntrain.errors import CheckpointError, ConfigError, Key, shorten, unknown
from nntrain.memory import format_bytes
from nntrain.registries import MODELS


class InitFrom(BaseModel):
    """`model.init_from`: start a submodule from another run's weights (transfer learning).

    `checkpoint` is a checkpoint file, a run folder (its best.pt), or an experiment folder
    `runs/<name>` (best.pt of its latest run). `component` names a submodule (`encoder`, `rnn`,
    `encoder.0`; dotted paths work); its weights come from the submodule of the same name in the
    checkpoint's model. No component: the whole model. `freeze: true` keeps the component fixed:
    no gradients, no optimizer updates, and it stays in eval mode (dropout off, batch-norm statistics unchanged).
    """

    model_config = ConfigDict(extra="forbid")
    checkpoint: str
    component: str | None = None
    freeze: bool = False


def init_from_problems(value: Any) -> list[tuple[Key, str]]:
    """Problems of a `model.init_from` value, keyed below it; [] when it is fine or None."""
    if value is None:
        return []
    try:
        InitFrom.model_validate(value)
    except ValidationError as exc:
        return [
            (tuple(err["loc"]), unknown("key", err["loc"][-1], list(InitFrom.model_fields), "allowed")
             if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors()
        ]
    return []


_INIT_FROM = ("model", "init_from")

# Every model takes `init_from`; the data fills in the INFERRED sizes a config leaves out.
MODELS.set_checks(extra_keys={"init_from": init_from_problems}, filled=INFERRED)


def build_model(spec: dict[str, Any], inferred: dict[str, Any], device: torch.device | None = None) -> nn.Module:
    """Builds `spec`, filling in the sizes the data determines.

    Args:
        spec: the `model` section ({name, **kwargs}).
        inferred: sizes the data says (in_features, in_channels, image_size, num_classes...).
        device: where the model will be trained or run (its memory is checked too); it is built on the CPU.

    Raises:
        ConfigError: an explicit size disagrees with the data; the model doesn't fit in memory.
    """
    params = MODELS.parameters(spec["name"])
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "init_from")}
    if "output_size" in inferred and "num_classes" not in inferred and "output_size" not in params:
        # A model with one output head (mlp, lenet) predicts regression data's values with it.
        inferred = {**inferred, "num_classes": inferred["output_size"]}
    for key, value in inferred.items():
        if key not in params:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"the config says {shorten(kwargs[key])} but the data has {value!r}; "
                f"remove the key to use the data's value", key=("model", key)
            )
        kwargs[key] = value
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ConfigError(
            f"model '{spec['name']}' needs it and the data doesn't determine it; set it in the config",
            key=("model", missing[0]),
        )
    model = _build_within_memory({"name": spec["name"], **kwargs}, device)
    if spec.get("init_from") is not None:
        init_from(model, InitFrom.model_validate(spec["init_from"]), spec["name"])
    return model


def _build_within_memory(spec: dict[str, Any], device: torch.device | None) -> nn.Module:
    """MODELS.build(spec), after building it on the meta device (no memory, no random numbers
    drawn) to check that its weights fit on the host and on `device`: a ConfigError with the size
    it needs instead of an allocator's traceback, also when the allocation fails anyway."""
    rng = torch.get_rng_state()
    try:
        with torch.device("meta"):
            sizes: tuple[int, int, int] | None = _sizes(MODELS.build(spec))
    except Exception:  # noqa: BLE001 - a builder that can't run on meta: the real build says what is wrong
        sizes = None
    finally:
        torch.set_rng_state(rng)
    if sizes is not None:
        for where in dict.fromkeys([torch.device("cpu"), device or torch.device("cpu")]):
            have, what = memory.device_memory(where)
            if have is not None and sizes[0] > have:
                raise ConfigError(_too_large(spec["name"], sizes, f"{what} {format_bytes(have)}"), key=("model",))
    try:
        return MODELS.build(spec)
    except Exception as exc:
        if not memory.is_out_of_memory(exc):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        problem = f"allocating them failed ({detail})"
        message = (
            _too_large(spec["name"], sizes, problem) if sizes is not None
            else f"'{spec['name']}' does not fit in memory: {problem}; make it smaller (fewer or narrower layers)"
        )
        raise ConfigError(message, key=("model",)) from None


def _sizes(model: nn.Module) -> tuple[int, int, int]:
    """(bytes of parameters and buffers, number of parameters, bytes of parameters)."""
    params = list(model.parameters())
    return memory.tensor_bytes(model), sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def _too_large(name: str, sizes: tuple[int, int, int], problem: str) -> str:
    """`'mlp' needs 3.6 TiB for its weights (N parameters x 4 bytes; ...); <problem>; make it smaller`."""
    nbytes, count, param_bytes = sizes
    each = f"{param_bytes // count} bytes" if count and param_bytes % count == 0 else "their bytes"
    return (
        f"'{name}' needs {format_bytes(nbytes)} for its weights ({count:,} parameters x {each}; training adds "
        f"gradients and optimizer state, about 2-3x more); {problem}; make it smaller (fewer or narrower layers)"
    )


def _freeze(module: nn.Module) -> None:
    module.requires_grad_(False)
    # Fixed means fixed: the component ignores model.train(), so dropout stays off and batch-norm
    # statistics stop moving while the rest of the model trains.
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)
    module.eval()


def _resolve_checkpoint(path: str) -> str:
    """A checkpoint file; a run folder -> its best.pt; runs/<name> -> best.pt of its latest run."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    if (folder / "checkpoints" / "best.pt").is_file():
        return str(folder / "checkpoints" / "best.pt")
    # Run folders are named by start time (YYYYmmdd-HHMMSS[-i]): the last one is the latest run.
    runs = sorted(d for d in folder.iterdir() if (d / "checkpoints" / "best.pt").is_file())
    if not runs:
        raise CheckpointError(
            f"{path} is a folder without checkpoints/best.pt, nor runs that have one; "
            f"train the pretrained model first or give a checkpoint file", key=_INIT_FROM + ("checkpoint",)
        )
    return str(runs[-1] / "checkpoints" / "best.pt")


def init_from(model: nn.Module, spec: InitFrom, name: str = "model") -> None:
    """Loads `spec.component`'s weights from an nntrain checkpoint into `model` (and freezes it).

    Raises:
        ConfigError: the model has no such submodule, or `freeze` without a component.
        CheckpointError: the checkpoint is unreadable, lacks the component, or its shapes differ.
    """
    from nntrain.checkpoint import load_checkpoint

    component, path = spec.component, spec.checkpoint
    if spec.freeze and not component:
        raise ConfigError("name the component to freeze (e.g. component: encoder)", key=_INIT_FROM + ("freeze",))
    target = model
    if component:
        try:
            target = model.get_submodule(component)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise ConfigError(
                f"model '{name}' has no submodule '{component}' (it has: {children})", key=_INIT_FROM + ("component",)
            ) from None
    path = _resolve_checkpoint(path)
    try:
        state = full = load_checkpoint(path, purpose="weights")["model"]
    except CheckpointError as exc:
        raise CheckpointError(str(exc), key=_INIT_FROM + ("checkpoint",)) from None
    if component:
        prefix = component + "."
        state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(
                f"the model in {path} has no '{component}' "
                f"(it has: {', '.join(sorted({k.split('.')[0] for k in full}))})", key=_INIT_FROM + ("component",)
            )
    own = target.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckpointError(
            f"the weights of '{component or 'model'}' in {path} don't fit this model's "
            f"(build it with the same sizes as the pretrained one): {shown}", key=_INIT_FROM
        )
    target.load_state_dict(state)
    if spec.freeze:
        _freeze(target)


# Register the families (import for their side effect).
from nntrain.models import autoencoder, lenet, mlp, rnn  # noqa: E402,F401
