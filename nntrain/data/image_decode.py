"""Decoding image files into one uint8 tensor, on a thread pool, with PIL's pixels.

Every pixel equals what `PIL.Image.open(f).convert("L" or "RGB").resize((w, h), BILINEAR)`
gives (the decoding nntrain always had). Two ways there:

- Small PNGs already at the wanted size (8-bit grey, grey+alpha, RGB or RGBA, not
  interlaced, sides up to `SMALL_PNG` pixels: MNIST- or CIFAR-like folders) are decoded here:
  the file's chunks are checked (CRC) and inflated with zlib on the threads, and the PNG row
  filters are undone with numpy for thousands of images at once; the colour conversion is
  PIL's own integer formula. PIL spends ~100-300 us of Python per file on such images, which
  threads can't share out (the GIL); this way costs ~40 us a file.
- Everything else (JPEG, palettes, 16-bit, interlaced, big or resized images) goes through
  PIL, on the threads: PIL releases the GIL while it decodes and resizes.

A file the PNG path has any doubt about (a bad checksum, a truncated stream, an unknown
filter, an animation) goes to PIL, which decodes it or raises its own error.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from nntrain.errors import DataError

SMALL_PNG = 64  # the PNG path takes images up to this many pixels a side (its cost grows with the width)
BATCH = 4096  # images of one shape whose PNG filters are undone together
CHUNK = 512  # files a thread reads per task

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> channels (grey, grey+alpha, RGB, RGBA)


def default_workers() -> int:
    """Threads to decode with: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def decode_images(
    files: Sequence[Path], height: int, width: int, grayscale: bool, workers: int | None = None
) -> torch.Tensor:
    """Decodes and resizes (bilinear) every image file: uint8 (N, 1 or 3, height, width).

    A file that can't be decoded is a DataError naming it (the first such file in `files`).
    """
    channels = 1 if grayscale else 3
    out = torch.empty((len(files), channels, height, width), dtype=torch.uint8)
    pixels = out.numpy()  # shares memory with `out`
    chunks = [range(s, min(s + CHUNK, len(files))) for s in range(0, len(files), CHUNK)]
    # The first file that failed so far: files after it need no decoding (the error is raised),
    # files before it still do (one of them may fail too, and the first failure is the one told).
    first_failure = [len(files)]
    lock = threading.Lock()

    def task(indices: range) -> tuple[list[tuple[int, tuple[int, int, int], bytes]], tuple[int, DataError] | None]:
        """Reads the files at `indices`: PIL's decodes go straight into `pixels`; small PNGs come
        back inflated (index, (h, w, c), filtered rows); and the first error, if any."""
        pngs = []
        for i in indices:
            if i > first_failure[0]:
                break
            try:
                data = Path(files[i]).read_bytes()
            except OSError:
                data = b""  # PIL opens it again and raises the error the old loop raised
            png = _inflate_png(data, height, width) if data else None
            if png is not None:
                pngs.append((i, png[0], png[1]))
                continue
            try:
                pixels[i] = _pil_decode(files[i], data, height, width, grayscale)
            except DataError as exc:
                with lock:
                    first_failure[0] = min(first_failure[0], i)
                return pngs, (i, exc)
        return pngs, None

    groups: dict[tuple[int, int, int], list[tuple[int, bytes]]] = {}
    error: tuple[int, DataError] | None = None
    n_workers = max(1, min(workers or default_workers(), len(chunks)))
    with ThreadPoolExecutor(n_workers, thread_name_prefix="nntrain-decode") as pool:
        for pngs, failed in pool.map(task, chunks):  # in order: the first error is the first file's
            if failed is not None and error is None:
                error = failed
            if error is not None:
                continue  # let the tasks already running finish; decode no more
            for i, shape, raw in pngs:
                group = groups.setdefault(shape, [])
                group.append((i, raw))
                if len(group) == BATCH:
                    _write(pixels, group, shape, grayscale)
                    group.clear()
    if error is not None:
        raise error[1]
    for shape, group in groups.items():
        if group:
            _write(pixels, group, shape, grayscale)
    return out


# ---------------------------------------------------------------- PIL


def _pil_decode(file: Path, data: bytes, height: int, width: int, grayscale: bool) -> np.ndarray:
    """One image through PIL: (C, height, width) uint8. Errors are those the file path gives."""
    from PIL import Image

    def decode(source: object) -> np.ndarray:
        with Image.open(source) as img:
            img = img.convert("L" if grayscale else "RGB").resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return arr[None] if grayscale else arr.transpose(2, 0, 1)

    try:
        if data:
            try:
                return decode(io.BytesIO(data))
            except Exception:  # noqa: BLE001 - decoded again from the path: PIL's message names the file
                pass
        return decode(file)
    except Image.DecompressionBombError as exc:  # a header claiming a huge image: not decoded
        raise DataError(f"{file}: the image is too large to decode ({exc})") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot decode the image ({exc})") from None


# ---------------------------------------------------------------- small PNGs


