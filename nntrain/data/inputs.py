"""New inputs for a trained model (`nntrain predict`), prepared exactly as its training data was.

What the training data was fitted with comes from the checkpoint, never from the training files:
`DataInfo` (input shape, classes) and its `source_state` (a CSV's feature columns, a text
vocabulary and tokenizer, a series' scaler). The result is what the source would have given
(before the normalizer, which the caller applies), so a model sees the same numbers at training
and at prediction time.

Accepted inputs, by the kind of data the model was trained on (`InputSpec.kind`):

- images: image files of any format PIL reads (decoded, converted to grayscale or RGB and
  resized to the training size as `image_folder` does), folders of them, or .npz arrays;
- table: a CSV with the training feature columns (the target column is ignored, an `id` column
  is carried through, any other column is an error), or an .npz (N, F);
- text: a CSV with the training text column, tokenized with the stored vocabulary (truncated to
  the training `max_len`, as training did), or an .npz of token ids;
- series: a CSV holding the training columns (original units): the model forecasts the horizon
  after its last window; or an .npz of windows (N, window, F) in original units;
- arrays: models trained on an .npz of sequences or token ids take an .npz.

Every problem is a DataError naming the file (and its line, row or sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nntrain.data.info import PAD, DataInfo
from nntrain.data.reading import IMAGE_EXTENSIONS, CsvTable, decode_images, float_images, read_csv, read_npz
from nntrain.errors import DataError

ID_COLUMN = "id"  # a CSV column (or .npz array) carried through to the predictions
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSED = (".gz", ".bz2", ".xz")
KINDS = ("images", "table", "text", "series", "arrays")
_WHAT = {
    "images": "image files, folders of images or an .npz of images",
    "table": "a CSV with the training feature columns, or an .npz (N, features)",
    "text": "a CSV with the training text column, or an .npz of token ids",
    "series": "a CSV of the series in time order, or an .npz of windows",
    "arrays": "an .npz like the training one",
}


@dataclass(frozen=True)
class InputSpec:
    """What the model's training data looked like, from the checkpoint alone.

    Attributes:
        kind: one of KINDS.
        info: the stored DataInfo.
        source: the training data source's name (`data.dataset.name`).
        options: the source's config arguments (`data.dataset`), for its delimiter and npz keys.
        max_steps: the most time steps a sequence may have (the trained length), or None when the
            model takes any length (recurrent models).
    """

    kind: str
    info: DataInfo
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None

    @property
    def state(self) -> dict[str, Any]:
        return self.info.source_state or {}

    @property
    def pixels(self) -> bool:
        """Whether the training images were uint8 pixels scaled to [0, 1] (every image source, and
        an npz of uint8 images): decoded image files are then scaled the same way."""
        return len(self.info.input_shape) == 3 and (self.source != "npz" or self.state.get("pixels") == "uint8")

    @property
    def what(self) -> str:
        return _WHAT[self.kind]


@dataclass
class Inputs:
    """The prepared inputs (before normalization), one name per sample (a path, `id` or file:line).

    With `pixels`, `x` holds uint8 images that `float_images` turns into the source's values
    (left to the caller, batch by batch: a quarter of the memory until then).
    """

    names: list[str]
    x: torch.Tensor
    pixels: bool = False

    def values(self) -> torch.Tensor:
        """`x` as the source gives it (pixels scaled to [0, 1])."""
        return float_images(self.x) if self.pixels else self.x


def input_spec(info: DataInfo, source: str, options: dict[str, Any], recurrent: bool) -> InputSpec:
    """The spec of a model trained on data described by `info` from the source `source`."""
    state = info.source_state or {}
    shape = tuple(info.input_shape)
    if "vocab" in state:
        kind = "text"
    elif "shift" in state and "scale" in state:
        kind = "series"
    elif len(shape) == 3:
        kind = "images"
    elif len(shape) == 1 and info.vocab_size is None:
        kind = "table"
    else:
        kind = "arrays"
    sequence = len(shape) == 2 or (len(shape) == 1 and info.vocab_size is not None)
    max_steps = None if recurrent or not sequence else shape[0]
    return InputSpec(kind, info, source, dict(options), max_steps)


def read_inputs(paths: list[Path], spec: InputSpec) -> Inputs:
    """Reads every input path for the model `spec` describes; one tensor, one name per sample."""
    if not paths:
        raise DataError(f"no inputs given; this model takes {spec.what}")
    parts: list[Inputs] = []
    images: list[Path] = []  # consecutive image files are decoded together

    def flush() -> None:
        if images:
            parts.append(_image_files(list(images), spec))
            images.clear()

    for path in map(Path, paths):
        if path.is_dir():
            if spec.kind != "images":
                raise DataError(f"{path}: is a folder; this model takes {spec.what}")
            images.extend(_folder_images(path))
        elif not path.exists():
            raise DataError(f"{path}: not found (relative paths start at {Path.cwd()})")
        elif path.suffix.lower() == ".npz":
            flush()
            parts.append(_npz(path, spec))
        elif _is_csv(path):
            flush()
            parts.append(_csv(path, spec))
        elif spec.kind == "images":
            images.append(path)
        else:
            raise DataError(f"{path}: not a CSV or .npz file; this model takes {spec.what}")
    flush()
    return _concat(parts, spec)


def _is_csv(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in CSV_SUFFIXES


def _concat(parts: list[Inputs], spec: InputSpec) -> Inputs:
    """One tensor of every part; sequences of different lengths are padded to the longest."""
    names = [n for p in parts for n in p.names]
    pixels = all(p.pixels for p in parts)
    xs = [p.x if pixels else p.values() for p in parts]
    if len(xs) > 1 and xs[0].dim() >= 2 and len({x.shape[1] for x in xs}) > 1 and spec.kind in ("text", "arrays"):
        steps = max(x.shape[1] for x in xs)
        xs = [_pad_steps(x, steps) for x in xs]
    return Inputs(names, torch.cat(xs) if len(xs) > 1 else xs[0], pixels)


def _pad_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Padding at the end to `steps` time steps: id 0 for tokens, NaN rows for real values."""
    if x.shape[1] >= steps:
        return x
    fill = PAD if not x.is_floating_point() else float("nan")
    pad = torch.full((len(x), steps - x.shape[1], *x.shape[2:]), fill, dtype=x.dtype)
    return torch.cat([x, pad], dim=1)


