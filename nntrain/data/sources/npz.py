"""`npz`: named arrays of a NumPy .npz file (images, tables, sequences, token ids; labelled or not)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from nntrain.data.info import PAD, DataInfo
from nntrain.data.labels import MAX_CLASSES, check_class_count, class_names, encode_labels
from nntrain.data.reading import FLOAT32_MAX, existing_file, float_images, read_npz
from nntrain.data.splits import DEFAULT_CONTEXT, SourceContext, Splits
from nntrain.errors import DataError
from nntrain.registries import DATASETS

Layout = Literal["auto", "tabular", "images", "sequences", "tokens"]

# The largest vocabulary of token ids (an embedding of that many rows): larger ids are a mistake.
MAX_VOCAB = 10_000_000


@DATASETS.register("npz", runtime=("context",))
def npz(
    path: str,
    x_key: str = "x",
    y_key: str | None = "y",
    lengths_key: str = "lengths",
    test_path: str | None = None,
    layout: Layout = "auto",
    task: Literal["classification", "regression"] = "classification",
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """Arrays from a NumPy .npz file: inputs `x_key`, targets `y_key` (null: unlabeled).

    Layouts (auto: uint8 3-D/4-D are images, else 2-D tabular, 3-D sequences, 4-D images):
    images (N, H, W) or (N, C, H, W), uint8 scaled to [0, 1]; tabular (N, F); sequences (N, T, F);
    tokens (N, T) of int ids, 0 = padding. An optional `lengths_key` array marks variable-length
    sequences: steps past each length become padding (NaN rows, or id 0 for tokens).
    """

    pixels: list[bool] = []  # whether each file's inputs are uint8 (images are then scaled to [0, 1])

    def load(p: str, key: str) -> tuple[torch.Tensor, np.ndarray | None]:
        x, y, lengths = _arrays(p, key, x_key, y_key, lengths_key)
        pixels.append(x.dtype == np.uint8)
        return prepare_inputs(x, lengths, layout, f"{p}:{x_key}"), y

    x, y = load(path, "path")
    x_test, y_test = load(test_path, "test_path") if test_path is not None else (None, None)
    if x_test is not None:
        _check_test_inputs(x, x_test, f"{path}:{x_key}", f"{test_path}:{x_key}")
    shape = tuple(x.shape[1:])
    vocab_size = variable = state = None
    if x.dtype == torch.long:
        vocab_size = _vocab_size(x, x_test, context.state, f"{path}:{x_key}")
        variable, state = True, {"vocab_size": vocab_size}
    elif x.dim() == 3:  # real-valued sequences vary in length only if some carry NaN padding rows
        variable = any(bool(t.isnan().all(dim=-1).any()) for t in (x, x_test) if t is not None)
    elif x.dim() == 4 and pixels[0]:
        state = {"pixels": "uint8"}  # `nntrain predict` scales decoded image files the same way
    sequence = {"vocab_size": vocab_size, "variable_length": variable, "source_state": state}
    if y is None:
        info = DataInfo("unlabeled", shape, **sequence)
        none = lambda t: None if t is None else torch.zeros(len(t), dtype=torch.long)  # noqa: E731
        return Splits(x, none(x), info, x_test, none(x_test))
    if task == "regression":
        y_train = _regression_targets(y, f"{path}:{y_key}")
        y_t = None if y_test is None else _regression_targets(y_test, f"{test_path}:{y_key}")
        if y_t is not None and y_t.shape[1:] != y_train.shape[1:]:
            raise DataError(
                f"{test_path}:{y_key}: {y_t.shape[1]} target values per sample, but {path} has {y_train.shape[1]}"
            )
        info = DataInfo("regression", shape, output_size=y_train.shape[1], **sequence)
    else:
        train_labels = _labels(y, f"{path}:{y_key}")
        classes = _classes(train_labels, f"{path}:{y_key}")
        y_train = encode_labels(train_labels, classes, path)
        y_t = None
        if y_test is not None:
            y_t = encode_labels(_labels(y_test, f"{test_path}:{y_key}"), classes, test_path)
        info = DataInfo("classification", shape, len(classes), classes, **sequence)
    return Splits(x, y_train, info, x_test, y_t)


def _arrays(
    path: str, key: str, x_key: str, y_key: str | None, lengths_key: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Inputs, targets (None when y_key is None) and lengths (None when absent) of one file."""
    file = existing_file(path, key)
    arrays, present = read_npz(file, key, [x_key, y_key, lengths_key])
    if x_key not in present:
        raise DataError(
            f"{file} has no array '{x_key}' (arrays: {', '.join(present)})", key=("data", "dataset", "x_key")
        )
    if y_key is not None and y_key not in present:
        raise DataError(
            f"{file} has no array '{y_key}' (arrays: {', '.join(present)})", key=("data", "dataset", "y_key")
        )
    x, y, lengths = arrays[x_key], arrays.get(y_key) if y_key is not None else None, arrays.get(lengths_key)
    if y is not None and x.ndim and y.ndim and len(y) != len(x):
        raise DataError(f"{path}: '{x_key}' has {len(x)} samples but '{y_key}' has {len(y)}")
    if lengths is not None:
        _check_lengths(lengths, x, f"{path}:{lengths_key}")
    return x, y, lengths


