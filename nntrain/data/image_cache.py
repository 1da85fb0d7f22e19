"""A disk cache of decoded image folders: a folder is decoded once, later runs read one file.

Where: `$NNTRAIN_CACHE_DIR` if set, else `$XDG_CACHE_HOME/nntrain/images`, else
`~/.cache/nntrain/images`. A user cache folder rather than one inside the data folder: data
folders are often read-only or shared, and a cache there would travel with copies of the data.
Delete the folder to clear the cache; `cache: false` in the source's config turns it off.

What: one entry per (folder, size, grayscale), named by a hash of the folder's resolved path
and those settings, so a folder that changes replaces its entry instead of adding one. The
entry holds the uint8 tensor (N, C, H, W) and the key it was made for: a SHA-256 of every
image's path (relative to the folder), size and modification time (ns), the wanted size and
mode, and the PIL version that decoded it. A changed, added, removed or renamed file changes
the key: the folder is decoded again and the entry rewritten.

Never trusted: an entry is read only if its magic bytes, header, key, shape, length and CRC-32
of the pixels all check out; anything else (a truncated or damaged file, another format
version) is decoded again (with a warning when the entry looked damaged). Entries are written
to a temporary file in the same folder and renamed over the old one, so a reader never sees a
half-written entry, and two runs writing at once leave one whole entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from nntrain.data.image_decode import decode_images

CACHE_ENV = "NNTRAIN_CACHE_DIR"
MAGIC = b"NNTRAIN-IMAGES\x00\x01"  # 16 bytes: the format and its version
_HEADER = struct.Struct("<16sI")  # magic, length of the JSON header that follows
_MAX_HEADER = 1 << 16


def cache_dir() -> Path:
    """The folder holding the cache entries (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nntrain" / "images"


def load_images(
    root: Path, files: Sequence[Path], height: int, width: int, grayscale: bool, cache: bool = True
) -> torch.Tensor:
    """The images `files` (all under the folder `root`) decoded as `decode_images` does:
    uint8 (N, 1 or 3, height, width), from the cache when its entry is for exactly these files."""
    if not cache:
        return decode_images(files, height, width, grayscale)
    shape = (len(files), 1 if grayscale else 3, height, width)
    key = folder_key(root, files, height, width, grayscale)
    entry = entry_path(root, height, width, grayscale)
    if key is not None:
        cached = read_entry(entry, key, shape)
        if cached is not None:
            return cached
    x = decode_images(files, height, width, grayscale)
    if key is not None:
        write_entry(entry, key, x)
    return x


def entry_path(root: Path, height: int, width: int, grayscale: bool) -> Path:
    """The cache entry of folder `root` decoded at this size and mode."""
    what = f"{Path(root).resolve()}\0{height}x{width}\0{'L' if grayscale else 'RGB'}"
    return cache_dir() / f"{hashlib.sha256(what.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.bin"


def folder_key(root: Path, files: Sequence[Path], height: int, width: int, grayscale: bool) -> str | None:
    """The SHA-256 of what the decoded tensor depends on; None if a file can't be stat'ed
    (decoding will say why)."""
    from PIL import __version__ as pil_version

    digest = hashlib.sha256(f"{MAGIC!r} {height}x{width} {grayscale} PIL {pil_version}\n".encode())
    prefix = os.path.join(os.fspath(root), "")
    lines = []
    for file in files:
        path = os.fspath(file)
        try:
            st = os.stat(path)
        except OSError:
            return None
        name = path[len(prefix):] if path.startswith(prefix) else os.path.abspath(path)
        lines.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n")
    digest.update("".join(lines).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def read_entry(entry: Path, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached tensor if `entry` is whole and for `key` and `shape`; else None."""
    try:
        f = open(entry, "rb")
    except OSError:
        return None  # no entry yet (or unreadable): decode
    with f:
        try:
            magic, length = _HEADER.unpack(f.read(_HEADER.size))
            if magic != MAGIC or length > _MAX_HEADER:
                return _damaged(entry, "not an nntrain image cache of this version")
            header = json.loads(f.read(length).decode("utf-8"))
            if header.get("key") != key or header.get("shape") != list(shape):
                return None  # the folder changed: an old entry, not a damaged one
            nbytes = 1
            for side in shape:
                nbytes *= side
            if header.get("bytes") != nbytes or os.fstat(f.fileno()).st_size != _HEADER.size + length + nbytes:
                return _damaged(entry, "its length is wrong")
            x = torch.empty(shape, dtype=torch.uint8)
            pixels = x.numpy()
            if nbytes and f.readinto(memoryview(pixels).cast("B")) != nbytes:
                return _damaged(entry, "it is truncated")
            if zlib.crc32(pixels) != header.get("crc32"):
                return _damaged(entry, "its checksum is wrong")
            return x
        except (OSError, ValueError, struct.error, AttributeError, TypeError) as exc:
            return _damaged(entry, f"it can't be read: {exc}")


def write_entry(entry: Path, key: str, x: torch.Tensor) -> bool:
    """Writes `x` as the entry for `key`, atomically (a temporary file renamed over `entry`).
    Returns whether it was written; a cache that can't be written is a warning, not an error."""
    pixels = x.contiguous().numpy()
    header = json.dumps({
        "key": key, "shape": list(x.shape), "dtype": "uint8", "bytes": pixels.nbytes,
        "crc32": zlib.crc32(pixels),
    }).encode("utf-8")
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=entry.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(MAGIC, len(header)))
            f.write(header)
            f.write(memoryview(pixels).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry)
        return True
    except OSError as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        warnings.warn(
            f"could not write the image cache {entry} ({exc}); images are decoded again next time "
            f"(set {CACHE_ENV} to a writable folder, or cache: false)",
            stacklevel=3,
        )
        return False


def _damaged(entry: Path, why: str) -> None:
    warnings.warn(f"image cache {entry}: {why}; decoding the images again", stacklevel=4)
    return None