def _fit_steps(x: torch.Tensor, spec: InputSpec, where: str) -> torch.Tensor:
    """Sequences for a model of a fixed number of steps (not recurrent): cut to it where only
    padding is cut, padded to it where the training data was padded too; any other length is an
    error naming the sample."""
    if spec.max_steps is None or x.dim() < 2 or x.shape[1] == spec.max_steps:
        return x
    steps = spec.max_steps
    if x.shape[1] > steps:
        tail = x[:, steps:]
        used = (tail != PAD) if not x.is_floating_point() else ~tail.isnan().all(dim=-1)
        long = used.reshape(len(x), -1).any(dim=1)
        if bool(long.any()):
            i = int(long.float().argmax())
            raise DataError(
                f"{where}: sample {i} has more than {steps} time steps; this model takes at most {steps} "
                f"(the length it was trained on)"
            )
        return x[:, :steps]
    if spec.info.variable_length is False:
        raise DataError(f"{where}: sequences of {x.shape[1]} time steps; this model takes exactly {steps}")
    return _pad_steps(x, steps)


# ---------------------------------------------------------------- images


def _folder_images(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise DataError(f"{folder}: no images in this folder ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _image_files(files: list[Path], spec: InputSpec) -> Inputs:
    channels, height, width = spec.info.input_shape
    if channels not in (1, 3):
        raise DataError(f"{files[0]}: this model takes images of {channels} channels; give them as an .npz")
    if not spec.pixels:
        raise DataError(
            f"{files[0]}: this model was trained on float images from an .npz, not on pixels; "
            f"give its inputs as an .npz"
        )
    pixels = decode_images(files, height, width, grayscale=channels == 1)
    return Inputs([str(f) for f in files], pixels, pixels=True)


# ---------------------------------------------------------------- .npz


def _npz(path: Path, spec: InputSpec) -> Inputs:
    from nntrain.data.sources.npz import nchw, prepare_inputs

    npz_source = spec.source == "npz"
    x_key = spec.options.get("x_key", "x") if npz_source else "x"
    lengths_key = spec.options.get("lengths_key", "lengths") if npz_source else "lengths"
    arrays, present = read_npz(path, "path", [x_key, lengths_key, ID_COLUMN])
    if x_key not in arrays:
        raise DataError(
            f"{path}: no array '{x_key}' (arrays: {', '.join(present) or 'none'}); save the inputs as '{x_key}'"
        )
    layout = {"images": "images", "table": "tabular", "text": "tokens", "series": "sequences"}.get(spec.kind)
    if layout is None:
        layout = spec.options.get("layout", "auto") if npz_source else "auto"
    where = f"{path}:{x_key}"
    array = arrays[x_key]
    if spec.kind == "images" and array.dtype == np.uint8 and array.ndim in (3, 4) and len(array):
        x = nchw(torch.from_numpy(array), where)  # uint8 until each batch, as `float_images` scales it
        names = _npz_names(path, arrays.get(ID_COLUMN), len(x))
        _check_shape(x, spec, where)
        return Inputs(names, x, pixels=True)
    x = prepare_inputs(array, arrays.get(lengths_key), layout, where)
    names = _npz_names(path, arrays.get(ID_COLUMN), len(x))
    if spec.kind == "series":
        x = _scale_series(x, spec, where)
    if spec.kind in ("text", "arrays") and not x.is_floating_point() and spec.info.vocab_size is not None:
        too_big = x >= spec.info.vocab_size
        if bool(too_big.any()):
            i = int(too_big.any(dim=1).float().argmax())
            raise DataError(
                f"{where}: sample {i} holds token id {int(x[i].max())}, beyond the model's vocabulary "
                f"of {spec.info.vocab_size} ids"
            )
    x = _fit_steps(x, spec, where)
    _check_shape(x, spec, where)
    return Inputs(names, x)


def _npz_names(path: Path, ids: np.ndarray | None, n: int) -> list[str]:
    if ids is not None and ids.shape[:1] == (n,):
        return [str(v) for v in ids.reshape(n, -1)[:, 0]] if ids.ndim > 1 else [str(v) for v in ids]
    name = str(path)
    return [f"{name}[{i}]" for i in range(n)]


def _check_shape(x: torch.Tensor, spec: InputSpec, where: str) -> None:
    want = tuple(spec.info.input_shape)
    got = tuple(x.shape[1:])
    if spec.max_steps is None and len(want) >= 1 and (len(want) == 2 or spec.info.vocab_size is not None):
        want, got = want[1:], got[1:]  # any number of time steps
    if got != want:
        raise DataError(
            f"{where}: inputs of shape {tuple(x.shape[1:])} per sample; this model takes {tuple(spec.info.input_shape)}"
        )


# ---------------------------------------------------------------- CSV


def _csv(path: Path, spec: InputSpec) -> Inputs:
    if spec.kind not in ("table", "text", "series"):
        raise DataError(f"{path}: a CSV; this model takes {spec.what}")
    delimiter = spec.options.get("delimiter", ",")
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    table = read_csv(path, delimiter)
    if spec.kind != "series" and not table.rows:
        raise DataError(f"{path}: no data rows")
    return {"table": _table, "text": _texts, "series": _series}[spec.kind](table, spec)


def _row_names(table: CsvTable) -> list[str]:
    """The `id` column's values, or `file:line` of each row."""
    if ID_COLUMN in table.header:
        return [v.strip() for v in table.strings(table.header.index(ID_COLUMN))]
    return [f"{table.path}:{line}" for line in table.lines]


def _column(table: CsvTable, name: str, what: str) -> int:
    count = table.header.count(name)
    if count == 1:
        return table.header.index(name)
    if count > 1:
        raise DataError(f"{table.path}:1: the header has {count} columns named '{name}'; keep one")
    raise DataError(f"{table.path}:1: no column '{name}' ({what}; the file has: {', '.join(table.header) or 'none'})")


def _table(table: CsvTable, spec: InputSpec) -> Inputs:
    state = spec.state
    features = state.get("features") or spec.options.get("features")
    if features is None:
        raise DataError(
            f"{table.path}: the checkpoint does not record the names of its feature columns (it was "
            f"trained on '{spec.source}' data); give an .npz of (N, {spec.info.input_shape[0]}) inputs"
        )
    targets = state.get("targets") or _as_list(spec.options.get("target"))
    known = set(features) | set(targets) | set(state.get("columns") or ()) | {ID_COLUMN}
    unknown = [h for h in table.header if h not in known]
    listed = f"the model's features: {', '.join(features)}"
    if unknown:
        raise DataError(
            f"{table.path}:1: unknown column{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
            f"({listed}; an '{ID_COLUMN}' column is carried through, the target ignored)"
        )
    columns = [_column(table, f, listed) for f in features]
    return Inputs(_row_names(table), torch.from_numpy(table.floats(columns)))


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _texts(table: CsvTable, spec: InputSpec) -> Inputs:
    import re

    from nntrain.data.sources.text_csv import encode, tokenize

    state = spec.state
    column = state.get("text") or spec.options.get("text", "text")
    col = _column(table, column, "the column of texts the model was trained on")
    pattern = re.compile(state.get("pattern") or spec.options.get("pattern", r"\w+(?:'\w+)*"))
    lowercase = state.get("lowercase", spec.options.get("lowercase", True))
    docs = [tokenize(text, pattern, lowercase) for text in table.strings(col)]
    return Inputs(_row_names(table), encode(docs, state["vocab"], int(state["max_len"])))


def series_columns(spec: InputSpec) -> list[str]:
    """The input columns of a forecaster, in the order of its features."""
    state = spec.state
    columns = state.get("columns") or _as_list(spec.options.get("columns"))
    if not columns and len(state["shift"]) == spec.info.input_shape[1]:
        columns = list(state["shift"])
    if not columns:
        raise DataError(f"the checkpoint does not record which columns its '{spec.source}' series had")
    return list(columns)


def _scale_series(x: torch.Tensor, spec: InputSpec, where: str) -> torch.Tensor:
    """Values in original units -> the units the model was trained on (the stored scaler)."""
    columns = series_columns(spec)
    if x.shape[-1] != len(columns):
        raise DataError(
            f"{where}: {x.shape[-1]} values per step; this model takes {len(columns)} ({', '.join(columns)})"
        )
    # As the source does: (value - shift) / scale in float64, then float32.
    shift = torch.tensor([spec.state["shift"][c] for c in columns], dtype=torch.float64)
    scale = torch.tensor([spec.state["scale"][c] for c in columns], dtype=torch.float64)
    return ((x.double() - shift) / scale).float()


def _series(table: CsvTable, spec: InputSpec) -> Inputs:
    columns = series_columns(spec)
    window = spec.info.input_shape[0]
    idx = [_column(table, c, f"the model forecasts from {', '.join(columns)}") for c in columns]
    if len(table.rows) < window:
        raise DataError(
            f"{table.path}: {len(table.rows)} rows; the model forecasts from the last {window} rows, "
            f"so give at least {window}"
        )
    values = torch.from_numpy(table.floats(idx)[-window:])  # every row is checked, as training did
    return Inputs([str(table.path)], _scale_series(values.unsqueeze(0), spec, str(table.path)))