def _check_lengths(lengths: np.ndarray, x: np.ndarray, where: str) -> None:
    """Sequence lengths: one whole number per sample, each in [1, the padded length]."""
    steps = x.shape[1] if x.ndim > 1 else 0
    if lengths.ndim != 1 or x.ndim == 0 or len(lengths) != len(x) or lengths.dtype.kind not in "iu":
        raise DataError(
            f"{where}: lengths must be one integer per sample, shape ({len(x) if x.ndim else 0},); "
            f"got {lengths.dtype} of shape {lengths.shape}"
        )
    bad = (lengths < 1) | (lengths > steps)
    if bad.any():
        i = int(bad.argmax())
        raise DataError(
            f"{where}: sample {i} has length {int(lengths[i])}; lengths must be between 1 and the padded "
            f"length {steps} ({int(bad.sum())} samples are out of range)"
        )


def _check_test_inputs(x: torch.Tensor, x_test: torch.Tensor, where: str, test_where: str) -> None:
    """The test samples must have the training samples' shape and kind (token ids or values)."""
    if x_test.shape[1:] != x.shape[1:] or x_test.dtype != x.dtype:
        raise DataError(
            f"{test_where}: test samples of shape {tuple(x_test.shape[1:])} ({x_test.dtype}), but the training "
            f"samples of {where} have shape {tuple(x.shape[1:])} ({x.dtype}); give both in the same layout"
        )


def _vocab_size(x: torch.Tensor, x_test: torch.Tensor | None, state: dict | None, where: str) -> int:
    """Token ids are in [0, vocab_size): from the run being evaluated (`state`), else the largest id + 1."""
    largest = int(max(x.max(), 0 if x_test is None else x_test.max()))
    if state is None or "vocab_size" not in state:
        if largest >= MAX_VOCAB:
            raise DataError(
                f"{where}: token id {largest}; vocabularies of more than {MAX_VOCAB} ids are not supported "
                f"(number the tokens from 1, 0 being padding)"
            )
        return largest + 1
    size = int(state["vocab_size"])
    if largest >= size:
        raise DataError(f"{where}: token id {largest} is out of the training vocabulary (ids 0 to {size - 1})")
    return size


def _classes(labels: list[str], where: str) -> list[str]:
    """Class names; non-negative integer labels are their own indices ("0" .. "max")."""
    classes = check_class_count(class_names(labels), where)
    if all(c.lstrip("-").isdigit() for c in classes) and min(map(int, classes)) >= 0:
        largest = max(map(int, classes))
        if largest >= MAX_CLASSES:
            raise DataError(
                f"{where}: label {largest} is a class index beyond the {MAX_CLASSES} classes allowed "
                f"(there are {len(classes)} distinct labels); number the classes 0 to {len(classes) - 1}"
            )
        classes = [str(i) for i in range(largest + 1)]
    return classes


