"""Image folders: decoded on threads with PIL's pixels, cached on disk, the cache never trusted blindly."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nntrain.data import image_cache, image_decode
from nntrain.data.image_cache import entry_path, load_images
from nntrain.data.image_decode import _inflate_png, decode_images
from nntrain.data.sources import DATASETS
from nntrain.errors import DataError

RNG = np.random.default_rng(0)


def pil_reference(files, height, width, grayscale) -> np.ndarray:
    """What nntrain always decoded: PIL, convert, bilinear resize."""
    out = []
    for f in files:
        with Image.open(f) as img:
            img = img.convert("L" if grayscale else "RGB").resize((width, height), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        out.append(a[None] if grayscale else a.transpose(2, 0, 1))
    return np.stack(out)


def png_bytes(pixels: np.ndarray, filters: list[int], idat_parts: int = 1) -> bytes:
    """A PNG of `pixels` (h, w, c) uint8 with the row filter `filters[r]` on row r (0-4)."""
    h, w, c = pixels.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    img = pixels.astype(np.int16).reshape(h, w * c)
    rows = []
    for r in range(h):
        x = img[r]
        up = img[r - 1] if r else np.zeros_like(x)
        left = np.concatenate([np.zeros(c, np.int16), x[:-c]])
        ul = np.concatenate([np.zeros(c, np.int16), up[:-c]])
        f = filters[r]
        if f == 0:
            pred = np.zeros_like(x)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = up
        elif f == 3:
            pred = (left + up) >> 1
        else:
            pa, pb, pc = np.abs(up - ul), np.abs(left - ul), np.abs(left + up - 2 * ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        rows.append(bytes([f]) + ((x - pred) & 255).astype(np.uint8).tobytes())
    data = zlib.compress(b"".join(rows))
    step = -(-len(data) // idat_parts)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    idats = b"".join(chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idats + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_small_pngs_of_every_filter_decode_as_pil_does(tmp_path, channels):
    files = []
    for k in range(40):
        h, w = 9, 7
        pixels = RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)
        if k % 2:  # smooth images make the predictors matter
            pixels = np.cumsum(RNG.integers(0, 3, (h, w, channels)), axis=1).astype(np.uint8)
        filters = [int(f) for f in RNG.integers(0, 5, h)] if k > 4 else [k] * h
        f = tmp_path / f"{k:02d}.png"
        f.write_bytes(png_bytes(pixels, filters, idat_parts=1 + k % 3))
        assert _inflate_png(f.read_bytes(), h, w) is not None  # the fast path takes it
        files.append(f)
    for grayscale in (True, False):
        got = decode_images(files, 9, 7, grayscale, workers=2)
        assert got.dtype == torch.uint8 and got.shape == (40, 1 if grayscale else 3, 9, 7)
        np.testing.assert_array_equal(got.numpy(), pil_reference(files, 9, 7, grayscale))


def test_pil_saved_pngs_jpegs_palettes_and_resizes_decode_as_pil_does(tmp_path):
    files = []
    modes = ["L", "RGB", "RGBA", "LA", "P", "I;16", "1"]
    for k in range(28):
        mode = modes[k % len(modes)]
        size = (16, 16) if k % 3 else (20 + k, 11)  # some need resizing
        base = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(base, "RGB")
        img = img.convert(mode) if mode != "I;16" else Image.fromarray(base[..., 0].astype(np.uint16) * 257)
        suffix = ".jpg" if k % 5 == 0 and mode in ("L", "RGB") else ".png"
        f = tmp_path / f"{k:02d}{suffix}"
        extra = {"transparency": 7 if mode == "L" else (7, 8, 9)} if mode in ("L", "RGB") and k % 2 else {}
        img.save(f, **(extra if suffix == ".png" else {}))
        files.append(f)
    for grayscale in (True, False):
        got = decode_images(files, 16, 16, grayscale, workers=3)
        np.testing.assert_array_equal(got.numpy(), pil_reference(files, 16, 16, grayscale))


def test_damaged_pngs_go_to_pil_and_the_first_bad_file_is_named(tmp_path, monkeypatch):
    good = png_bytes(RNG.integers(0, 256, (8, 8, 1), dtype=np.uint8), [4] * 8)
    files = []
    for k in range(12):
        f = tmp_path / f"{k:02d}.png"
        f.write_bytes(good)
        files.append(f)
    # A wrong IDAT checksum: the fast path declines; PIL decodes it (it doesn't check IDAT CRCs).
    bad_crc = bytearray(good)
    bad_crc[-13] ^= 0xFF  # the last byte of the IDAT chunk's CRC (IEND is the last 12 bytes)
    files[3].write_bytes(bytes(bad_crc))
    assert _inflate_png(bytes(bad_crc), 8, 8) is None
    np.testing.assert_array_equal(decode_images(files, 8, 8, True).numpy(), pil_reference(files, 8, 8, True))
    # Truncated files: PIL's error, naming the first of them in order, whatever the threads did.
    monkeypatch.setattr(image_decode, "CHUNK", 2)
    for k in (5, 9):
        files[k].write_bytes(good[:40])
    with pytest.raises(DataError, match=rf"{files[5].name}: cannot decode the image"):
        decode_images(files, 8, 8, True, workers=4)
    (tmp_path / "missing.png").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"missing.png: cannot decode the image \(\[Errno 2\]"):
        decode_images([tmp_path / "missing.png"], 8, 8, True)


# ---------------------------------------------------------------- the cache


def make_folder(root: Path, n_per_class: int = 3, size: int = 6) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(RNG.integers(0, 256, (size, size), dtype=np.uint8), "L").save(root / cls / f"{i}.png")
    return root


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(image_cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts the folders decoded (cache misses)."""
    calls: list[int] = []
    real = image_cache.decode_images

    def counting(files, *args):
        calls.append(len(files))
        return real(files, *args)

    monkeypatch.setattr(image_cache, "decode_images", counting)
    return calls


