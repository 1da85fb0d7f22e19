"""The config schema (pydantic): every section, its keys, their types and ranges.

Values are checked as training would use them: numbers finite, booleans only where a switch goes,
integers within what torch takes. Reading YAML and `--set` overrides is in config_file.py; checking
components against the registries, and `load_config`, are in validate.py (above the registries).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import typing
from typing import Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nntrain import metrics
from nntrain.config_file import Source
from nntrain.errors import Key, NntrainError, shorten, unknown

INT_RANGE = (-(2**63), 2**63 - 1)  # what torch takes as an integer argument
SEED_RANGE = (0, 2**32 - 1)  # numpy's seeding; torch's generators take it as is
MAX_THREADS = 1024


def bool_as_number(annotation: Any) -> bool:
    """Whether pydantic would read `true`/`false` as 1/0 in `annotation`: a number goes there, and
    no boolean (a bool, or a Literal of one) does."""
    return _mentions(annotation, lambda a: a in (int, float)) and not _mentions(
        annotation, lambda a: a is bool or isinstance(a, bool)
    )


def _mentions(annotation: Any, test: typing.Callable[[Any], bool]) -> bool:
    if test(annotation):
        return True
    return any(_mentions(a, test) for a in typing.get_args(annotation))


def value_problem(value: Any, annotation: Any = Any) -> str | None:
    """What training would trip on in a number anywhere inside `value`: a non-finite float, an
    integer torch can't take, or a boolean where `annotation` wants a number; None if fine."""
    stack, seen = [value], 0
    while stack and seen < 100_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, bool):
            if bool_as_number(annotation):
                return f"expected a number, not a boolean (got {str(item).lower()})"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"must be a finite number (got {item})"
        elif isinstance(item, int) and not INT_RANGE[0] <= item <= INT_RANGE[1]:
            return f"must be an integer in [-2**63, 2**63 - 1] (got {shorten(item)})"
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return None


class _Checked(BaseModel):
    """Checks every field's value with `value_problem` before pydantic's own checks, and that an
    integer stays one torch can take after them."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _trainable(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        annotation = field.annotation if field is not None else Any
        problem = None if _has_model(annotation) else value_problem(value, annotation)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _in_range(cls, value: Any) -> Any:
        # `batch_size: 1e30` passes as a float and becomes an integer torch can't take
        if isinstance(value, int) and not isinstance(value, bool) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ValueError(f"must be an integer in [-2**63, 2**63 - 1] (got {shorten(value)})")
        return value


def _has_model(annotation: Any) -> bool:
    """Whether a schema section is inside `annotation` (it checks its own fields)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_has_model(a) for a in typing.get_args(annotation))


class _Strict(_Checked):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Component(BaseModel):
    """`{name: ..., **kwargs}`: the kwargs are checked against the builder's signature."""

    model_config = ConfigDict(extra="allow")
    name: str


