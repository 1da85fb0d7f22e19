"""File-based data sources: `csv`, `npz`, `image_folder`, `text_csv` and `timeseries_csv`.

Paths are relative to where nntrain runs. CSV files may be compressed (`.gz`, `.bz2`, `.xz`:
read transparently). Whatever a source fits (a vocabulary, a scaler) comes from its training
split only and is kept in `DataInfo.source_state`, which checkpoints store and `nntrain eval`
hands back through the runtime argument `state`.
"""

from __future__ import annotations

import bz2
import collections
import csv
import gzip
import lzma
import math
import re
import zipfile
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TextIO, Union

import numpy as np
import torch
from pydantic import Field

from nntrain.data.datasets import DATASETS, PAD, UNK, DataInfo, Splits, _images
from nntrain.errors import DataError

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
Columns = Union[str, Annotated[list[str], Field(min_length=1)]]

# Test splits that a source holds out itself are drawn with this fixed seed, so runs with
# different `seed`s are compared on the same test set.
TEST_SEED = 0


# ---------------------------------------------------------------- reading files


def _path(path: str, key: str = "path") -> Path:
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise DataError(f"data.dataset.{key}: '{path}' {what} (relative paths start at {Path.cwd()})")
    return p


def _open_text(path: Path) -> TextIO:
    """Opens a UTF-8 text file (a byte-order mark is dropped), decompressing `.gz`, `.bz2` and `.xz`."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _read_csv(path: Path, delimiter: str = ",") -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and the line each row starts on (fields may span lines)."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; expected a header row")
            rows, lines, start = [], [], reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise DataError(
                            f"{path}:{start}: {len(row)} fields but the header has {len(header)}"
                        )
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}:{_first_non_utf8_line(path)}: not UTF-8 text (byte 0x{byte}); save the file as UTF-8"
        ) from None
    except (OSError, EOFError, csv.Error, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read it as CSV ({exc})") from None
    return [h.strip() for h in header], rows, lines


def _first_non_utf8_line(path: Path) -> int:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _index(header: list[str], name: str, path: Path, key: str) -> int:
    if header.count(name) > 1:
        raise DataError(
            f"{path}:1: the header has {header.count(name)} columns named '{name}' "
            f"(data.dataset.{key} needs one); rename them"
        )
    if name in header:
        return header.index(name)
    import difflib

    close = difflib.get_close_matches(name, header, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise DataError(f"data.dataset.{key}: {path} has no column '{name}'{hint} (columns: {', '.join(header)})")


def _as_list(value: Columns) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _floats(rows: list[list[str]], cols: list[int], header: list[str], path: Path, lines: list[int]) -> np.ndarray:
    out = np.empty((len(rows), len(cols)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                out[i, j] = value = float(row[c])
            except ValueError:
                raise DataError(
                    f"{path}:{lines[i]}: column '{header[c]}' holds {row[c]!r}, not a number"
                    + (" (empty cells are not allowed)" if not row[c].strip() else "")
                ) from None
            if not math.isfinite(value):
                raise DataError(
                    f"{path}:{lines[i]}: column '{header[c]}' holds {row[c]!r}, not a finite number "
                    f"(missing values are not allowed)"
                )
    return out


def _class_names(values: list[str]) -> list[str]:
    """Distinct labels, sorted numerically when they are all integers ("2" before "10")."""
    unique = set(values)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def _check_labels(labels: list[str], lines: list[int], column: str, path: Path) -> list[str]:
    """The labels of a CSV column; an empty one is an error naming its line."""
    for label, line in zip(labels, lines):
        if not label:
            raise DataError(f"{path}:{line}: column '{column}' is empty; every row needs a label")
    return labels


def _encode_labels(values: list[str], classes: list[str], where: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not among the training labels {classes}")
    return torch.tensor([index[v] for v in values], dtype=torch.long)


# ---------------------------------------------------------------- csv


@DATASETS.register("csv")
def csv_table(
    path: str,
    target: Columns,
    features: Optional[Annotated[list[str], Field(min_length=1)]] = None,
    task: Literal["classification", "regression"] = "classification",
    test_path: Optional[str] = None,
    delimiter: str = ",",
    drop_labels: list[str] = [],
) -> Splits:
    """A table: numeric `features` (default: every other column) and a `target` column.

    Classification targets may be strings or integers; they are mapped to class indices in
    sorted order and the names kept as the classes. Regression targets may be several columns.
    Rows whose label is in `drop_labels` are skipped.
    """
    targets = _as_list(target)
    if task == "classification" and len(targets) != 1:
        raise DataError("data.dataset.target: a classification target is one column")

    def load(p: str, key: str, classes: Optional[list[str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        file = _path(p, key)
        header, rows, lines = _read_csv(file, delimiter)
        t_idx = [_index(header, t, file, "target") for t in targets]
        names = features if features is not None else [h for h in header if h not in targets]
        f_idx = [_index(header, f, file, "features") for f in names]
        if drop_labels:
            keep = [i for i, r in enumerate(rows) if r[t_idx[0]] not in drop_labels]
            rows, lines = [rows[i] for i in keep], [lines[i] for i in keep]
        if not rows:
            raise DataError(f"{file}: no data rows")
        x = torch.from_numpy(_floats(rows, f_idx, header, file, lines))
        if task == "regression":
            y = torch.from_numpy(_floats(rows, t_idx, header, file, lines))
        else:
            labels = _check_labels([r[t_idx[0]].strip() for r in rows], lines, targets[0], file)
            classes = classes or _class_names(labels)
            y = _encode_labels(labels, classes, str(file))
        return x, y, classes or []

    x, y, classes = load(path, "path", None)
    x_test = y_test = None
    if test_path is not None:
        x_test, y_test, _ = load(test_path, "test_path", classes or None)
    if task == "regression":
        info = DataInfo("regression", tuple(x.shape[1:]), output_size=y.shape[1])
    else:
        info = DataInfo("classification", tuple(x.shape[1:]), len(classes), classes)
    return Splits(x, y, info, x_test, y_test)


# ---------------------------------------------------------------- npz


def _npz_arrays(path: str, key: str, names: tuple[Optional[str], ...]) -> list[Optional[np.ndarray]]:
    file = _path(path, key)
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"data.dataset.{key}: {file} holds one bare array (.npy), not named arrays; "
                f"save them with np.savez({file.stem}.npz, {names[0]}=inputs, {names[1] or 'y'}=targets)"
            )
        with loaded as npz:
            present = list(npz.keys())
            out = []
            for name in names:
                out.append(None if name is None or name not in npz else npz[name])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{file}: not a readable .npz file ({exc})") from None
    if names[0] not in present:
        raise DataError(f"data.dataset.x_key: {file} has no array '{names[0]}' (arrays: {', '.join(present)})")
    if names[1] is not None and names[1] not in present:
        raise DataError(f"data.dataset.y_key: {file} has no array '{names[1]}' (arrays: {', '.join(present)})")
    return out


def _npz_inputs(x: np.ndarray, lengths: Optional[np.ndarray], layout: str, where: str) -> torch.Tensor:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: an array of {x.dtype}; inputs must be numbers (bool, integer or float)")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{where}: no samples (an array of shape {x.shape})")
    if x.dtype.kind == "f" and layout != "sequences" and not (layout == "auto" and x.ndim == 3):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise DataError(
                f"{where}: {int(bad.sum())} samples hold NaN or infinite values (the first is sample "
                f"{int(bad.argmax())}); missing values are not allowed"
            )
    if layout == "auto":
        if x.dtype == np.uint8 and x.ndim in (3, 4):
            layout = "images"
        else:
            layout = {2: "tabular", 3: "sequences", 4: "images"}.get(x.ndim, "")
        if not layout:
            raise DataError(f"{where}: cannot tell the layout of an array of shape {x.shape}; set data.dataset.layout")
    t = torch.from_numpy(np.ascontiguousarray(x))
    if layout == "images":
        if t.dim() == 4 and t.shape[1] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
            t = t.permute(0, 3, 1, 2).contiguous()  # N, H, W, C -> N, C, H, W
        if t.dim() not in (3, 4):
            raise DataError(f"{where}: images must be (N, H, W) or (N, C, H, W), not {tuple(t.shape)}")
        return _images(t) if t.dtype == torch.uint8 else (t.unsqueeze(1) if t.dim() == 3 else t).float()
    if layout == "tabular":
        return t.reshape(len(t), -1).float()
    if layout == "tokens":
        if t.dim() != 2 or t.is_floating_point():
            raise DataError(f"{where}: tokens must be an (N, T) array of integer ids, not {tuple(t.shape)} {t.dtype}")
        t = t.long()
        if lengths is not None:
            t[torch.arange(t.shape[1]) >= torch.as_tensor(lengths).view(-1, 1)] = PAD
        return t
    # sequences: (N, T, F), or (N, T) of one feature
    t = t.float()
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise DataError(f"{where}: sequences must be (N, T, F) or (N, T), not {tuple(t.shape)}")
    if lengths is not None:
        # The documented layout of variable-length real-valued sequences: NaN rows at the end.
        t[torch.arange(t.shape[1]) >= torch.as_tensor(lengths).view(-1, 1)] = float("nan")
    return t


def _npz_labels(y: np.ndarray, where: str) -> list[str]:
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


@DATASETS.register("npz")
def npz(
    path: str,
    x_key: str = "x",
    y_key: Optional[str] = "y",
    lengths_key: str = "lengths",
    test_path: Optional[str] = None,
    layout: Literal["auto", "tabular", "images", "sequences", "tokens"] = "auto",
    task: Literal["classification", "regression"] = "classification",
) -> Splits:
    """Arrays from a NumPy .npz file: inputs `x_key`, targets `y_key` (null: unlabeled).

    Layouts (auto: uint8 3-D/4-D are images, else 2-D tabular, 3-D sequences, 4-D images):
    images (N, H, W) or (N, C, H, W), uint8 scaled to [0, 1]; tabular (N, F); sequences (N, T, F);
    tokens (N, T) of int ids, 0 = padding. An optional `lengths_key` array marks variable-length
    sequences: steps past each length become padding (NaN rows, or id 0 for tokens).
    """
    def load(p: str, key: str) -> tuple[torch.Tensor, Optional[np.ndarray]]:
        x, y, lengths = _npz_arrays(p, key, (x_key, y_key, lengths_key))
        return _npz_inputs(x, lengths, layout, f"{p}:{x_key}"), y

    x, y = load(path, "path")
    x_test, y_test = load(test_path, "test_path") if test_path is not None else (None, None)
    shape = tuple(x.shape[1:])
    vocab_size = variable = None
    if x.dtype == torch.long:
        vocab_size = int(max(x.max(), 0 if x_test is None else x_test.max())) + 1
        variable = True
    elif x.dim() == 3:  # real-valued sequences vary in length only if some carry NaN padding rows
        variable = any(bool(t.isnan().all(dim=-1).any()) for t in (x, x_test) if t is not None)
    if y is None:
        info = DataInfo("unlabeled", shape, vocab_size=vocab_size, variable_length=variable)
        none = lambda t: None if t is None else torch.zeros(len(t), dtype=torch.long)  # noqa: E731
        return Splits(x, none(x), info, x_test, none(x_test))
    if task == "regression":
        def as_y(a: np.ndarray, p: str) -> torch.Tensor:
            if a.dtype.kind not in "biuf" or a.ndim == 0 or not np.isfinite(a).all():
                raise DataError(
                    f"{p}:{y_key}: regression targets must be finite numbers (got {a.dtype}, shape {a.shape})"
                )
            return torch.from_numpy(np.asarray(a, dtype=np.float32).reshape(len(a), -1))

        y_train, y_t = as_y(y, path), None if y_test is None else as_y(y_test, test_path)
        info = DataInfo(
            "regression", shape, output_size=y_train.shape[1], vocab_size=vocab_size, variable_length=variable
        )
    else:
        labels = _npz_labels(y, f"{path}:{y_key}")
        classes = _class_names(labels)
        if all(c.lstrip("-").isdigit() for c in classes) and min(map(int, classes)) >= 0:
            classes = [str(i) for i in range(max(map(int, classes)) + 1)]  # ids are the indices
        y_train = _encode_labels(labels, classes, path)
        y_t = None
        if y_test is not None:
            y_t = _encode_labels(_npz_labels(y_test, f"{test_path}:{y_key}"), classes, test_path)
        info = DataInfo(
            "classification", shape, len(classes), classes, vocab_size=vocab_size, variable_length=variable
        )
    if len(y_train) != len(x):
        raise DataError(f"{path}: '{x_key}' has {len(x)} samples but '{y_key}' has {len(y_train)}")
    return Splits(x, y_train, info, x_test, y_t)


# ---------------------------------------------------------------- image folder


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


@DATASETS.register("image_folder")
def image_folder(
    root: str,
    size: Union[PositiveInt, list[PositiveInt]] = 32,
    grayscale: bool = False,
    test_root: Optional[str] = None,
) -> Splits:
    """Images in `root/<class>/<file>` (torchvision's ImageFolder layout), resized to `size`.

    Every image is decoded once, into a uint8 tensor kept in memory. `size` is one side or
    [height, width]. `test_root` has the same layout and the same classes.
    """
    from PIL import Image

    if not isinstance(size, int) and len(size) != 2:
        raise DataError(f"data.dataset.size: give one side or [height, width] (got {size})")
    height, width = (size, size) if isinstance(size, int) else tuple(size)

    def load(folder: str, key: str, classes: Optional[list[str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        top = Path(folder)
        if not top.is_dir():
            what = "is a file, not a folder" if top.exists() else "not found"
            raise DataError(f"data.dataset.{key}: folder '{folder}' {what} (relative paths start at {Path.cwd()})")
        found = sorted(d.name for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is not None and found != classes:
            raise DataError(
                f"data.dataset.{key}: the classes in '{folder}' {found} differ from the training classes {classes}"
            )
        samples = [
            (file, label)
            for label, name in enumerate(found)
            for file in sorted((top / name).rglob("*"))
            if file.suffix.lower() in IMAGE_EXTENSIONS and file.is_file()
        ]
        if not found or not samples:
            raise DataError(
                f"data.dataset.{key}: no images in '{folder}'; expected {folder}/<class>/<image> "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        empty = sorted(set(found) - {found[label] for _, label in samples})
        if empty:
            raise DataError(
                f"data.dataset.{key}: class folders without images in '{folder}': {', '.join(empty)} "
                f"(each subfolder is a class; remove it, or add images: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        x = torch.empty((len(samples), 1 if grayscale else 3, height, width), dtype=torch.uint8)
        for i, (file, _) in enumerate(samples):
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if grayscale else "RGB").resize((width, height), Image.BILINEAR)
            except OSError as exc:
                raise DataError(f"{file}: cannot decode the image ({exc})") from None
            arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
            x[i] = arr.unsqueeze(0) if grayscale else arr.permute(2, 0, 1)
        y = torch.tensor([label for _, label in samples], dtype=torch.long)
        return x, y, classes or found

    x, y, classes = load(root, "root", None)
    x_test = y_test = None
    if test_root is not None:
        x_test, y_test, _ = load(test_root, "test_root", classes)
        x_test = _images(x_test)
    x = _images(x)
    return Splits(x, y, DataInfo("classification", tuple(x.shape[1:]), len(classes), list(classes)), x_test, y_test)


# ---------------------------------------------------------------- text


def tokenize(text: str, pattern: re.Pattern, lowercase: bool) -> list[str]:
    """Words of `text`: lowercased (optionally), then every match of `pattern`."""
    return pattern.findall(text.lower() if lowercase else text)


def build_vocab(docs: list[list[str]], min_freq: int = 1, max_size: Optional[int] = None) -> list[str]:
    """Index -> token: `<pad>`, `<unk>`, then tokens seen `min_freq` times, most frequent first.

    Ties are broken alphabetically so the vocabulary is a function of the documents alone.
    `max_size` counts the two special tokens.
    """
    counts = collections.Counter(tok for doc in docs for tok in doc)
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
        kept = kept[: max(max_size - 2, 0)]
    return ["<pad>", "<unk>", *kept]


def encode(docs: list[list[str]], vocab: list[str], max_len: int) -> torch.Tensor:
    """(N, max_len) int64 ids: truncated to `max_len`, padded at the end with 0 (`<pad>`)."""
    index = {t: i for i, t in enumerate(vocab)}
    out = torch.full((len(docs), max_len), PAD, dtype=torch.long)
    for i, doc in enumerate(docs):
        ids = [index.get(t, UNK) for t in doc[:max_len]]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _shuffled(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@DATASETS.register("text_csv", runtime=("val_split", "seed", "state"))
def text_csv(
    path: str,
    text: str = "text",
    label: str = "label",
    test_path: Optional[str] = None,
    test_split: Fraction = 0.0,
    drop_labels: list[str] = [],
    min_freq: PositiveInt = 1,
    max_size: Optional[Annotated[int, Field(ge=3)]] = None,
    max_len: Optional[PositiveInt] = None,
    lowercase: bool = True,
    pattern: str = r"\w+(?:'\w+)*",
    delimiter: str = ",",
    val_split: float = 0.1,
    seed: int = 0,
    state: Optional[dict[str, Any]] = None,
) -> Splits:
    """Texts and labels from a CSV: token-id sequences (N, T) for sequence classifiers.

    Texts are lowercased and split into words by the regex `pattern`. The vocabulary comes from
    the training split only (`<pad>` = 0, `<unk>` = 1, tokens seen `min_freq` times, at most
    `max_size` entries); sequences are truncated to `max_len` (default: the longest training
    text) and padded at the end with 0. Rows whose label is in `drop_labels` are skipped. The
    test split is `test_path`, or `test_split` of the rows held out with a fixed seed; the
    validation split (`data.val_split`) is held out with the run's seed before the vocabulary
    is built, so validation words never enter it.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.dataset.pattern: not a valid regular expression ({exc})") from None

    def load(p: str, key: str) -> tuple[list[list[str]], list[str]]:
        file = _path(p, key)
        header, rows, lines = _read_csv(file, delimiter)
        t_col, l_col = _index(header, text, file, "text"), _index(header, label, file, "label")
        keep = [i for i, r in enumerate(rows) if r[l_col] not in drop_labels]
        rows, lines = [rows[i] for i in keep], [lines[i] for i in keep]
        if not rows:
            raise DataError(f"{file}: no rows left (drop_labels: {drop_labels})")
        labels = _check_labels([r[l_col].strip() for r in rows], lines, label, file)
        return [tokenize(r[t_col], regex, lowercase) for r in rows], labels

    docs, labels = load(path, "path")
    classes = _class_names(labels)  # the label set is a schema, not a statistic: all rows of `path`
    if test_path is not None:
        test_docs, test_labels = load(test_path, "test_path")
    elif test_split > 0:
        order = _shuffled(len(docs), TEST_SEED).tolist()
        n_test = max(1, round(test_split * len(docs)))
        test_docs, test_labels = [docs[i] for i in order[:n_test]], [labels[i] for i in order[:n_test]]
        docs, labels = [docs[i] for i in order[n_test:]], [labels[i] for i in order[n_test:]]
    else:
        test_docs, test_labels = None, None
    order = _shuffled(len(docs), seed).tolist()
    n_val = max(1, round(val_split * len(docs)))
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
    val_docs, val_labels = pick(docs, val_idx), pick(labels, val_idx)
    docs, labels = pick(docs, train_idx), pick(labels, train_idx)
    if not docs:
        raise DataError(
            f"data.val_split: {path} has {len(val_docs)} rows{' besides the test split' if test_docs else ''}; "
            f"holding out {len(val_docs)} for validation leaves none to train on (lower val_split, or give more data)"
        )
    if not any(docs):
        raise DataError(
            f"data.dataset.text: no training text in column '{text}' of {path} has a word that "
            f"data.dataset.pattern '{pattern}' matches; is it the column of texts?"
        )

    if state is not None:  # nntrain eval: tokenize exactly as in training
        vocab, length, classes = state["vocab"], state["max_len"], state["classes"]
    else:
        vocab = build_vocab(docs, min_freq, max_size)
        length = max_len or max(1, max(len(d) for d in docs))
    x, y = encode(docs, vocab, length), _encode_labels(labels, classes, path)
    x_val, y_val = encode(val_docs, vocab, length), _encode_labels(val_labels, classes, path)
    x_test = y_test = None
    if test_docs is not None:
        x_test = encode(test_docs, vocab, length)
        y_test = _encode_labels(test_labels, classes, test_path or path)
    info = DataInfo(
        "classification", (length,), len(classes), classes, vocab_size=len(vocab),
        source_state={"vocab": vocab, "max_len": length, "classes": classes}, variable_length=True,
    )
    return Splits(x, y, info, x_test, y_test, x_val=x_val, y_val=y_val)


# ---------------------------------------------------------------- time series


def windows(values: np.ndarray, inputs: list[int], targets: list[int], window: int, horizon: int,
            first: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows whose targets lie in rows [first, end): x (N, window, len(inputs)), y (N, horizon * len(targets)).

    Sample t has inputs rows [t - window, t) and targets rows [t, t + horizon), flattened
    time step by time step.
    """
    starts = [t for t in range(max(first, window), end - horizon + 1)]
    x = np.stack([values[t - window : t][:, inputs] for t in starts]) if starts else np.zeros((0, window, len(inputs)))
    y = np.stack([values[t : t + horizon][:, targets].reshape(-1) for t in starts]) if starts else np.zeros((0, horizon * len(targets)))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


@DATASETS.register("timeseries_csv", runtime=("val_split", "state"))
def timeseries_csv(
    path: str,
    columns: Columns,
    target: Optional[Columns] = None,
    window: PositiveInt = 16,
    horizon: PositiveInt = 1,
    test_split: Fraction = 0.15,
    scale: Literal["standardize", "minmax", "none"] = "standardize",
    delimiter: str = ",",
    val_split: float = 0.1,
    state: Optional[dict[str, Any]] = None,
) -> Splits:
    """Forecasting windows from a CSV whose rows are in time order.

    Each sample is `window` rows of `columns` and the next `horizon` values of `target`
    (default: the same columns). The series is cut chronologically: the first part trains,
    the next `data.val_split` of the rows validates and the last `test_split` tests. A sample
    belongs to the part holding its targets; training samples never see a validation or test
    value, while validation and test samples take their inputs from the rows before them, as a
    forecaster would. Scaling statistics come from the training rows only; metrics are
    reported in the original units.
    """
    file = _path(path)
    header, rows, lines = _read_csv(file, delimiter)
    inputs, outputs = _as_list(columns), _as_list(target if target is not None else columns)
    names = list(dict.fromkeys(inputs + outputs))
    values = _floats(rows, [_index(header, c, file, "columns") for c in names], header, file, lines).astype(np.float64)
    col = {c: i for i, c in enumerate(names)}
    n = len(values)
    n_test, n_val = round(test_split * n), round(val_split * n)
    train_end, val_end = n - n_val - n_test, n - n_test
    if train_end < window + horizon or n_val < horizon or (n_test and n_test < horizon):
        raise DataError(
            f"{file}: {n} rows split {train_end}/{n_val}/{n_test} (train/val/test) leave no complete "
            f"window of {window} + {horizon} rows in some part; lower window, horizon or the split fractions"
        )
    if state is not None:  # nntrain eval: the training run's statistics
        shift = np.array([state["shift"][c] for c in names])
        spread = np.array([state["scale"][c] for c in names])
    else:
        fit_on = values[:train_end]
        if scale == "standardize":
            shift, spread = fit_on.mean(0), fit_on.std(0)
        elif scale == "minmax":
            shift, spread = fit_on.min(0), fit_on.max(0) - fit_on.min(0)
        else:
            shift, spread = np.zeros(len(names)), np.ones(len(names))
        spread = np.where(spread > 1e-12, spread, 1.0)
    scaled = (values - shift) / spread
    i_in, i_out = [col[c] for c in inputs], [col[c] for c in outputs]
    x, y = windows(scaled, i_in, i_out, window, horizon, 0, train_end)
    x_val, y_val = windows(scaled, i_in, i_out, window, horizon, train_end, val_end)
    x_test = y_test = None
    if n_test:
        x_test, y_test = windows(scaled, i_in, i_out, window, horizon, val_end, n)
    info = DataInfo(
        "regression", (window, len(inputs)), output_size=horizon * len(outputs),
        target_shift=[float(shift[i]) for _ in range(horizon) for i in i_out],
        target_scale=[float(spread[i]) for _ in range(horizon) for i in i_out],
        source_state={
            "shift": {c: float(shift[i]) for c, i in col.items()},
            "scale": {c: float(spread[i]) for c, i in col.items()},
            "rows": {"train": [0, train_end], "val": [train_end, val_end], "test": [val_end, n]},
        },
        variable_length=False,  # every window is `window` rows
    )
    return Splits(x, y, info, x_test, y_test, x_val=x_val, y_val=y_val)
