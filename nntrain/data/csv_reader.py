"""Fast CSV ingest for the sources that read numbers (`csv`, `timeseries_csv`).

A file is read in two steps: `csv_header` reads the header row (so a source can resolve its
column names, with the usual errors), then `read_columns` reads the columns it needs.

`read_columns` tries pyarrow's CSV reader first: C++, multithreaded, every numeric column
parsed straight to float32 and the label column kept as text. That fast path accepts a file
only when the line-accurate reader (`reading.read_csv` + `CsvTable.floats`, Python's csv
module) would accept it with the same values; for anything else -- a row with the wrong
number of fields, a cell that is not a number, a non-finite value, bytes that are not UTF-8,
an empty label, pyarrow missing -- it gives up and the line-accurate reader reads the file
again and raises its exact message (`file:line: ...`). A bad file costs one extra read; a
good one is read at pandas' speed or better.

Why pyarrow, of the C readers at hand (benchmarks/bench_ingest.py; README "Measured numbers"):
its parser is multithreaded (pandas' is not: on the 2 shared cores measured, the two took
about the same time on the MNIST-layout table; with more cores pyarrow should pull ahead, not
measured here); it takes explicit column types, so
numbers go straight to float32 (no float64 DataFrame, no type inference, no consolidation
copy); the table's blocks go back to the system as they are copied out (MIMALLOC_PURGE_DELAY in
`_read_fast`), so the peak stays within about 3x the output array where pandas' is 5-9x; and it
imports in ~0.05 s where pandas takes ~0.3 s. numpy.loadtxt was 6x slower than both. On a very
wide table (10,000 columns) it took a third longer than pandas (README "Measured numbers").
pyarrow is imported inside `read_columns`, so `nntrain --help` never loads it.

Numbers parsed by pyarrow are rounded to float32 once, directly from the text; the
line-accurate reader goes through float64 first. The two agree except, rarely, in the last
bit of a value halfway between two float32s.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nntrain.data.labels import class_names, csv_labels, encode_labels
from nntrain.data.reading import CsvTable, open_text, read_csv
from nntrain.errors import DataError

# Compressed files are read through Python's decompressors, as `reading.open_text` reads them
# (pyarrow has no xz codec).
_DECOMPRESS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_COMPRESSED = tuple(_DECOMPRESS)


@dataclass
class Labels:
    """A column of class labels: the distinct labels (stripped; whole numbers canonical, as
    `labels.csv_labels` gives them) and, per row, the index of its label among them."""

    values: list[str]
    codes: np.ndarray  # (N,) int64 indices into `values`

    def classes(self) -> list[str]:
        """The class names these labels make, in class-index order (`labels.class_names`)."""
        return class_names(self.values)

    def encode(self, classes: list[str], where: object) -> torch.Tensor:
        """Class indices (N,) int64; a label outside `classes` is `labels.encode_labels`' error."""
        lookup = encode_labels(self.values, classes, where)  # every distinct label: the same check
        return lookup[torch.from_numpy(self.codes)]


@dataclass
class CsvColumns:
    """What `read_columns` read: one float32 array per group of numeric columns, and the labels."""

    path: Path
    numbers: list[np.ndarray]  # (N, len(group)) float32, C-contiguous
    labels: Labels | None
    n_rows: int
    fast: bool  # whether pyarrow read it (False: the line-accurate reader did)


def csv_header(path: Path, delimiter: str = ",") -> CsvTable:
    """The file's header as a `CsvTable` with no rows (for `index` and the header checks).

    Reads the first row only. A file whose header can't be read that way (empty, not UTF-8, a
    field spanning lines, a bad delimiter) is read whole by `read_csv`, which raises the exact
    error; should it read fine, that full table is returned.
    """
    header = _first_row(path, delimiter)
    if header is None:
        return read_csv(path, delimiter)
    return CsvTable(path, [h.strip() for h in header], [], [])


def read_columns(
    path: Path,
    delimiter: str,
    numbers: Sequence[Sequence[int]],
    label: tuple[int, str] | None = None,
    drop_labels: Sequence[str] = (),
    drop_column: int | None = None,
    empty: str | None = "no data rows",
) -> CsvColumns:
    """The numeric column groups `numbers` (column positions) as float32 arrays, and the class
    labels of column `label` = (position, name), from the CSV file `path`.

    Rows whose stripped cell in `drop_column` (default: the label column) is in `drop_labels`
    are left out. No row left is the DataError "<path>: <empty>" (unless `empty` is None).
    Every problem in the file is the line-accurate reader's DataError.
    """
    if drop_column is None and label is not None:
        drop_column = label[0]
    fast = None
    if not drop_labels or (label is not None and drop_column == label[0]):
        fast = _read_fast(path, delimiter, numbers, label, drop_labels)
    if fast is None:
        return _read_exact(path, delimiter, numbers, label, drop_labels, drop_column, empty)
    if fast.n_rows == 0 and empty is not None:
        raise DataError(f"{path}: {empty}")
    return fast