def _inflate_png(data: bytes, height: int, width: int) -> tuple[tuple[int, int, int], bytes] | None:
    """((h, w, channels), the filtered rows) of a PNG the fast path takes, else None.

    Taken: 8 bits per channel, grey/grey+alpha/RGB/RGBA, not interlaced, exactly `height` x
    `width` (no resize) and at most SMALL_PNG a side; every chunk's CRC right; the zlib stream
    complete and exactly as long as the image; every row filter known; no animation (acTL).
    """
    if not data.startswith(_SIGNATURE) or len(data) < 45:
        return None
    idat = []
    pos, end, shape = 8, len(data), None
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        stop = pos + 8 + length
        if stop + 4 > end or zlib.crc32(data[pos + 4 : stop]) != struct.unpack_from(">I", data, stop)[0]:
            return None
        if shape is None:
            if kind != b"IHDR" or length != 13:
                return None
            w, h, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, pos + 8)
            if (
                depth != 8 or colour not in _CHANNELS or compression or filtering or interlace
                or (h, w) != (height, width) or max(h, w) > SMALL_PNG
            ):
                return None
            shape = (h, w, _CHANNELS[colour])
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : stop])
        elif kind == b"IEND":
            break
        elif kind in (b"acTL", b"PLTE"):
            return None
        pos = stop + 4
    else:
        return None  # no IEND
    if shape is None or not idat:
        return None
    h, w, c = shape
    stride = w * c + 1
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(idat), h * stride + 1)
    except zlib.error:
        return None
    if len(raw) != h * stride or not inflater.eof or max(raw[::stride]) > 4:
        return None
    return shape, raw


def _write(pixels: np.ndarray, group: list[tuple[int, bytes]], shape: tuple[int, int, int], grayscale: bool) -> None:
    """Undoes the PNG filters of a batch of same-shape images and writes them, converted, into `pixels`."""
    h, w, c = shape
    rows = np.frombuffer(b"".join(raw for _, raw in group), dtype=np.uint8).reshape(len(group), h, w * c + 1)
    image = _unfilter(rows[:, :, 0], rows[:, :, 1:], w, c).reshape(len(group), h, w, c)
    pixels[[i for i, _ in group]] = _convert(image, grayscale).transpose(0, 3, 1, 2)


def _unfilter(filters: np.ndarray, data: np.ndarray, w: int, c: int) -> np.ndarray:
    """PNG filter reconstruction (types 0-4, RFC 2083 section 6) for n images at once.

    filters (n, h): each row's filter type; data (n, h, w * c): the filtered bytes.
    Returns the (n, h, w * c) pixels. Row by row (a row depends on the one above); rows with
    Average or Paeth filters also pixel by pixel (a pixel depends on the one to its left).
    """
    n, h, _ = data.shape
    out = np.empty_like(data)
    prior = np.zeros((n, w * c), dtype=np.uint8)  # the row above the first is zeros
    for r in range(h):
        row, kind, dst = data[:, r], filters[:, r], out[:, r]
        for f in np.unique(kind):
            sel = np.flatnonzero(kind == f)
            if len(sel) == n:
                sel = slice(None)
            x, up = row[sel], prior[sel]
            if f == 0:  # None
                dst[sel] = x
            elif f == 1:  # Sub: a running sum along the row, per channel, mod 256
                dst[sel] = np.cumsum(x.reshape(-1, w, c), axis=1, dtype=np.uint8).reshape(-1, w * c)
            elif f == 2:  # Up
                dst[sel] = x + up
            else:
                dst[sel] = _left_dependent(x, up, w, c, paeth=f == 4)
        prior = dst
    return out


def _left_dependent(x: np.ndarray, up: np.ndarray, w: int, c: int, paeth: bool) -> np.ndarray:
    """Average (paeth=False) or Paeth rows: each pixel predicted from left, up and upper-left."""
    k = len(x)
    x = x.reshape(k, w, c).astype(np.int16)
    up = up.reshape(k, w, c).astype(np.int16)
    out = np.empty((k, w, c), dtype=np.int16)
    left = np.zeros((k, c), dtype=np.int16)
    upper_left = np.zeros((k, c), dtype=np.int16)
    for j in range(w):
        b = up[:, j]
        if paeth:
            pa, pb, pc = np.abs(b - upper_left), np.abs(left - upper_left), np.abs(left + b - 2 * upper_left)
            predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, b, upper_left))
        else:
            predicted = (left + b) >> 1
        left = out[:, j] = (x[:, j] + predicted) & 255
        upper_left = b
    return out.astype(np.uint8).reshape(k, w * c)


def _convert(image: np.ndarray, grayscale: bool) -> np.ndarray:
    """(n, h, w, c) grey/grey+alpha/RGB/RGBA -> (n, h, w, 1 or 3), as PIL's convert("L"/"RGB"):
    alpha dropped, grey repeated, and L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16."""
    c = image.shape[-1]
    if c <= 2:  # grey, grey + alpha
        grey = image[..., :1]
        return grey if grayscale else np.repeat(grey, 3, axis=-1)
    rgb = image[..., :3]
    if not grayscale:
        return rgb
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