def prepare_inputs(x: np.ndarray, lengths: np.ndarray | None, layout: Layout, where: str) -> torch.Tensor:
    """The input tensor of an array in `layout`, padded past `lengths`; `where` names it in errors."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: an array of {x.dtype}; inputs must be numbers (bool, integer or float)")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{where}: no samples (an array of shape {x.shape})")
    if layout == "auto":
        layout = _auto_layout(x, where)
    t = torch.from_numpy(np.ascontiguousarray(x))
    convert = {"images": _images, "tabular": _tabular, "tokens": _tokens, "sequences": _sequences}[layout]
    t = convert(t, lengths, where)
    if t[0].numel() == 0:
        raise DataError(f"{where}: samples of shape {tuple(t.shape[1:])} hold no values; a model needs at least one")
    if t.is_floating_point() and x.dtype.kind == "f":  # checked after the cast to float32: 1e300 becomes inf
        _check_finite(t, x, layout == "sequences", where)  # (integers always cast to finite floats)
    return t


def _check_finite(t: torch.Tensor, x: np.ndarray, padded: bool, where: str) -> None:
    """Every value finite; NaN is allowed in sequences (`padded`: NaN rows are their padding)."""
    bad = (t.isinf() if padded else ~t.isfinite()).reshape(len(t), -1).any(dim=1)
    if not bad.any():
        return
    first = int(bad.int().argmax())
    if x.dtype.kind in "iuf" and np.isfinite(x[first]).all():
        problem, advice = f"values beyond the range of float32 (+-{FLOAT32_MAX:.3g})", "rescale them"
    else:
        problem, advice = "NaN or infinite values", "missing values are not allowed"
    raise DataError(f"{where}: {int(bad.sum())} samples hold {problem} (the first is sample {first}); {advice}")


def _auto_layout(x: np.ndarray, where: str) -> Layout:
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        return "images"
    layout = {2: "tabular", 3: "sequences", 4: "images"}.get(x.ndim)
    if layout is None:
        raise DataError(f"{where}: cannot tell the layout of an array of shape {x.shape}; set data.dataset.layout")
    return layout


def nchw(t: torch.Tensor, where: str) -> torch.Tensor:
    """Images as (N, C, H, W) from (N, H, W), (N, C, H, W) or (N, H, W, C), in their own dtype
    (`nntrain predict` keeps uint8 pixels until each batch)."""
    if t.dim() == 4 and t.shape[1] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
        t = t.permute(0, 3, 1, 2).contiguous()  # N, H, W, C -> N, C, H, W
    if t.dim() not in (3, 4):
        raise DataError(f"{where}: images must be (N, H, W) or (N, C, H, W), not {tuple(t.shape)}")
    return t.unsqueeze(1) if t.dim() == 3 else t


def _images(t: torch.Tensor, lengths: np.ndarray | None, where: str) -> torch.Tensor:
    t = nchw(t, where)
    return float_images(t) if t.dtype == torch.uint8 else t.float()


def _tabular(t: torch.Tensor, lengths: np.ndarray | None, where: str) -> torch.Tensor:
    return t.reshape(len(t), -1).float()


def _tokens(t: torch.Tensor, lengths: np.ndarray | None, where: str) -> torch.Tensor:
    if t.dim() != 2 or t.is_floating_point():
        raise DataError(f"{where}: tokens must be an (N, T) array of integer ids, not {tuple(t.shape)} {t.dtype}")
    t = t.long()
    if lengths is not None:
        t[torch.arange(t.shape[1]) >= torch.as_tensor(lengths).view(-1, 1)] = PAD
    if (t < 0).any():
        raise DataError(f"{where}: token id {int(t.min())} is negative; ids start at 0 (the padding id)")
    return t


def _sequences(t: torch.Tensor, lengths: np.ndarray | None, where: str) -> torch.Tensor:
    """(N, T, F), or (N, T) of one feature; steps past `lengths` become NaN rows (DataInfo's padding)."""
    t = t.float()
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise DataError(f"{where}: sequences must be (N, T, F) or (N, T), not {tuple(t.shape)}")
    if lengths is not None:
        t[torch.arange(t.shape[1]) >= torch.as_tensor(lengths).view(-1, 1)] = float("nan")
    return t


def _labels(y: np.ndarray, where: str) -> list[str]:
    """Class labels, one per sample: integers (integral floats too), booleans or strings."""
    if y.ndim > 1 and y.shape[1:] != (1,):
        raise DataError(
            f"{where}: classification takes one label per sample, shape (N,), not {y.shape} "
            f"(several values per sample: set data.dataset.task: regression)"
        )
    if y.dtype.kind == "f":
        if not (np.isfinite(y) & (y == np.round(y))).all():
            raise DataError(
                f"{where}: labels with fractional, NaN or infinite values can't be classes; "
                f"give integer or string labels, or set data.dataset.task: regression"
            )
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuU":
        raise DataError(f"{where}: labels of {y.dtype}; give integers or strings")
    return [str(v) for v in y.reshape(-1)]


def _regression_targets(a: np.ndarray, where: str) -> torch.Tensor:
    """(N, outputs) float32 targets; anything but finite float32 numbers is an error naming `where`."""
    if a.dtype.kind not in "biuf" or a.ndim == 0 or not np.isfinite(a).all():
        raise DataError(f"{where}: regression targets must be finite numbers (got {a.dtype}, shape {a.shape})")
    y = torch.from_numpy(np.asarray(a, dtype=np.float32).reshape(len(a), -1))
    if not y.isfinite().all():
        raise DataError(f"{where}: regression targets beyond the range of float32 (+-{FLOAT32_MAX:.3g}); rescale them")
    if y.shape[1] == 0:
        raise DataError(f"{where}: targets of shape {tuple(a.shape)} hold no values")
    return y