# ---------------------------------------------------------------- the line-accurate reader


def _read_exact(
    path: Path, delimiter: str, numbers: Sequence[Sequence[int]], label: tuple[int, str] | None,
    drop_labels: Sequence[str], drop_column: int | None, empty: str | None,
) -> CsvColumns:
    """`read_columns` by `reading.read_csv`: slow, and the authority on every error message."""
    table = read_csv(path, delimiter)
    if drop_labels and drop_column is not None:
        table = table.subset([i for i, r in enumerate(table.rows) if r[drop_column].strip() not in drop_labels])
    if not table.rows and empty is not None:
        raise DataError(f"{path}: {empty}")
    arrays = [table.floats(list(group)) for group in numbers]
    labels = None
    if label is not None:
        cells = csv_labels(table.strings(label[0]), table.lines, label[1], table.path)
        values = list(dict.fromkeys(cells))
        index = {v: i for i, v in enumerate(values)}
        labels = Labels(values, np.fromiter((index[c] for c in cells), dtype=np.int64, count=len(cells)))
    return CsvColumns(path, arrays, labels, len(table.rows), fast=False)


# ---------------------------------------------------------------- the fast path


def _first_rows(path: Path, delimiter: str) -> tuple[list[str], list[str] | None] | None:
    """The header row and the first data row (None if there is none) as Python's csv module
    reads them, or None when the fast path can't take the file: unreadable, empty, not UTF-8,
    a header spanning lines, a delimiter csv refuses."""
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        return None
    try:
        with open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if not header or reader.line_num != 1:
                return None
            return header, next((row for row in reader if row), None)
    except Exception:  # noqa: BLE001 - whatever it is, read_csv reports it exactly
        return None


def _first_row(path: Path, delimiter: str) -> list[str] | None:
    """The header row as Python's csv module reads it (None: as `_first_rows`)."""
    rows = _first_rows(path, delimiter)
    return None if rows is None else rows[0]


def _has_quotes(path: Path) -> bool:
    """Whether the file holds a '"' anywhere (compressed files: assumed so). Without one, no value
    can span lines, and pyarrow may cut the file into blocks at any newline: about a third less
    work than tracking quotes to find where rows end."""
    if path.suffix in _COMPRESSED:
        return True
    buffer = bytearray(8 << 20)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            if buffer.find(b'"', 0, n) >= 0:
                return True
    return False


def _block_size(n_fields: int) -> int:
    """pyarrow's block (the unit of parallel parsing): about 1,000 rows of ~8 bytes a field,
    between 1 and 64 MiB. Wide tables need big blocks: each block makes one array per column;
    narrow ones small: the blocks in flight are most of the memory a read needs beyond its table."""
    return int(min(max(n_fields * 8 * 1024, 1 << 20), 64 << 20))


