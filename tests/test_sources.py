"""File-based data sources, the whiten normalizer, source-given validation splits and task metrics."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nntrain.config import Component, validate
from nntrain.data.datasets import DATASETS
from nntrain.data.files import build_vocab, text_csv, timeseries_csv
from nntrain.data.loaders import build_data
from nntrain.data.transforms import NORMALIZERS
from nntrain.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SUNSPOTS = SHARED / "sunspots" / "sunspots.csv"
ROTTEN = SHARED / "rotten_tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2"


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
        s = text_csv(str(f), test_path=str(test), val_split=0.3, seed=seed)
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
    s = text_csv(str(f), max_len=2, val_split=0.3, seed=0)
    assert s.info.classes == ["bad", "good", "plot"] and s.x_train.shape[1] == 2
    s = text_csv(str(f), max_len=2, drop_labels=["plot"], val_split=0.3, seed=0)
    assert len(s.x_train) + len(s.x_val) == 3 and "awful" not in s.info.source_state["vocab"]
    state = {"vocab": ["<pad>", "<unk>", "film"], "max_len": 3, "classes": ["bad", "good"]}
    again = text_csv(str(f), drop_labels=["plot"], val_split=0.3, seed=0, state=state)
    assert again.x_train.shape[1] == 3 and again.info.vocab_size == 3
    assert set(again.x_train.unique().tolist()) <= {0, 1, 2}


def test_text_csv_without_training_rows_or_words(tmp_path):
    one = write(tmp_path / "one.csv", "text,label\nhello,pos\n")
    with pytest.raises(DataError, match=r"data.val_split: .*one.csv has 1 rows; holding out 1 for validation leaves none"):
        text_csv(str(one), val_split=0.1, seed=0)
    two = write(tmp_path / "two.csv", "text,label\nhello,pos\nbye,neg\n")
    with pytest.raises(DataError, match=r"has 1 rows besides the test split"):
        text_csv(str(two), test_split=0.5, val_split=0.1, seed=0)
    empty = write(tmp_path / "empty.csv", "text,label\n" + "".join(f"!!,{i % 2}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"data.dataset.text: no training text in column 'text' of .*empty.csv has a word"):
        text_csv(str(empty), val_split=0.1, seed=0)


@pytest.mark.skipif(not ROTTEN.exists(), reason="shared data not present")
def test_rotten_tomatoes_real_file():
    s = text_csv(str(ROTTEN), text="text", label="category", drop_labels=["plot"], test_split=0.1,
                 min_freq=2, max_len=40, val_split=0.1, seed=0)
    total = len(s.x_train) + len(s.x_val) + len(s.x_test)
    assert total == 7403 + 5405 and s.info.classes == ["fresh", "rotten"]
    assert s.x_train.shape[1] == 40 and s.x_train.dtype == torch.long
    assert (s.x_train[:, 0] != 0).float().mean() > 0.99  # texts start at position 0, padding at the end
    fresh = (torch.cat([s.y_train, s.y_val, s.y_test]) == 0).sum().item()
    assert fresh == 7403


# ---------------------------------------------------------------- time series


def test_timeseries_windows_are_chronological_without_leakage(tmp_path):
    n = 100
    f = write(tmp_path / "s.csv", "t,v\n" + "\n".join(f"{i},{i}" for i in range(n)) + "\n")
    s = timeseries_csv(str(f), columns="v", window=5, horizon=2, test_split=0.2, scale="none", val_split=0.1)
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
    s = timeseries_csv(str(f), columns="v", window=4, test_split=0.2, scale="minmax", val_split=0.2)
    # training rows are all 1.0: the scaler ignores the later 100s (span falls back to 1)
    assert s.info.target_shift == [1.0] and s.info.target_scale == [1.0]
    assert (s.x_train == 0).all() and (s.y_test == 99).all()


def test_build_data_keeps_the_chronological_val_split_whatever_the_seed(tmp_path):
    f = write(tmp_path / "s.csv", "v\n" + "\n".join(str(i) for i in range(60)) + "\n")
    spec = {"name": "timeseries_csv", "path": str(f), "columns": "v", "window": 3, "scale": "none"}
    a, b = build_data(data_cfg(spec, val_split=0.2), seed=0), build_data(data_cfg(spec, val_split=0.2), seed=7)
    assert torch.equal(a.val[1], b.val[1]) and a.val[1].min() >= a.train[1].max()


@pytest.mark.skipif(not SUNSPOTS.exists(), reason="shared data not present")
def test_sunspots_real_file():
    s = timeseries_csv(str(SUNSPOTS), columns="SUNACTIVITY", window=20, test_split=0.15, val_split=0.15)
    assert s.x_train.shape == (197, 20, 1) and s.y_train.shape == (197, 1)
    assert len(s.x_val) == 46 and len(s.x_test) == 46
    assert s.info.output_size == 1 and s.info.model_kwargs()["input_size"] == 1
    raw = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)[:, 1]
    assert s.info.target_shift[0] == pytest.approx(raw[:217].mean())
    first_test = s.y_test[0, 0] * s.info.target_scale[0] + s.info.target_shift[0]
    assert first_test.item() == pytest.approx(raw[263], abs=1e-3)  # 1963


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
    raw["data"]["dataset"] = {"name": "timeseries_csv", "path": "x", "columns": "v", "state": {}}
    with pytest.raises(ConfigError, match="unknown key 'state'"):  # runtime-only arguments
        validate(raw)
