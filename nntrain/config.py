"""The config schema (pydantic), YAML loading with line numbers, and `--set` overrides.

Every error names the file and line, the dotted key, what is wrong and what is allowed,
and all errors of a config are reported together.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from nntrain.errors import ConfigError

Key = tuple[Union[str, int], ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    normalize: Optional[Component] = None
    augment: list[Component] = []
    task: Optional[Literal["reconstruction"]] = None  # reconstruction: the target is the input (autoencoders)
    # Keep the tensors in GPU memory (true), on the host with each batch staged through a pinned
    # buffer and copied without blocking (false), or decide by their size against the GPU's free
    # memory (auto). Moot off CUDA.
    on_device: Literal["auto", True, False] = "auto"


class RegularizationConfig(_Strict):
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    include_bias_and_norm: bool = False  # penalties and weight decay on biases/norm parameters too


class GradClip(_Strict):
    norm: Optional[float] = Field(None, gt=0.0)
    value: Optional[float] = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _one_of(self) -> "GradClip":
        if (self.norm is None) == (self.value is None):
            raise ValueError("give exactly one of 'norm' (global L2 norm) or 'value' (per element)")
        return self


Mode = Optional[Literal["min", "max"]]

# Metrics the trainer records; `monitor` keys must name one.
METRICS = ("train/loss", "val/loss", "val/acc", "val/mse", "val/rmse", "val/mae")

# The metrics `evaluate()` reports for each task (DataInfo.task), besides the losses.
TASK_METRICS = {
    "classification": ("val/acc",),
    "regression": ("val/mse", "val/rmse", "val/mae"),
    "reconstruction": ("val/mse",),
}


def _known_metric(name: str) -> str:
    if name not in METRICS:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown metric '{name}'{hint} (choices: {', '.join(METRICS)})")
    return name


Monitor = typing.Annotated[str, AfterValidator(_known_metric)]


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
    every_n_steps: Optional[int] = Field(None, ge=1)  # also last.pt every N optimizer updates
    keep_top_k: int = Field(0, ge=0)  # also keep the k best epochs as epoch-<E>.pt


class TrainConfig(_Strict):
    epochs: int = Field(10, gt=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the model (checkpoints still hold plain weights)
    # NHWC memory layout for image batches on CUDA; null (the default) uses it wherever it applies.
    channels_last: Optional[bool] = None
    accumulate: int = Field(1, ge=1)
    grad_clip: Optional[GradClip] = None
    early_stopping: Optional[EarlyStoppingConfig] = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    test_at_end: bool = True  # evaluate the best checkpoint on the test split after training
    on_nan: Literal["stop", "skip"] = "stop"  # a non-finite loss stops the run, or its update is skipped
    deterministic: bool = False  # torch's deterministic algorithms (slower on CUDA)
    threads: Optional[int] = Field(None, ge=1)  # CPU threads; default: OMP_NUM_THREADS, else torch's


class LogConfig(_Strict):
    dir: str = "runs"
    tensorboard: bool = True
    every_n_steps: int = Field(50, gt=0)
    histograms_every_n_steps: Optional[int] = Field(None, gt=0)  # weight/grad histograms (costly)


_PARAM_KEYS = {
    "loguniform": ("type", "low", "high"),
    "uniform": ("type", "low", "high", "step"),
    "int": ("type", "low", "high", "step", "log"),
    "choice": ("type", "values"),
}


class SweepParam(BaseModel):
    """One searched key: `{type: loguniform|uniform|int|choice, ...}`; a plain list is a choice.

    loguniform: low, high (low > 0), sampled on a log scale. uniform: low, high, optional `step`
    (a grid low, low+step, ..., high). int: low, high, optional `step` or `log: true`. choice: `values`,
    any YAML values (a list for `model.hidden`, a mapping for a whole section).
    """

    model_config = ConfigDict(extra="allow")  # which keys are allowed depends on `type`: checked below
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    values: Optional[list[Any]] = None

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
            close = difflib.get_close_matches(str(kind), _PARAM_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown type '{kind}'{hint} (choices: {', '.join(_PARAM_KEYS)})")
        for key in data:
            if key not in _PARAM_KEYS[kind]:
                raise ValueError(f"{_unknown_key(str(key), list(_PARAM_KEYS[kind]))} for type {kind}")
        return data

    @model_validator(mode="after")
    def _ranges(self) -> "SweepParam":
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
    direction: Optional[Literal["maximize", "minimize"]] = None  # None: maximize accuracies, minimize the rest
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    trials: Optional[int] = Field(None, gt=0)  # None: 20, or every point of the grid for the grid sampler
    min_epochs: int = Field(1, ge=1)  # epochs every trial runs before the pruner may stop it
    seed: Optional[int] = None  # the sampler's seed; None: the config's seed
    params: dict[str, SweepParam] = Field(min_length=1)  # dotted config key -> distribution


class Config(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    seed: int = 0
    data: DataConfig
    model: Component
    loss: Component = Component(name="cross_entropy")
    optimizer: Component = Component(name="adam", lr=1e-3)
    scheduler: Optional[Component] = None
    regularization: RegularizationConfig = RegularizationConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    sweep: Optional[SweepConfig] = None  # `nntrain sweep` only

    def to_dict(self) -> dict[str, Any]:
        """The trained config: without `sweep` (how to search, not what a run trains), so run folders,
        checkpoints and the config hash are the same with or without one."""
        return self.model_dump(mode="json", exclude={"sweep"})

    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def locate(self, message: str) -> str:
        """Prefixes `file:line` to a message that starts with a dotted key (`data.dataset.path: ...`),
        for errors found while building, after validation."""
        match = re.match(r"([A-Za-z_][\w]*(?:\.\w+)*)(?: \([^)]*\))?: ", message)  # `key: ` or `key (what): `
        # Only a key of the config: a message may also start with a data file's name (`a.csv: ...`).
        if match is None or self._source is None or match.group(1).split(".")[0] not in type(self).model_fields:
            return message
        key = tuple(int(p) if p.isdigit() else p for p in match.group(1).split("."))
        return f"{self._source.where(key)} {message}"

    _source: Optional["_Source"] = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the content; not where it was read from
        return isinstance(other, Config) and self.model_dump() == other.model_dump()


def monitor_mode(monitor: str, mode: Optional[str]) -> str:
    """The explicit mode, else 'max' for accuracies and 'min' for losses."""
    return mode or ("max" if monitor.endswith("acc") else "min")


# ---------------------------------------------------------------- loading


class _Source:
    """Where each key of the raw config came from: a YAML line or a `--set` override."""

    def __init__(self, path: str, lines: dict[Key, int]):
        self.path, self.lines = path, lines
        self.overrides: dict[Key, str] = {}

    def where(self, key: Key) -> str:
        for i in range(len(key), -1, -1):
            if key[:i] in self.overrides:
                return f"--set {self.overrides[key[:i]]}"
        if key not in self.lines:
            # A section the file lacks, created by a deeper override (`--set trian.epochs=3`).
            created = [text for k, text in self.overrides.items() if k[: len(key)] == key]
            if created:
                return f"--set {created[-1]}"
        for i in range(len(key), -1, -1):
            if key[:i] in self.lines:
                return f"{self.path}:{self.lines[key[:i]]}"
        return self.path


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading `1e-3` as a number, as YAML 1.2 does (YAML 1.1 wants `1.0e-3`,
    and a string `lr: '1e-3'` would pass validation and then fail inside torch)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _safe_load(text: str) -> Any:
    """One YAML document through `_Loader`, a SafeLoader: tags that build Python objects are refused."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _dotted(key: Key) -> str:
    return ".".join(str(k) for k in key) or "<top level>"