def _read_fast(
    path: Path, delimiter: str, numbers: Sequence[Sequence[int]], label: tuple[int, str] | None,
    drop_labels: Sequence[str],
) -> CsvColumns | None:
    """`read_columns` by pyarrow, or None if the file is one the fast path does not vouch for."""
    if "pyarrow" not in sys.modules:
        # pyarrow allocates with mimalloc, which by default keeps freed memory for reuse: the
        # table's blocks, freed one by one below as they are copied out, would stay resident
        # beside the output (1,000,000 x 10 floats peaked at 5.2x the output's size). Purged at
        # once, they make room for it (2.8x). Read when pyarrow loads; a value set by the user stays.
        os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency; without it, read slowly
        return None
    rows = _first_rows(path, delimiter)
    if rows is None:
        return None
    header, first = rows
    n_fields = len(header)
    wanted = {c for group in numbers for c in group}
    if label is not None and label[0] in wanted:
        return None  # a column read both ways: not a layout any source asks for
    names = [f"c{i}" for i in range(n_fields)]  # the header's own names may repeat or be empty
    # Numbers that look like whole numbers (the first row's do: pixels, counts, ids) are first
    # parsed as uint32, a third cheaper than float32; any other cell (a sign, a point, an
    # exponent, beyond 2**32) fails that attempt and the file is read again as float32. uint32
    # values become the same float32s as their text would (numpy rounds to nearest even).
    whole = first is not None and len(first) == n_fields
    whole = whole and all(first[c].isdigit() and first[c].isascii() for c in wanted)
    kinds = [pa.uint32(), pa.float32()] if whole else [pa.float32()]
    try:
        quoted = _has_quotes(path)
    except OSError:
        return None
    table = None
    for kind in kinds:
        # Every column is read: the numbers as `kind`, the rest as text, which pyarrow checks is
        # UTF-8 -- as the line-accurate reader decodes every byte of the file.
        types = {name: (kind if i in wanted else pa.string()) for i, name in enumerate(names)}
        try:
            table = _pyarrow_read(pacsv, path, delimiter, names, types, quoted)
            break
        except Exception:  # noqa: BLE001 - any failure: the next kind, or the line-accurate reader
            continue
    if table is None:
        return None

    keep = None  # the rows left after drop_labels (None: all)
    labels = None
    if label is not None:
        import pyarrow.compute as pacompute  # labels only: its import costs ~0.05 s

        labels, keep = _labels(pacompute, table.column(names[label[0]]), label[1], path, drop_labels)
        if labels is None:
            return None  # an empty or fractional label: the line-accurate reader names its line
    n_rows = table.num_rows
    positions = {name: i for i, name in enumerate(table.column_names)}
    arrays = [np.empty((n_rows, len(group)), dtype=np.float32) for group in numbers]
    batches = table.to_batches()
    del table  # from here, each batch's memory goes as soon as it is copied out
    row = 0
    while batches:
        batch = batches.pop(0)
        n = batch.num_rows
        for out, group in zip(arrays, numbers):
            if n and len(group):
                part = batch.select([positions[names[c]] for c in group])
                out[row : row + n] = part.to_tensor(row_major=True).to_numpy()
        row += n
        del batch
    if keep is not None:
        arrays = [a[keep] for a in arrays]
    for a in arrays if kind == pa.float32() else ():
        # NaN, infinities and values beyond float32's range (parsed as inf): the exact reader
        # says which cell. Chunked, so the check needs no array the size of the table.
        for start in range(0, len(a), 1 << 16):
            if not np.isfinite(a[start : start + (1 << 16)]).all():
                return None
    n_rows = len(labels.codes) if labels is not None else n_rows
    return CsvColumns(path, arrays, labels, n_rows, fast=True)


def _pyarrow_read(pacsv: Any, path: Path, delimiter: str, names: list[str], types: dict, quoted: bool) -> Any:
    """The whole file as a pyarrow Table (the header row skipped; columns named `names`)."""
    source: Any = str(path)
    if path.suffix in _COMPRESSED:
        source = _DECOMPRESS[path.suffix](path, "rb")
    try:
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1, block_size=_block_size(len(names)), use_threads=True
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"', double_quote=True, escape_char=False,
                newlines_in_values=quoted, ignore_empty_lines=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[], true_values=[], false_values=[],
                strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=True,
            ),
        )
    finally:
        if not isinstance(source, str):
            source.close()


def _labels(
    pacompute: Any, column: Any, name: str, path: Path, drop_labels: Sequence[str]
) -> tuple[Labels | None, np.ndarray | None]:
    """The labels of a pyarrow text column, worked out on its distinct values (few) with the
    line-accurate reader's own rules (`csv_labels`), then spread to the rows by index; and the
    mask of the rows kept after `drop_labels` (None: all). (None, None) where a label is an error."""
    raw = pacompute.unique(column)
    # The int32 indices, straight from their buffers (pyarrow's to_numpy imports pandas).
    found = pacompute.index_in(column, value_set=raw).chunks
    codes = np.concatenate(
        [np.frombuffer(c.buffers()[1], np.int32, len(c), c.offset * 4) for c in found] + [np.zeros(0, np.int32)]
    ).astype(np.int64)
    stripped = [v.strip() for v in raw.to_pylist()]
    kept = [v for v in stripped if v not in drop_labels]
    try:
        canonical = iter(csv_labels(kept, [0] * len(kept), name, path))
    except DataError:
        return None, None
    # Labels that differ only in spaces or spelling (" 1", "1.0", "01") are one label.
    per_raw = [None if v in drop_labels else next(canonical) for v in stripped]
    values = list(dict.fromkeys(v for v in per_raw if v is not None))
    index = {v: i for i, v in enumerate(values)}
    codes = np.array([-1 if v is None else index[v] for v in per_raw], dtype=np.int64)[codes]
    keep = None
    if len(kept) < len(stripped):
        keep = codes >= 0
        codes = codes[keep]
    return Labels(values, codes), keep