def test_a_cache_hit_reads_the_same_pixels_without_decoding(tmp_path, cache, decodes):
    root = make_folder(tmp_path / "imgs")
    files = files_of(root)
    first = load_images(root, files, 6, 6, True)
    assert decodes == [6] and entry_path(root, 6, 6, True).is_file()
    second = load_images(root, files, 6, 6, True)
    assert decodes == [6] and torch.equal(first, second)
    np.testing.assert_array_equal(second.numpy(), pil_reference(files, 6, 6, True))
    # Another size or mode is another entry.
    load_images(root, files, 4, 4, True)
    load_images(root, files, 6, 6, False)
    assert decodes == [6, 6, 6] and len(list(cache.glob("*.bin"))) == 3
    assert not list(cache.glob("*.tmp"))  # written atomically: no temporary file left


def test_a_changed_added_or_removed_file_invalidates_the_entry(tmp_path, cache, decodes):
    root = make_folder(tmp_path / "imgs")
    files = files_of(root)
    load_images(root, files, 6, 6, True)
    # Changed: new pixels, same size on disk; its modification time moves on.
    changed = files[1]
    Image.fromarray(np.full((6, 6), 200, np.uint8), "L").save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    x = load_images(root, files, 6, 6, True)
    assert decodes == [6, 6] and (x[1] == 200).all()
    assert torch.equal(load_images(root, files, 6, 6, True), x) and decodes == [6, 6]  # and cached again
    # Added.
    Image.fromarray(np.zeros((6, 6), np.uint8), "L").save(root / "b" / "new.png")
    files = files_of(root)
    assert len(load_images(root, files, 6, 6, True)) == 7 and decodes == [6, 6, 7]
    # Removed.
    (root / "a" / "0.png").unlink()
    files = files_of(root)
    assert len(load_images(root, files, 6, 6, True)) == 6 and decodes == [6, 6, 7, 6]
    # Renamed: the same bytes under another name is another folder.
    (root / "a" / "1.png").rename(root / "a" / "9.png")
    load_images(root, files_of(root), 6, 6, True)
    assert decodes == [6, 6, 7, 6, 6]


@pytest.mark.parametrize("damage", ["flip a pixel", "truncate", "garbage", "empty", "bad header"])
def test_a_damaged_entry_is_rebuilt_never_trusted(tmp_path, cache, decodes, damage):
    root = make_folder(tmp_path / "imgs")
    files = files_of(root)
    good = load_images(root, files, 6, 6, True)
    entry = entry_path(root, 6, 6, True)
    data = bytearray(entry.read_bytes())
    if damage == "flip a pixel":
        data[-5] ^= 0x01
    elif damage == "truncate":
        data = data[:-10]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "empty":
        data = bytearray()
    else:
        data[20:24] = b"{{{{"
    entry.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="image cache .*decoding the images again"):
        again = load_images(root, files, 6, 6, True)
    assert decodes == [6, 6] and torch.equal(again, good)
    assert torch.equal(load_images(root, files, 6, 6, True), good) and decodes == [6, 6]  # rewritten whole


def test_an_unwritable_cache_warns_and_cache_false_writes_nothing(tmp_path, monkeypatch, decodes):
    root = make_folder(tmp_path / "imgs")
    files = files_of(root)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(image_cache.CACHE_ENV, str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the image cache"):
        x = load_images(root, files, 6, 6, True)
    np.testing.assert_array_equal(x.numpy(), pil_reference(files, 6, 6, True))
    monkeypatch.setenv(image_cache.CACHE_ENV, str(tmp_path / "cache"))
    load_images(root, files, 6, 6, True, cache=False)
    load_images(root, files, 6, 6, True, cache=False)
    assert decodes == [6, 6, 6] and not (tmp_path / "cache").exists()


def test_image_folder_source_uses_the_cache_for_train_and_test(tmp_path, cache, decodes):
    make_folder(tmp_path / "train", 4, 8)
    make_folder(tmp_path / "test", 2, 8)
    spec = {"name": "image_folder", "root": str(tmp_path / "train"), "size": 8, "grayscale": True,
            "test_root": str(tmp_path / "test")}
    first = DATASETS.build(spec)
    assert decodes == [8, 4]
    second = DATASETS.build(spec)
    assert decodes == [8, 4] and torch.equal(first.x_train, second.x_train) and torch.equal(first.x_test, second.x_test)
    assert first.x_train.dtype == torch.float32 and first.y_train.tolist() == [0] * 4 + [1] * 4
    DATASETS.build({**spec, "cache": False})
    assert decodes == [8, 4, 8, 4]


def test_listing_a_class_folder_matches_rglob(tmp_path):
    from nntrain.data.reading import IMAGE_EXTENSIONS
    from nntrain.data.sources.image_folder import _image_files

    top = tmp_path / "cls"
    for rel in ["b.png", "a.PNG", "a-c.jpg", "a/b.png", "a/z/deep.webp", ".hidden.png", ".png", "..png", "x.",
                "notes.txt", "z.tar.png", ".dir/in.png"]:
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(b"")
    (top / "folder.png").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "o.png").write_bytes(b"")
    (top / "linked_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (top / "linked.png").symlink_to(top / "b.png")
    (top / "broken.png").symlink_to(top / "missing.png")
    expected = sorted(p for p in top.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    assert _image_files(top) == expected and len(expected) == 10
