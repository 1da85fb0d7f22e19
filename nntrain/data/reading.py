"""Reading data files into arrays, shared by every file-based source.

Paths are relative to where nntrain runs. Text files are UTF-8 (a byte-order mark is dropped)
and may be compressed (`.gz`, `.bz2`, `.xz`: read transparently). Every problem is a DataError
naming the file, and the line where there is one.

The swap points for faster readers: `read_csv` (the one function that reads a CSV file),
`CsvTable.floats` (the one that parses numeric columns), `read_npz` and `decode_images`.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Union

import numpy as np
import torch
from pydantic import Field

from nntrain import memory
from nntrain.errors import DataError, Key, did_you_mean, shorten

# One CSV column or several.
Columns = Union[str, Annotated[list[str], Field(min_length=1)]]
# A CSV field separator: exactly one character (Python's csv module takes no more).
Delimiter = Annotated[str, Field(min_length=1, max_length=1)]

FLOAT32_MAX = float(np.finfo(np.float32).max)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def check_memory(nbytes: int, what: str, key: Key, advice: str) -> None:
    """A DataError (keyed `key`) before allocating `nbytes` for `what` when they don't fit in memory."""
    problem = memory.need(nbytes)
    if problem is not None:
        raise DataError(f"{what} {problem}; {advice}", key=key)


def as_list(value: Columns) -> list[str]:
    """One column name or several, as a list."""
    return [value] if isinstance(value, str) else list(value)


def existing_file(path: str | Path, key: str = "path") -> Path:
    """`path` as a Path; a DataError naming `data.dataset.<key>` if it is missing or a folder."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise DataError(f"'{path}' {what} (relative paths start at {Path.cwd()})", key=("data", "dataset", key))
    return p


def existing_folder(path: str | Path, key: str) -> Path:
    """`path` as a Path; a DataError naming `data.dataset.<key>` if it is missing or a file."""
    p = Path(path)
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "not found"
        raise DataError(
            f"folder '{path}' {what} (relative paths start at {Path.cwd()})", key=("data", "dataset", key)
        )
    return p


def _opener(path: Path) -> Callable[..., IO[Any]]:
    return {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)


def open_text(path: Path) -> IO[str]:
    """Opens a UTF-8 text file (a byte-order mark is dropped), decompressing `.gz`, `.bz2` and `.xz`."""
    return _opener(path)(path, "rt", encoding="utf-8-sig", newline="")


def first_non_utf8_line(path: Path) -> int:
    """The number of the first line of `path` that is not UTF-8 (1 if every line is)."""
    with _opener(path)(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


# ---------------------------------------------------------------- CSV


@dataclass
class CsvTable:
    """A CSV file read as text: its header, its non-empty rows and the line each row starts on."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # fields may span lines: the line where each row starts

    def index(self, name: str, key: str) -> int:
        """The position of column `name`, which the config gives as `data.dataset.<key>`."""
        count = self.header.count(name)
        if count > 1:
            raise DataError(
                f"{self.path}:1: the header has {count} columns named '{name}' "
                f"(data.dataset.{key} needs one); rename them"
            )
        if count == 1:
            return self.header.index(name)
        hint = did_you_mean(name, self.header)
        raise DataError(
            f"{self.path} has no column '{name}'{hint} (columns: {', '.join(self.header)})",
            key=("data", "dataset", key),
        )

    def strings(self, col: int) -> list[str]:
        """The cells of column `col`, one per row."""
        return [row[col] for row in self.rows]

    def subset(self, keep: list[int]) -> CsvTable:
        """The table with only the rows at positions `keep`."""
        return CsvTable(self.path, self.header, [self.rows[i] for i in keep], [self.lines[i] for i in keep])

    def floats(self, cols: list[int]) -> np.ndarray:
        """Columns `cols` as an (N, len(cols)) float32 array; a cell that is not a finite float32
        number is a DataError naming its line and column."""
        out = np.empty((len(self.rows), len(cols)), dtype=np.float32)
        for i, row in enumerate(self.rows):
            for j, c in enumerate(cols):
                try:
                    value = float(row[c])
                except ValueError:
                    value = None
                if value is None or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                    raise DataError(self._not_a_number(i, c, value))
                out[i, j] = value
        return out

    def _not_a_number(self, i: int, c: int, value: float | None) -> str:
        """Why the cell of row `i`, column `c` (parsed as `value`, None: not a number) can't be used."""
        cell = self.rows[i][c]
        where = f"{self.path}:{self.lines[i]}: column '{self.header[c]}' holds {cell!r}"
        if value is None:
            return f"{where}, not a number" + (" (empty cells are not allowed)" if not cell.strip() else "")
        if not math.isfinite(value):
            return f"{where}, not a finite number (missing values are not allowed)"
        return f"{where}, beyond the range of float32 (+-{FLOAT32_MAX:.3g}); rescale the column"


def read_csv(path: Path, delimiter: str = ",") -> CsvTable:
    """Reads a whole CSV file with a header row; a row whose field count differs from the
    header's, bytes that are not UTF-8 or an unreadable file are DataErrors naming the line."""
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise DataError(
            f"{shorten(delimiter)} can't separate fields; give one character, e.g. ';'",
            key=("data", "dataset", "delimiter"),
        )
    try:
        with open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; expected a header row")
            rows, lines, start = [], [], reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise DataError(f"{path}:{start}: {len(row)} fields but the header has {len(header)}")
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}:{first_non_utf8_line(path)}: not UTF-8 text (byte 0x{byte}); save the file as UTF-8"
        ) from None
    except (OSError, EOFError, csv.Error, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read it as CSV ({exc})") from None
    return CsvTable(path, [h.strip() for h in header], rows, lines)


# ---------------------------------------------------------------- npz


def read_npz(path: Path, key: str, names: list[str | None]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays `names` (inputs, targets, ...; None skips one) that the .npz file at `path`
    (config key `data.dataset.<key>`) holds, and the names of every array it holds."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path} holds one bare array (.npy), not named arrays; "
                f"save them with np.savez({path.stem}.npz, {names[0]}=inputs, {names[1] or 'y'}=targets)",
                key=("data", "dataset", key),
            )
        with loaded as npz:
            present = list(npz.keys())
            arrays = {name: npz[name] for name in names if name in present}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return arrays, present


# ---------------------------------------------------------------- images


def float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def decode_images(files: list[Path], height: int, width: int, grayscale: bool) -> torch.Tensor:
    """Decodes and resizes (bilinear) every image file: uint8 (N, 1 or 3, height, width).

    On a thread pool, with PIL's pixels: `nntrain.data.image_decode`. (`image_folder` adds a
    disk cache on top: `nntrain.data.image_cache`.)
    """
    from nntrain.data.image_decode import decode_images as decode_in_parallel

    return decode_in_parallel(files, height, width, grayscale)
