"""`nntrain export`: a checkpoint's model as an ONNX or TorchScript file, checked against PyTorch.

The exported graph is the model in eval mode with a dynamic batch dimension (and a dynamic
number of time steps for recurrent models). Recurrent models trained on sequences of varying
length take a second input, `lengths` (N,) int64: `SequenceModel` packs its padded batches,
which neither format can hold, so `_Recurrent` computes the same thing on full-length padded
tensors (each layer and direction as its own cell; the backward direction runs over each
sequence reversed within its length, so padding never reaches a valid step).

`with_preprocessing` bakes what the data was prepared with into the graph, so it takes raw
inputs: uint8 pixels as stored on disk (scaled to [0, 1] in the graph), raw feature columns,
series values in original units (the stored scaler), then the stored normalizer; regression
outputs come back in the target's original units. Tokenization stays outside (the sidecar
holds the vocabulary and the tokenizer's settings).

The check runs the exported file (onnxruntime, or `torch.jit.load`) on held-out samples (the
checkpoint's test split when its data can be read, else random inputs of the right shape) and
compares with the PyTorch model: the largest absolute difference must stay within 1e-4
(regression outputs in original units are compared before that scaling, in the units the model
computes, so the bound means the same for every data set).

A JSON sidecar (`<file>.json`) records the format, opset, input and output names, shapes and
types, class names, the preprocessing (in the graph or to apply), the check and the checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nntrain import jsonfile
from nntrain.build import Restored, load_model
from nntrain.data.info import PAD
from nntrain.errors import ConfigError, DataError, RunError

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17
TOLERANCE = 1e-4
CHECK_SAMPLES = 128
INSTALL = "pip install 'nntrain[export]'"


@dataclass
class Exported:
    """What `export_checkpoint` wrote and measured."""

    path: Path
    sidecar: Path
    meta: dict[str, Any]
    max_diff: float | None = None  # None: not checked
    samples: int = 0
    samples_from: str = ""


# ---------------------------------------------------------------- graph pieces


class _Recurrent(nn.Module):
    """`SequenceModel` on padded sequences and their lengths, without packing (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        rnn = model.rnn
        self.embedding, self.input_proj, self.head = model.embedding, model.input_proj, model.head
        self.pool, self.directions = model.pool, model.directions
        self.lstm = isinstance(rnn, nn.LSTM)
        cell = type(rnn)
        self.layers = nn.ModuleList()
        for layer in range(rnn.num_layers):
            width = rnn.input_size if layer == 0 else rnn.hidden_size * self.directions
            cells = nn.ModuleList()
            for direction in range(self.directions):
                one = cell(width, rnn.hidden_size, batch_first=True)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if hasattr(rnn, name + suffix):
                        getattr(one, name + "_l0").data.copy_(getattr(rnn, name + suffix).data)
                cells.append(one)
            self.layers.append(cells)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        lengths = lengths.to(torch.long).clamp(min=1).unsqueeze(1)  # (N, 1), as SequenceModel clamps
        t = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
        valid = t < lengths  # (N, T)
        if self.embedding is not None:
            h = self.embedding(x)
        else:
            h = torch.where(valid.unsqueeze(-1), x, torch.zeros_like(x))  # padding may hold NaN
            if self.input_proj is not None:
                h = self.input_proj(h)
        # The position each step takes when a sequence is reversed within its length (padding stays).
        reverse = torch.where(valid, lengths - 1 - t, t)
        forward_out = backward_out = h
        for cells in self.layers:
            forward_out, _ = cells[0](h)
            outs = [forward_out]
            if self.directions == 2:
                index = reverse.unsqueeze(-1).expand(-1, -1, h.shape[-1])
                backward_out, _ = cells[1](h.gather(1, index))
                index = reverse.unsqueeze(-1).expand(-1, -1, backward_out.shape[-1])
                backward_out = backward_out.gather(1, index)  # back in time order
                outs.append(backward_out)
            h = torch.cat(outs, dim=-1)
        if self.pool == "last":
            last = (lengths - 1).unsqueeze(-1).expand(-1, 1, forward_out.shape[-1])
            pooled = forward_out.gather(1, last).squeeze(1)
            if self.directions == 2:
                pooled = torch.cat([pooled, backward_out[:, 0]], dim=-1)  # the reverse pass ends at step 0
        elif self.pool == "mean":
            mask = valid.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(dim=1) / lengths.to(h.dtype)
        else:
            pooled = h.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.head(pooled)


class _Affine(nn.Module):
    """(x - shift) / scale, or (x - shift) @ matrix (whitening), with the stored statistics."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor | None, matrix: torch.Tensor | None, flat: bool):
        super().__init__()
        self.register_buffer("shift", shift.detach().float().clone())
        self.register_buffer("scale", None if scale is None else scale.detach().float().clone())
        self.register_buffer("matrix", None if matrix is None else matrix.detach().float().clone())
        self.flat = flat  # whitening of images: each image is one vector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matrix is None:
            return (x - self.shift) / self.scale
        if self.flat:
            return ((x.flatten(1) - self.shift) @ self.matrix).reshape(x.shape)
        return (x - self.shift) @ self.matrix


def _normalizer_module(normalizer: Any, input_rank: int) -> nn.Module:
    """The stored normalizer as graph operations."""
    from nntrain.data.transforms import MinMax, Normalize, Standardize, Whiten

    if isinstance(normalizer, (Standardize, Normalize)):
        return _Affine(normalizer.mean, normalizer.std, None, False)
    if isinstance(normalizer, MinMax):
        return _Affine(normalizer.low, normalizer.span, None, False)
    if isinstance(normalizer, Whiten):
        return _Affine(normalizer.mean, None, normalizer.matrix, flat=input_rank != 2)
    raise ConfigError(
        f"the normalizer {type(normalizer).__name__} can't be put into the graph; export without "
        f"--with-preprocessing and normalize the inputs yourself (the sidecar holds its statistics)"
    )


class _Graph(nn.Module):
    """What gets exported: [raw-input preparation] -> model -> [outputs in original units]."""

    def __init__(
        self,
        model: nn.Module,
        prepare: nn.Module | None,
        pixels: bool,
        unscale: tuple[torch.Tensor, torch.Tensor] | None,
        variable: bool,
    ):
        super().__init__()
        self.model, self.prepare, self.pixels, self.variable = model, prepare, pixels, variable
        self.unscale = unscale is not None
        if unscale is not None:
            self.register_buffer("target_shift", unscale[0])
            self.register_buffer("target_scale", unscale[1])

    def _run(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.pixels:
            x = x.to(torch.float32) / 255.0
        if self.prepare is not None:
            x = self.prepare(x)
        out = self.model(x) if lengths is None else self.model(x, lengths)
        if self.unscale:
            out = out * self.target_scale + self.target_shift
        return out


class _Plain(_Graph):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)


class _WithLengths(_Graph):
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._run(x, lengths)


# ---------------------------------------------------------------- building the graph


@dataclass
class _Plan:
    graph: nn.Module
    inputs: list[dict[str, Any]]  # name, shape (with "batch"/"steps"), dtype
    outputs: list[dict[str, Any]]
    dynamic: dict[str, dict[int, str]]
    preprocessing: dict[str, Any]
    pixels: bool
    series: tuple[torch.Tensor, torch.Tensor] | None  # (shift, scale) of the input columns
    unscaled: bool


def _plan(restored: Restored, with_preprocessing: bool) -> _Plan:
    from nntrain.models.rnn import SequenceModel
    from nntrain.predict import spec_of

    info, model = restored.info, restored.model
    shape = list(info.input_shape)
    recurrent = isinstance(model, SequenceModel)
    variable = recurrent and model.variable_length
    tokens = info.vocab_size is not None
    spec = spec_of(restored)
    pixels = with_preprocessing and spec.kind == "images" and spec.pixels
    series = None
    prepare: list[nn.Module] = []
    if with_preprocessing and spec.kind == "series":
        from nntrain.data.inputs import series_columns

        columns = series_columns(spec)
        shift = torch.tensor([spec.state["shift"][c] for c in columns], dtype=torch.float32)
        scale = torch.tensor([spec.state["scale"][c] for c in columns], dtype=torch.float32)
        series = (shift, scale)
        prepare.append(_Affine(shift, scale, None, False))
    if with_preprocessing and restored.normalizer is not None:
        prepare.append(_normalizer_module(restored.normalizer, len(shape)))
    unscale = None
    if with_preprocessing and info.task == "regression" and info.target_scale is not None:
        unscale = (
            torch.tensor(info.target_shift, dtype=torch.float32), torch.tensor(info.target_scale, dtype=torch.float32)
        )
    core = _Recurrent(model) if variable else model
    cls = _WithLengths if variable else _Plain
    graph = cls(core, nn.Sequential(*prepare) if prepare else None, pixels, unscale, variable).eval()

    x_shape: list[Any] = ["batch", *shape]
    dynamic = {"x": {0: "batch"}}
    if recurrent:
        x_shape[1] = "steps"
        dynamic["x"][1] = "steps"
    dtype = "int64" if tokens else "uint8" if pixels else "float32"
    inputs = [{"name": "x", "shape": x_shape, "dtype": dtype}]
    if variable:
        inputs.append({"name": "lengths", "shape": ["batch"], "dtype": "int64"})
        dynamic["lengths"] = {0: "batch"}
    task = info.task
    if task == "classification":
        outputs = [{"name": "logits", "shape": ["batch", info.num_classes], "dtype": "float32"}]
    elif task == "regression":
        outputs = [{"name": "values", "shape": ["batch", info.output_size], "dtype": "float32"}]
    else:
        outputs = [{"name": "reconstruction", "shape": ["batch", *shape], "dtype": "float32"}]
    dynamic[outputs[0]["name"]] = {0: "batch"}
    return _Plan(
        graph, inputs, outputs, dynamic, _preprocessing(restored, spec, with_preprocessing, pixels, series, unscale),
        pixels, series, unscale is not None,
    )


def _preprocessing(
    restored: Restored, spec: Any, in_graph: bool, pixels: bool, series: Any, unscale: Any
) -> dict[str, Any]:
    """The sidecar's account of how raw data becomes the graph's input, and its output data."""
    info, normalizer = restored.info, restored.normalizer
    steps: list[dict[str, Any]] = []
    if spec.kind == "images" and spec.pixels:
        steps.append({"step": "pixels", "what": "uint8 pixels / 255", "in_graph": pixels})
    if spec.kind == "series":
        from nntrain.data.inputs import series_columns

        columns = series_columns(spec)
        steps.append({
            "step": "scaler", "what": "(value - shift) / scale per column", "in_graph": series is not None,
            "columns": columns, "shift": [spec.state["shift"][c] for c in columns],
            "scale": [spec.state["scale"][c] for c in columns],
        })
    if spec.kind == "text":
        state = spec.state
        steps.append({
            "step": "tokenizer", "in_graph": False, "lowercase": state.get("lowercase", True),
            "pattern": state.get("pattern", r"\w+(?:'\w+)*"), "max_len": state["max_len"],
            "padding_id": PAD, "unknown_id": 1, "vocab": state["vocab"],
        })
    if normalizer is not None:
        spec_cfg = restored.cfg.data.normalize or next(
            (a for a in restored.cfg.data.augment if a.name == "normalize"), None
        )
        steps.append({
            "step": "normalizer", "name": spec_cfg.name if spec_cfg is not None else type(normalizer).__name__,
            "in_graph": in_graph,
            "state": {k: v.tolist() for k, v in normalizer.state_dict().items()},
        })
    out: dict[str, Any] = {"in_graph": in_graph, "steps": steps}
    if info.task == "classification":
        out["outputs"] = "logits: softmax gives the class probabilities"
    elif info.task == "regression":
        scaled = info.target_scale is not None
        out["outputs"] = (
            "values in the target's original units" if unscale is not None or not scaled
            else "scaled values: value * target_scale + target_shift gives original units"
        )
        if scaled:
            out["target_shift"], out["target_scale"] = info.target_shift, info.target_scale
    else:
        logits = restored.cfg.loss.name == "bce_with_logits"
        out["outputs"] = (
            "reconstruction logits (sigmoid gives values)" if logits else "reconstruction (normalized units)"
        )
    return out


# ---------------------------------------------------------------- samples for the check


def held_out(restored: Restored, n: int) -> tuple[torch.Tensor, str]:
    """Up to `n` inputs as the source gives them (before the normalizer): the checkpoint's test
    split (else validation, else training) when its data can be read; else random inputs."""
    from nntrain.data.sources import DATASETS
    from nntrain.data.splits import SourceContext, holdout

    cfg, info = restored.cfg, restored.info
    try:
        context = SourceContext(val_split=cfg.data.val_split, seed=cfg.seed, state=info.source_state)
        splits = DATASETS.build(cfg.data.dataset, context=context)
    except (DataError, ConfigError, OSError):
        splits = None
    if splits is not None:
        x_val = splits.x_val
        if x_val is None:  # the validation rows build_data holds out of the training split
            x_val = splits.x_train[holdout(len(splits.x_train), cfg.data.val_split, cfg.seed)[1]]
        for name, x in (("test", splits.x_test), ("validation", x_val)):
            if x is not None and len(x) and tuple(x.shape[1:]) == tuple(info.input_shape):
                return x[:n], f"{len(x[:n])} samples of the {name} split of '{cfg.data.dataset.name}'"
    return _random_inputs(restored, n), f"{n} random inputs (the checkpoint's data could not be read)"


def _random_inputs(restored: Restored, n: int) -> torch.Tensor:
    info = restored.info
    gen = torch.Generator().manual_seed(0)
    shape = (n, *info.input_shape)
    if info.vocab_size is not None:
        x = torch.randint(2, info.vocab_size, shape, generator=gen)
        if info.variable_length:
            lengths = torch.randint(1, shape[1] + 1, (n, 1), generator=gen)
            x[torch.arange(shape[1]).unsqueeze(0) >= lengths] = PAD
        return x
    if len(info.input_shape) == 3:
        return torch.randint(0, 256, shape, generator=gen).float() / 255.0
    x = torch.randn(shape, generator=gen)
    if len(info.input_shape) == 2 and info.variable_length:
        lengths = torch.randint(1, shape[1] + 1, (n, 1), generator=gen)
        x[torch.arange(shape[1]).unsqueeze(0) >= lengths] = float("nan")
    return x


def _lengths(x: torch.Tensor) -> torch.Tensor:
    """Each padded sequence's length as SequenceModel counts it: its steps that are not padding
    (id 0 for tokens, all-NaN rows for values)."""
    pad = (x == PAD) if not x.is_floating_point() else x.isnan().all(dim=-1)
    return (~pad).sum(dim=1).clamp(min=1)


def _feeds(plan: _Plan, x_raw: torch.Tensor) -> list[torch.Tensor]:
    """The exported graph's inputs for raw samples `x_raw` (as the source gives them)."""
    x = x_raw
    if plan.pixels:
        x = (x_raw * 255.0).round().to(torch.uint8)  # the source's uint8 / 255, undone exactly
    elif plan.series is not None:
        shift, scale = plan.series
        x = x_raw * scale + shift  # original units
    feeds = [x]
    if any(i["name"] == "lengths" for i in plan.inputs):
        feeds.append(_lengths(x_raw))
    return feeds


def _reference(restored: Restored, plan: _Plan, x_raw: torch.Tensor, with_preprocessing: bool) -> torch.Tensor:
    """What the PyTorch model gives for the same samples (the exported model's expected output)."""
    x = x_raw
    if not with_preprocessing:
        return restored.model(x if restored.normalizer is None else restored.normalizer(x))
    if plan.pixels:
        x = (x_raw * 255.0).round().to(torch.uint8).float().div(255.0)
    if restored.normalizer is not None:
        x = restored.normalizer(x)
    out = restored.model(x)
    if plan.unscaled:
        out = out * plan.graph.target_scale + plan.graph.target_shift
    return out


def _model_input(restored: Restored, x_raw: torch.Tensor) -> torch.Tensor:
    """The input the model itself takes (normalized), for tracing without preprocessing."""
    return x_raw if restored.normalizer is None else restored.normalizer(x_raw)


# ---------------------------------------------------------------- export and check


def _require_onnx(check: bool) -> None:
    missing = []
    for module in ("onnx", "onnxruntime") if check else ("onnx",):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)}, which are not installed: {INSTALL}")


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    with_preprocessing: bool = False,
    check: bool = True,
    samples: int = CHECK_SAMPLES,
) -> Exported:
    """Exports the checkpoint's model (see the module docstring); returns what was written.

    Raises:
        ConfigError: an unknown format, a missing onnx install, an unusable --out (exit 2).
        RunError: the exported model differs from PyTorch by more than 1e-4 (exit 1); the
            files stay, so the difference can be examined.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx(check)
    checkpoint = Path(checkpoint)
    path = Path(out) if out is not None else checkpoint.with_name(checkpoint.stem + SUFFIX[fmt])
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a folder; give a file name such as {path / ('model' + SUFFIX[fmt])}")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: folder '{path.parent}' does not exist")
    restored = load_model(checkpoint, "cpu")
    plan = _plan(restored, with_preprocessing)
    x_raw, samples_from = held_out(restored, max(samples, 2))
    with torch.inference_mode():
        reference = _reference(restored, plan, x_raw, with_preprocessing).float()
    feeds = _feeds(plan, x_raw if with_preprocessing else _model_input(restored, x_raw))
    example = [f[:2].clone() for f in feeds]  # traced with 2 samples: the check runs another batch size
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            _to_onnx(plan, example, tmp)
        else:
            _to_torchscript(plan, example, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    exported = Exported(path, path.with_name(path.name + ".json"), {})
    if check:
        outputs = _run_exported(fmt, path, feeds)
        diff = (outputs - reference).abs()
        if plan.unscaled:  # compare in the units the model computes
            diff = diff / plan.graph.target_scale
        exported.max_diff = float(diff.max()) if diff.numel() else 0.0
        exported.samples, exported.samples_from = len(x_raw), samples_from
    exported.meta = _sidecar(restored, plan, fmt, path, with_preprocessing, exported)
    _write_json(exported.sidecar, exported.meta)
    if exported.max_diff is not None and not exported.max_diff <= TOLERANCE:
        raise RunError(
            f"{path}: the exported model differs from PyTorch by up to {exported.max_diff:.3g} on "
            f"{samples_from} (allowed: {TOLERANCE:g}); the files are kept for inspection"
        )
    return exported


def _to_onnx(plan: _Plan, example: list[torch.Tensor], path: Path) -> None:
    names = [i["name"] for i in plan.inputs]
    with warnings.catch_warnings():
        # torch's TorchScript-based exporter: deprecated in favour of the dynamo one (which needs
        # onnxscript and cannot yet keep recurrent layers whole); it handles every family here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plan.graph, tuple(example), str(path), dynamo=False, opset_version=OPSET,
            input_names=names, output_names=[o["name"] for o in plan.outputs], dynamic_axes=plan.dynamic,
        )


def _to_torchscript(plan: _Plan, example: list[torch.Tensor], path: Path) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes; the check decides
        traced = torch.jit.trace(plan.graph, tuple(example), check_trace=False)
        traced.save(str(path))


def _run_exported(fmt: str, path: Path, feeds: list[torch.Tensor]) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        result = session.run(None, {n: f.numpy() for n, f in zip(names, feeds)})[0]
        return torch.from_numpy(result).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in favour of torch.export
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(*feeds).float()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(
    restored: Restored, plan: _Plan, fmt: str, path: Path, with_preprocessing: bool, exported: Exported
) -> dict[str, Any]:
    info, ckpt = restored.info, restored.ckpt
    meta: dict[str, Any] = {
        "format": fmt,
        "file": path.name,
        "opset": OPSET if fmt == "onnx" else None,
        "torch": torch.__version__,
        "inputs": plan.inputs,
        "outputs": plan.outputs,
        "task": info.task,
        "classes": info.classes,
        "preprocessing": plan.preprocessing,
        "model": restored.cfg.model.model_dump(),
        "checkpoint": {
            "path": str(restored.path), "sha256": _sha256(restored.path), "epoch": ckpt.get("epoch"),
            "step": ckpt.get("step"), "config_hash": ckpt.get("config_hash"),
            "provenance": ckpt.get("provenance"),
        },
        "with_preprocessing": with_preprocessing,
    }
    if fmt == "onnx":
        import onnx

        meta["onnx"] = onnx.__version__
    if exported.max_diff is not None:
        meta["check"] = {
            "runtime": "onnxruntime" if fmt == "onnx" else "torch.jit.load",
            "samples": exported.samples_from, "max_abs_diff": exported.max_diff, "tolerance": TOLERANCE,
            "passed": exported.max_diff <= TOLERANCE,
        }
    return meta


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(jsonfile.dumps(record, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None