class DataConfig(_Strict):
    dataset: Component
    val_split: float = Field(0.1, gt=0.0, lt=1.0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    shuffle: bool = True
    normalize: Component | None = None
    augment: list[Component] = []
    task: Literal["reconstruction"] | None = None  # reconstruction: the target is the input (autoencoders)
    # Keep the tensors in GPU memory (true), on the host with each batch staged through a pinned
    # buffer and copied without blocking (false), or decide by their size against the GPU's free
    # memory (auto). Moot off CUDA.
    on_device: Literal["auto", True, False] = "auto"
    # Imbalanced classes (issue 15). `balanced`: each epoch draws the training samples with
    # replacement, with probability inversely proportional to their class's frequency (epoch length
    # unchanged; the order a function of seed and epoch, like shuffling).
    sampler: Literal["balanced"] | None = None
    # Keep only this fraction of the training samples of the named classes (by name or index),
    # drawn with the seed: `{"3": 0.05}` makes a rare class. Validation and test splits are untouched.
    class_fraction: dict[str, typing.Annotated[float, Field(gt=0.0, le=1.0)]] | None = None


class RegularizationConfig(_Strict):
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    include_bias_and_norm: bool = False  # penalties and weight decay on biases/norm parameters too


class GradClip(_Strict):
    norm: float | None = Field(None, gt=0.0)
    value: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _one_of(self) -> GradClip:
        if (self.norm is None) == (self.value is None):
            raise ValueError("give exactly one of 'norm' (global L2 norm) or 'value' (per element)")
        return self


Mode = Literal["min", "max"] | None

Monitor = typing.Annotated[str, AfterValidator(metrics.check_monitor)]  # a key metrics.monitorable() lists


class EarlyStoppingConfig(_Strict):
    monitor: Monitor = "val/loss"
    mode: Mode = None  # None: max for accuracies, min otherwise
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = False  # on stopping, put the best epoch's weights back into the model


class CheckpointConfig(_Strict):
    monitor: Monitor = "val/loss"
    mode: Mode = None
    every_n_epochs: int = Field(1, ge=1)  # last.pt after every N epochs (and after the final one)
    every_n_steps: int | None = Field(None, ge=1)  # also last.pt every N optimizer updates
    keep_top_k: int = Field(0, ge=0)  # also keep the k best epochs as epoch-<E>.pt


class EmaConfig(_Strict):
    """`train.ema`: validation, checkpoints' `model`, eval, predict and export use the averaged weights."""

    decay: float = Field(0.999, gt=0.0, lt=1.0)  # avg = decay * avg + (1 - decay) * weights
    every_n_steps: int = Field(1, ge=1)  # average after every N optimizer updates


class SwaConfig(_Strict):
    """`train.swa`: from epoch `start_epoch` (1-based) the LR follows torch's SWALR towards `lr` (the
    config's scheduler stops there) and the weights are averaged at the end of every epoch."""

    start_epoch: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    anneal_epochs: int = Field(0, ge=0)  # epochs SWALR takes to move the LR to `lr` (0: at once)
    anneal_strategy: Literal["cos", "linear"] = "cos"


class TrainConfig(_Strict):
    epochs: int = Field(10, gt=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the model (checkpoints still hold plain weights)
    # NHWC memory layout for image batches on CUDA; null (the default) uses it wherever it applies.
    channels_last: bool | None = None
    accumulate: int = Field(1, ge=1)
    grad_clip: GradClip | None = None
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    test_at_end: bool = True  # evaluate the best checkpoint on the test split after training
    on_nan: Literal["stop", "skip"] = "stop"  # a non-finite loss stops the run, or its update is skipped
    deterministic: bool = False  # torch's deterministic algorithms (slower on CUDA)
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)  # CPU threads; default: OMP_NUM_THREADS, else torch's
    ema: EmaConfig | None = None  # an exponential moving average of the weights (issue 15)
    swa: SwaConfig | None = None  # stochastic weight averaging (issue 15)


def _metric_name(name: str) -> str:
    """A metric name (`f1_macro`; `val/f1_macro` is taken too), else ValueError with the closest one."""
    bare = name.removeprefix("val/")
    if bare not in metrics.names():
        raise ValueError(unknown("metric", name, metrics.names()))
    return bare


class LogConfig(_Strict):
    dir: typing.Annotated[str, AfterValidator(os.path.expanduser)] = "runs"  # `~/runs` is the home folder's
    tensorboard: bool = True
    every_n_steps: int = Field(50, gt=0)
    histograms_every_n_steps: int | None = Field(None, gt=0)  # weight/grad histograms (costly)
    report: bool = True  # <run>/report/: report.html, report.json and figures after the test (nntrain report)
    # Metrics computed on the validation split each epoch besides the task's defaults (costly ones
    # such as f1_macro are computed only when listed here or named by a monitor).
    metrics: list[typing.Annotated[str, AfterValidator(_metric_name)]] = []


_PARAM_KEYS = {
    "loguniform": ("type", "low", "high"),
    "uniform": ("type", "low", "high", "step"),
    "int": ("type", "low", "high", "step", "log"),
    "choice": ("type", "values"),
}


class SweepParam(_Checked):
    """One searched key: `{type: loguniform|uniform|int|choice, ...}`; a plain list is a choice.

    loguniform: low, high (low > 0), sampled on a log scale. uniform: low, high, optional `step`
    (a grid low, low+step, ..., high). int: low, high, optional `step` or `log: true`. choice: `values`,
    any YAML values (a list for `model.hidden`, a mapping for a whole section).
    """

    # which keys are allowed depends on `type`: checked below
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"type": "choice", "values": data}
        if not isinstance(data, dict):
            raise ValueError(
                "expected a mapping such as {type: loguniform, low: 1.0e-4, high: 0.1} or a list of values"
            )
        kind = data.get("type")
        if kind is None:
            nested = bool(data) and all(isinstance(v, dict) for v in data.values())
            hint = "; searched keys are written dotted, e.g. optimizer.lr: {type: loguniform, ...}" if nested else ""
            raise ValueError(f"missing 'type' (choices: {', '.join(_PARAM_KEYS)}){hint}")
        if kind not in _PARAM_KEYS:
            raise ValueError(unknown("type", kind, _PARAM_KEYS))
        for key in data:
            if key not in _PARAM_KEYS[kind]:
                raise ValueError(f"{unknown('key', key, _PARAM_KEYS[kind], 'allowed')} for type {kind}")
        return data

    @model_validator(mode="after")
    def _ranges(self) -> SweepParam:
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty list 'values'")
            labels = [json.dumps(v, sort_keys=True) for v in self.values]
            twice = [v for i, v in enumerate(self.values) if labels[i] in labels[:i]]
            if twice:
                raise ValueError(f"choice 'values' lists {twice[0]!r} more than once")
            return self
        low, high = self.low, self.high
        if low is None or high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if not low < high:
            raise ValueError(f"'low' must be below 'high' (got low={low:g}, high={high:g})")
        if self.type == "loguniform" and low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got low={low:g})")
        if self.type == "int":
            numbers = {"low": low, "high": high, "step": self.step}
            odd = [f"{k}={v:g}" for k, v in numbers.items() if v is not None and not float(v).is_integer()]
            if odd:
                raise ValueError(f"int needs integer low, high and step (got {', '.join(odd)})")
            if self.log and self.step is not None:
                raise ValueError("int takes 'step' or 'log: true', not both")
            if self.log and low < 1:
                raise ValueError(f"int with log: true needs low >= 1 (got low={low:g})")
        if self.step is not None:
            if not 0 < self.step <= high - low:
                raise ValueError(f"'step' must be in (0, high - low] (got step={self.step:g})")
            n = (high - low) / self.step
            if abs(n - round(n)) > 1e-9:  # the grid must end on `high`
                raise ValueError(f"'step' must divide high - low (got step={self.step:g} for {low:g} to {high:g})")
        return self