def _line_map(node: yaml.Node, key: Key, lines: dict[Key, int], errors: list[str], path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k_node, v_node in node.value:
            k = k_node.value
            if k in seen:
                errors.append(f"{path}:{k_node.start_mark.line + 1} {_dotted(key + (k,))}: duplicate key")
            seen.add(k)
            lines[key + (k,)] = k_node.start_mark.line + 1
            _line_map(v_node, key + (k,), lines, errors, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[key + (i,)] = item.start_mark.line + 1
            _line_map(item, key + (i,), lines, errors, path)


def _read_yaml(path: Path) -> tuple[dict[str, Any], _Source]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        raw = _safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = (exc.problem or str(exc)).strip()
        if "python/" in problem or "could not determine a constructor" in problem:
            problem += " (only plain YAML is allowed: tags that build Python objects are refused)"
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least 'name', 'data' and 'model'")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}:1: the config must be a mapping of sections (name, data, model, ...), "
            f"not a {type(raw).__name__}"
        )
    lines: dict[Key, int] = {}
    errors: list[str] = []
    _line_map(node, (), lines, errors, str(path))
    if errors:
        raise ConfigError("\n".join(errors))
    return raw, _Source(str(path), lines)


def parse_override(text: str) -> tuple[Key, Any]:
    """`a.b=value` -> (('a', 'b'), YAML-parsed value)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.isidentifier() or p.isdigit() for p in parts):
        raise ConfigError(
            f"--set {text}: expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=0.01"
        )
    try:
        parsed = _safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: the value is not valid YAML ({exc})") from None
    return tuple(int(p) if p.isdigit() else p for p in parts), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: Optional[_Source] = None) -> dict[str, Any]:
    """Applies `--set` overrides to a copy of `raw`; a mapping replaces the whole section."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        set_key(raw, key, value, f"--set {text}")
        if source is not None:
            source.overrides[key] = text
    return raw


def set_key(raw: dict[str, Any], key: Key, value: Any, where: str) -> None:
    """Sets a dotted key in place: a missing section is created, a value replaces a whole section.

    `where` names the origin (e.g. `--set a.b=1`) in the error raised for a path that can't exist.
    """
    node: Any = raw
    for i, part in enumerate(key[:-1]):
        if isinstance(node, list):
            nxt = node[part] if isinstance(part, int) and part < len(node) else None
            if nxt is None:
                raise ConfigError(f"{where}: '{_dotted(key[:i])}' has {len(node)} items")
        else:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"{where}: '{_dotted(key[: i + 1])}' is not a section")
        node = nxt
    last = key[-1]
    if isinstance(node, list) and (not isinstance(last, int) or last >= len(node)):
        raise ConfigError(f"{where}: '{_dotted(key[:-1])}' has {len(node)} items")
    node[last] = value


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


