"""The fast CSV reader (pyarrow) agrees with the line-accurate one, and hands every bad file to it."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from nntrain.data import csv_reader
from nntrain.data.csv_reader import _read_exact, _read_fast, csv_header, read_columns
from nntrain.data.reading import read_csv
from nntrain.errors import DataError

pytest.importorskip("pyarrow")

OPEN = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def write(path: Path, data: str | bytes) -> Path:
    data = data.encode("utf-8") if isinstance(data, str) else data
    with OPEN.get(path.suffix, open)(path, "wb") as f:
        f.write(data)
    return path


def both(path: Path, numbers, label=None, drop_labels=(), delimiter=","):
    """The fast reader's result (None: it declined) and the line-accurate reader's."""
    fast = _read_fast(path, delimiter, numbers, label, drop_labels)
    exact = _read_exact(path, delimiter, numbers, label, drop_labels, None if label is None else label[0], None)
    return fast, exact


def assert_same(fast, exact):
    assert fast is not None and fast.fast and not exact.fast
    assert len(fast.numbers) == len(exact.numbers) and fast.n_rows == exact.n_rows
    for a, b in zip(fast.numbers, exact.numbers):
        assert a.dtype == b.dtype == np.float32 and a.flags.c_contiguous and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    if exact.labels is None:
        assert fast.labels is None
    else:
        fast_rows = [fast.labels.values[i] for i in fast.labels.codes]
        exact_rows = [exact.labels.values[i] for i in exact.labels.codes]
        assert fast_rows == exact_rows and sorted(fast.labels.values) == sorted(exact.labels.values)


GOOD = {
    "plain": "a,b,y\n1,2,cat\n3.5,-4e-3,dog\n",
    "crlf and blank lines": "a,b,y\r\n1,2,cat\r\n\r\n3,4,dog\r\n\n",
    "cr only": "a,b,y\r1,2,cat\r3,4,dog\r",
    "no final newline": "a,b,y\n1,2,cat\n3,4,dog",
    "quoted cells, commas and newlines in labels": 'a,b,y\n"1","2","big, ""grey""\ncat"\n3,4,dog\n',
    "spaces around numbers and labels": "a,b,y\n 1 ,\t2, cat \n3,4,dog\n",
    "whole-number labels": "a,b,y\n1,2,1\n3,4,01\n5,6,1.0\n7,8,10\n",
    "byte-order mark": "\ufeffa,b,y\n1,2,x\n3,4,z\n",
    "unicode labels": "a,b,y\n1,2,café\n3,4,東京\n",
    "header padding": " a , b ,y \n1,2,u\n3,4,v\n",
    "header only": "a,b,y\n",
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_fast_and_exact_readers_agree_on_good_files(tmp_path, name):
    f = write(tmp_path / "t.csv", GOOD[name])
    fast, exact = both(f, [[0, 1]], (2, "y"))
    assert_same(fast, exact)


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz"])
def test_compressed_files(tmp_path, suffix):
    f = write(tmp_path / f"t{suffix}", "a,b,y\n1,2,u\n3,4,v\n")
    fast, exact = both(f, [[0, 1]], (2, "y"))
    assert_same(fast, exact)
    assert fast.numbers[0].tolist() == [[1, 2], [3, 4]]


def test_groups_drop_labels_and_unused_text_columns(tmp_path):
    f = write(tmp_path / "t.csv", "id,a,note,b,y\nr1,1,\"x, y\",2,keep\nr2,3,z,4, plot\nr3,5,,6,keep\n")
    fast, exact = both(f, [[3, 1], [1]], (4, "y"), drop_labels=["plot"])
    assert_same(fast, exact)
    assert fast.numbers[0].tolist() == [[2, 1], [6, 5]] and fast.numbers[1].tolist() == [[1], [5]]
    assert fast.labels.values == ["keep"]
    # A regression table with no label column; another delimiter.
    g = write(tmp_path / "r.tsv", "x\ty1\ty2\n1\t0.5\t1.5\n2\t2.5\t3.5\n")
    fast, exact = both(g, [[0], [1, 2]], delimiter="\t")
    assert_same(fast, exact)


def test_a_wide_table_and_values_round_to_float32(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 785)) * 100
    text = ",".join(f"c{i}" for i in range(785)) + "\n"
    text += "\n".join(",".join(f"{v:.6f}" for v in row) for row in values) + "\n"
    f = write(tmp_path / "wide.csv", text)
    fast, exact = both(f, [list(range(1, 785))], None)
    assert_same(fast, exact)
    cols = read_columns(f, ",", [list(range(1, 785)), [0]])
    assert cols.fast and cols.numbers[0].shape == (300, 784) and cols.numbers[1].shape == (300, 1)


BAD = {  # text -> the line-accurate reader's message (a regex)
    "too few fields": ("a,y\n1,u\n2\n", r"bad.csv:3: 1 fields but the header has 2"),
    "too many fields": ("a,y\n1,u\n2,v,\n", r"bad.csv:3: 3 fields but the header has 2"),
    "not a number": ("a,y\n1,u\nx1,v\n", r"bad.csv:3: column 'a' holds 'x1', not a number"),
    "empty cell": ("a,y\n1,u\n,v\n", r"bad.csv:3: column 'a' holds '', not a number \(empty cells are not allowed\)"),
    "nan": ("a,y\n1,u\nnan,v\n", r"bad.csv:3: column 'a' holds 'nan', not a finite number"),
    "infinity": ("a,y\n1,u\n-Infinity,v\n", r"bad.csv:3: column 'a' holds '-Infinity', not a finite number"),
    "beyond float32": ("a,y\n1,u\n1e40,v\n", r"bad.csv:3: column 'a' holds '1e40', beyond the range of float32"),
    "empty label": ("a,y\n1,u\n2, \n", r"bad.csv:3: column 'y' is empty; every row needs a label"),
    "fractional label": ("a,y\n1,1\n2,1.5\n", r"bad.csv:3: column 'y' holds '1.5', which can't be a class"),
    "after a multi-line cell": ('a,y\n1,"u\n\nu"\nx,v\n', r"bad.csv:5: column 'a' holds 'x', not a number"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_get_the_line_accurate_message(tmp_path, name):
    text, message = BAD[name]
    f = write(tmp_path / "bad.csv", text)
    assert _read_fast(f, ",", [[0]], (1, "y"), ()) is None
    with pytest.raises(DataError, match=message):
        read_columns(f, ",", [[0]], (1, "y"))


def test_bytes_that_are_not_utf8_anywhere_get_the_line(tmp_path):
    # In a column no one reads: the line-accurate reader decodes every byte, so both refuse.
    # Far enough down that reading the header decodes none of it.
    f = write(tmp_path / "latin.csv", ("a,note,y\n" + "1,ok,u\n" * 20_000 + "2,caf\xe9,v\n").encode("latin-1"))
    assert csv_header(f).header == ["a", "note", "y"]
    with pytest.raises(DataError, match=r"latin.csv:20002: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        read_columns(f, ",", [[0]], (2, "y"))
    g = write(tmp_path / "head.csv", "a,caf\xe9\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"head.csv:1: not UTF-8 text"):
        csv_header(g)


def test_cells_only_python_reads_are_read_slowly_with_the_same_values(tmp_path):
    # float() takes "1_0" and a trailing vertical tab; pyarrow doesn't: the exact reader reads them.
    f = write(tmp_path / "odd.csv", "a,y\n1_0,u\n2\x0b,v\n")
    cols = read_columns(f, ",", [[0]], (1, "y"))
    assert not cols.fast and cols.numbers[0].tolist() == [[10], [2]]


def test_empty_files_headers_and_no_rows(tmp_path):
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty; expected a header row"):
        csv_header(empty)
    only = write(tmp_path / "only.csv", "a,y\n")
    with pytest.raises(DataError, match=r"only.csv: no data rows"):
        read_columns(only, ",", [[0]], (1, "y"))
    assert read_columns(only, ",", [[0]], empty=None).numbers[0].shape == (0, 1)
    dropped = write(tmp_path / "dropped.csv", "a,y\n1,plot\n")
    with pytest.raises(DataError, match=r"dropped.csv: no rows left"):
        read_columns(dropped, ",", [[0]], (1, "y"), ["plot"], empty="no rows left")
    with pytest.raises(DataError, match=re.escape("data.dataset.delimiter: '' can't separate fields")):
        csv_header(only, "")


def test_labels_encode_with_the_training_classes(tmp_path):
    f = write(tmp_path / "t.csv", "a,y\n1,b\n2,a\n3,b\n")
    cols = read_columns(f, ",", [[0]], (1, "y"))
    assert cols.labels.classes() == ["a", "b"] and cols.labels.encode(["a", "b"], f).tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"labels \['a'\] are not among the training labels \['b', 'c'\]"):
        cols.labels.encode(["b", "c"], f)


def test_without_pyarrow_the_exact_reader_reads(tmp_path, monkeypatch):
    f = write(tmp_path / "t.csv", "a,y\n1,u\n2,v\n")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    cols = read_columns(f, ",", [[0]], (1, "y"))
    assert not cols.fast and cols.numbers[0].tolist() == [[1], [2]]


def test_pyarrow_is_not_imported_before_a_csv_is_read():
    import subprocess

    code = "import sys, nntrain.data.sources; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert csv_reader.__doc__ and "pyarrow" in csv_reader.__doc__


def test_block_size_grows_with_the_width():
    """About 1,000 rows a block, between 1 MiB (narrow tables: fewer bytes in flight) and 64 MiB."""
    assert csv_reader._block_size(10) == 1 << 20 and csv_reader._block_size(785) == 785 * 8 * 1024
    assert csv_reader._block_size(10_000) == 64 << 20
    assert read_csv  # the line-accurate reader stays the authority on messages