class SweepConfig(_Strict):
    """`nntrain sweep`: the metric to optimize, how to search, and the searched keys.

    `nntrain fit` ignores this section: it is how to search, not what a run trains.
    """

    metric: Monitor
    direction: Literal["maximize", "minimize"] | None = None  # None: maximize accuracies, minimize the rest
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    trials: int | None = Field(None, gt=0)  # None: 20, or every point of the grid for the grid sampler
    min_epochs: int = Field(1, ge=1)  # epochs every trial runs before the pruner may stop it
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])  # the sampler's; None: the config's
    params: dict[str, SweepParam] = Field(min_length=1)  # dotted config key -> distribution


class Config(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    seed: int = Field(0, ge=SEED_RANGE[0], le=SEED_RANGE[1])  # python, numpy and torch generators
    data: DataConfig
    model: Component
    loss: Component = Component(name="cross_entropy")
    optimizer: Component = Component(name="adam", lr=1e-3)
    scheduler: Component | None = None
    regularization: RegularizationConfig = RegularizationConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    sweep: SweepConfig | None = None  # `nntrain sweep` only

    def to_dict(self) -> dict[str, Any]:
        """The trained config: without `sweep` (how to search, not what a run trains), so run folders,
        checkpoints and the config hash are the same with or without one."""
        return self.model_dump(mode="json", exclude={"sweep"})

    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def where(self, key: Key) -> str:
        """Where `key` was written: `file:line`, `--set ...`, or the config's origin."""
        return self._source.where(key) if self._source is not None else ""

    def locate(self, exc: NntrainError) -> NntrainError:
        """Attaches to an error found while building (it carries its key) the place of its key;
        returns the error."""
        if self._source is None:
            return exc
        return exc.locate(self.where)

    def with_source(self, source: Source) -> Config:
        """Remembers where each key came from (for `where` and `locate`); returns self."""
        self._source = source
        return self

    _source: Source | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the content; not where it was read from
        return isinstance(other, Config) and self.model_dump() == other.model_dump()


def _fields_at(loc: Key) -> list[str]:
    """The field names of the schema model reached by `loc` (for did-you-mean)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        ann = field.annotation
        for arg in (ann, *typing.get_args(ann)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
            else:
                continue
            break
        else:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def unknown_key(name: Any, choices: list[str]) -> str:
    """`unknown key 'x'; did you mean 'y'? (allowed: ...)`."""
    return unknown("key", name, choices, "allowed")


def check_schema(raw: dict[str, Any]) -> tuple[Config | None, list[tuple[Key, str]]]:
    """The config, or None, and the schema's problems as (dotted key, message)."""
    try:
        return Config.model_validate(raw), []
    except ValidationError as exc:
        return None, [_problem(err) for err in exc.errors()]


def _problem(err: Any) -> tuple[Key, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    if err["type"] == "extra_forbidden":
        return loc, unknown_key(loc[-1], _fields_at(loc[:-1]))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] != "missing" and "(got " not in msg and not isinstance(err.get("input"), dict):
        msg += f" (got {shorten(err.get('input'))})"
    return loc, msg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (without `sweep`), as run folders store it."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