def _unknown_key(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{name}'{hint} (allowed: {', '.join(choices)})"


def _schema_errors(exc: ValidationError, source: _Source) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(str(loc[-1]), _fields_at(loc[:-1]))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] != "missing" and not isinstance(err.get("input"), dict):
                msg += f" (got {err.get('input')!r})"
        out.append(f"{source.where(loc)} {_dotted(loc)}: {msg}")
    return out


def validate(raw: dict[str, Any], source: Optional[_Source] = None) -> Config:
    """Validates a raw mapping: schema first, then every component against its registry."""
    from nntrain.components import component_errors

    source = source or _Source("<config>", {})
    errors: list[str] = []
    cfg = None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        errors += _schema_errors(exc, source)
    errors += [f"{source.where(key)} {_dotted(key)}: {msg}" for key, msg in component_errors(raw)]
    if errors:
        # One line per problem, each once, in file order (overrides and file-level problems last).
        def line(error: str) -> float:
            where = error.split(" ", 1)[0]
            number = where.rsplit(":", 1)[-1]
            return int(number) if where.startswith(source.path + ":") and number.isdigit() else math.inf

        raise ConfigError("\n".join(sorted(dict.fromkeys(errors), key=line)))
    assert cfg is not None
    cfg._source = source
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Reads, overrides and validates a YAML config file."""
    raw, source = _read_yaml(Path(path))
    raw = apply_overrides(raw, list(overrides), source)
    return validate(raw, source)


def config_from_dict(raw: dict[str, Any], overrides: list[str] = (), where: str = "<checkpoint>") -> Config:
    """Validates a config stored in a checkpoint, with optional `--set` overrides."""
    source = _Source(where, {})
    return validate(apply_overrides(raw, list(overrides), source), source)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
