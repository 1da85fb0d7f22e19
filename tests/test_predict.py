"""`nntrain predict`: new inputs prepared from the checkpoint alone, predictions equal to eval's."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import MNIST_FILES, SHARED_DATA, assert_clean_error

EMBEDDED = Path(__file__).resolve().parents[1] / "nntrain" / "data" / "embedded"


def train(folder: Path, name: str, dataset: dict[str, Any], model: dict[str, Any], normalize: dict | None = None,
          task: str | None = None, loss: str = "cross_entropy", **data: Any) -> Path:
    """Trains one epoch in-process (no report, no TensorBoard); returns the best checkpoint."""
    from nntrain.fit import fit
    from nntrain.validate import config_from_dict

    raw = {
        "name": name,
        "seed": 0,
        "data": {"dataset": dataset, "val_split": 0.2, "batch_size": 16, "normalize": normalize, "task": task, **data},
        "model": model,
        "loss": {"name": loss},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 1, "device": "cpu", "checkpoint": {"monitor": "val/loss"}},
        "log": {"dir": str(folder / "runs"), "tensorboard": False, "report": False},
    }
    summary = fit(config_from_dict(raw), progress=False)
    return Path(summary["run_dir"]) / "checkpoints" / "best.pt"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the embedded MNIST subset


@pytest.fixture(scope="module")
def mnist_small(tmp_path_factory) -> dict[str, Any]:
    """An MLP trained one epoch on mnist_small, the test split as an .npz, and a few PNG files."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("predict_mnist")
    ckpt = train(folder, "mlp", {"name": "mnist_small"}, {"name": "mlp", "hidden": [16]},
                 {"name": "standardize"}, batch_size=64, eval_batch_size=1000)
    with np.load(EMBEDDED / "mnist_small.npz") as npz:
        x_test, y_test = npz["x_test"], npz["y_test"]
    np.savez(folder / "test.npz", x=x_test, id=np.array([f"t{i}" for i in range(len(x_test))]))
    images = folder / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(x_test[i]).save(images / f"{i}.png")
    Image.fromarray(x_test[6]).convert("RGB").save(images / "6.bmp")  # converted back to grayscale
    return {"ckpt": ckpt, "folder": folder, "npz": folder / "test.npz", "images": images, "y": y_test}


def test_predicting_the_test_split_reproduces_eval_accuracy(mnist_small, cli, tmp_path):
    from nntrain.eval_checkpoint import evaluate_checkpoint

    out = tmp_path / "preds.csv"
    result = cli("predict", mnist_small["ckpt"], mnist_small["npz"], "--out", out)
    assert result.exit_code == 0, result.stderr
    rows = read_rows(out)
    assert len(rows) == 1000 and rows[0]["input"] == "t0"  # the npz's `id` array is carried through
    correct = sum(r["class"] == str(y) for r, y in zip(rows, mnist_small["y"]))
    metrics, _ = evaluate_checkpoint(mnist_small["ckpt"], "test", out=tmp_path / "eval.json")
    assert correct == round(metrics["test/acc"] * 1000)  # the same count of right answers: exactly eval's
    assert list(rows[0]) == ["input", "class", "probability"] + [
        f"{what}_{i}" for i in range(1, 6) for what in ("class", "probability")
    ]
    for r in rows[:20]:
        assert r["class"] == r["class_1"] and float(r["probability"]) == float(r["probability_1"])
        assert float(r["probability_1"]) >= float(r["probability_2"]) >= float(r["probability_5"])


def test_image_files_and_folders_predict_as_the_npz(mnist_small):
    from nntrain.predict import predict

    from_npz = predict(mnist_small["ckpt"], [mnist_small["npz"]], top_k=3)
    files = sorted(mnist_small["images"].iterdir())  # 0..5.png, 6.bmp
    from_files = predict(mnist_small["ckpt"], [mnist_small["images"] / "0.png", mnist_small["images"]], top_k=3)
    assert from_files.names[0].endswith("0.png") and len(from_files) == 1 + len(files)
    order = [0] + [int(f.stem) for f in files]  # the folder's images in sorted order
    assert from_files.predicted.tolist() == from_npz.predicted[order].tolist()
    torch.testing.assert_close(from_files.top_probabilities, from_npz.top_probabilities[order])


def test_jsonl_output_and_top_k(mnist_small, cli, tmp_path):
    out = tmp_path / "preds.jsonl"
    result = cli("predict", mnist_small["ckpt"], mnist_small["images"], "--out", out, "--top-k", 2, "--batch-size", 3)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7 and records[0]["input"].endswith("0.png")
    assert len(records[0]["top_k"]) == 2 and records[0]["top_k"][0]["class"] == records[0]["class"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_terminal_output_without_out(mnist_small, cli):
    result = cli("predict", mnist_small["ckpt"], mnist_small["images"] / "0.png")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()  # not a terminal: plain tab-separated lines
    assert lines[0].split("\t") == ["input", "class", "probability", "top 5"]
    assert lines[1].split("\t")[0].endswith("0.png") and len(lines) == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "bad.png").write_text("not an image") and d / "bad.png", "bad.png: cannot decode the image"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no images in this folder"),
        (lambda d: (d / "t.csv").write_text("a,b\n1,2\n") and d / "t.csv", "t.csv: a CSV; this model takes image"),
        (lambda d: d / "missing.png", "missing.png: not found"),
    ],
    ids=["not_an_image", "empty_folder", "csv_for_images", "missing"],
)
def test_bad_image_inputs_are_one_message_and_nothing_written(mnist_small, cli, tmp_path, make, message):
    good = mnist_small["images"] / "0.png"
    out = tmp_path / "preds.csv"
    out.write_text("old\n")
    stderr = assert_clean_error(cli("predict", mnist_small["ckpt"], good, make(tmp_path), "--out", out))
    assert message in stderr
    assert out.read_text() == "old\n"  # untouched: written only once every input is read


def test_out_in_a_missing_folder_fails_before_any_work(mnist_small, cli, tmp_path):
    out = tmp_path / "no" / "p.csv"
    stderr = assert_clean_error(cli("predict", mnist_small["ckpt"], mnist_small["npz"], "--out", out))
    assert "does not exist" in stderr


def test_a_missing_checkpoint_is_a_clean_error(cli, tmp_path):
    png = tmp_path / "a.png"
    assert "checkpoint not found" in assert_clean_error(cli("predict", tmp_path / "none.pt", png))


def test_nothing_reads_the_training_data(mnist_small, monkeypatch):
    """The checkpoint alone is enough: no data source is built."""
    from nntrain.data.sources import DATASETS
    from nntrain.predict import predict

    def refuse(*args, **kwargs):
        raise AssertionError("a data source was built")

    monkeypatch.setattr(DATASETS, "build", refuse)
    assert len(predict(mnist_small["ckpt"], [mnist_small["images"] / "1.png"])) == 1


# ---------------------------------------------------------------- tables, texts, series, sequences


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("predict_table")
    rng = np.random.default_rng(0)
    rows = [f"{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f},c{i % 3},{i}" for i in range(40)]
    data = folder / "train.csv"
    data.write_text("a,b,c,y,note\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ckpt = train(folder, "table", {"name": "csv", "path": str(data), "target": "y", "features": ["a", "b", "c"]},
                 {"name": "mlp", "hidden": [8]}, {"name": "minmax"})
    return {"ckpt": ckpt, "folder": folder}


def test_table_csv_carries_ids_ignores_the_target_and_matches_the_model(table_model, tmp_path):
    from nntrain.build import load_model
    from nntrain.predict import predict

    new = tmp_path / "new.csv"
    new.write_text("c,id,y,a,b\n0.3,first,c1,0.1,0.2\n-3,second,,1,2\n", encoding="utf-8")  # any column order
    preds = predict(table_model["ckpt"], [new], top_k=2)
    assert preds.names == ["first", "second"] and preds.classes == ["c0", "c1", "c2"]
    restored = load_model(table_model["ckpt"])
    with torch.no_grad():
        logits = restored.model(restored.normalizer(torch.tensor([[0.1, 0.2, 0.3], [1.0, 2.0, -3.0]])))
    assert preds.predicted.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(preds.probability, logits.softmax(1).amax(1))


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n1,2\n", "new.csv:1: no column 'c'"),
        ("a,b,c,zz\n1,2,3,4\n", "new.csv:1: unknown column 'zz'"),
        ("a,b,c\n1,2,3\n4,x5,6\n", "new.csv:3: column 'b' holds 'x5', not a number"),
        ("a,b,c\n", "new.csv: no data rows"),
    ],
    ids=["missing_column", "unknown_column", "not_a_number", "no_rows"],
)
def test_bad_table_csv(table_model, cli, tmp_path, text, message):
    new = tmp_path / "new.csv"
    new.write_text(text, encoding="utf-8")
    out = tmp_path / "p.csv"
    assert message in assert_clean_error(cli("predict", table_model["ckpt"], new, "--out", out))
    assert not out.exists()


def test_text_csv_predictions_equal_eval_on_the_test_file(tmp_path):
    from nntrain.eval_checkpoint import evaluate_checkpoint
    from nntrain.predict import predict

    good, bad = ["great", "fine", "superb", "lovely"], ["awful", "dull", "poor", "bland"]
    rows = [f"{good[i % 4]} film {good[(i + 1) % 4]},pos" for i in range(20)]
    rows += [f"{bad[i % 4]} film {bad[(i + 2) % 4]},neg" for i in range(20)]
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    train_csv.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    tests = ["great superb,pos", "dull poor film,neg", "lovely,pos", "an unseen word,neg",
             "great great great great great great great great,pos"]  # longer than any training text
    test_csv.write_text("label,text\n" + "\n".join(",".join(reversed(t.split(","))) for t in tests) + "\n")
    ckpt = train(tmp_path, "text", {"name": "text_csv", "path": str(train_csv), "test_path": str(test_csv)},
                 {"name": "gru", "embedding_dim": 8, "hidden_size": 8})
    preds = predict(ckpt, [test_csv])
    assert preds.names[0] == f"{test_csv}:2"
    labels = [t.split(",")[1] for t in tests]
    acc = sum(preds.classes[c] == y for c, y in zip(preds.predicted.tolist(), labels)) / len(labels)
    assert acc == pytest.approx(evaluate_checkpoint(ckpt, "test", out=tmp_path / "e.json")[0]["test/acc"], abs=1e-6)


def test_series_csv_forecasts_the_next_horizon_in_original_units(tmp_path):
    from nntrain.build import load_trained
    from nntrain.predict import predict

    series = tmp_path / "series.csv"
    values = [100 + 30 * np.sin(i / 5) for i in range(80)]
    series.write_text("t,v\n" + "\n".join(f"{i},{v:.3f}" for i, v in enumerate(values)) + "\n")
    ckpt = train(tmp_path, "series", {"name": "timeseries_csv", "path": str(series), "columns": "v", "window": 8,
                 "horizon": 2}, {"name": "gru", "hidden_size": 8}, loss="mse")
    trained = load_trained(ckpt)
    info, (x_test, _) = trained.parts.data.info, trained.parts.data.test
    first_target_row = info.source_state["rows"]["test"][0]  # the first test sample forecasts rows t, t + 1
    with torch.no_grad():
        expected = trained.model(x_test[:1]).double() * torch.tensor(info.target_scale, dtype=torch.float64) \
            + torch.tensor(info.target_shift, dtype=torch.float64)
    head = tmp_path / "head.csv"
    head.write_text("\n".join(series.read_text().splitlines()[: first_target_row + 1]) + "\n")  # rows before t
    preds = predict(ckpt, [head])
    assert preds.value_names == ["v+1", "v+2"] and preds.names == [str(head)]
    torch.testing.assert_close(preds.values, expected, rtol=0, atol=1e-3)
    short = tmp_path / "short.csv"
    short.write_text("t,v\n1,2\n2,3\n")
    with pytest.raises(Exception, match="short.csv: 2 rows; the model forecasts from the last 8 rows"):
        predict(ckpt, [short])


def test_sequences_longer_than_a_fixed_length_model_allows(tmp_path):
    from nntrain.errors import DataError
    from nntrain.predict import predict

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seq.npz", x=rng.standard_normal((40, 6, 3)).astype(np.float32), y=rng.integers(0, 2, 40))
    ckpt = train(tmp_path, "seqmlp", {"name": "npz", "path": str(tmp_path / "seq.npz")}, {"name": "mlp", "hidden": [4]})
    np.savez(tmp_path / "long.npz", x=rng.standard_normal((3, 8, 3)).astype(np.float32))
    with pytest.raises(DataError, match=r"long.npz:x: sample 0 has more than 6 time steps; this model takes at most 6"):
        predict(ckpt, [tmp_path / "long.npz"])
    np.savez(tmp_path / "short.npz", x=rng.standard_normal((3, 4, 3)).astype(np.float32))
    with pytest.raises(DataError, match="short.npz:x: sequences of 4 time steps; this model takes exactly 6"):
        predict(ckpt, [tmp_path / "short.npz"])
    assert len(predict(ckpt, [tmp_path / "seq.npz"])) == 40


# ---------------------------------------------------------------- real MNIST


@pytest.mark.slow
def test_real_mnist_predictions_equal_eval(mnist_root, tmp_path):
    """LeNet trained one epoch on real MNIST; the 10,000 test images from an npz give eval's accuracy."""
    import gzip

    from nntrain.eval_checkpoint import evaluate_checkpoint
    from nntrain.predict import predict

    ckpt = train(tmp_path, "mnist", {"name": "mnist", "root": str(mnist_root), "download": True},
                 {"name": "lenet"}, {"name": "standardize"}, batch_size=128, eval_batch_size=1000)

    def idx(name: str) -> np.ndarray:
        raw = gzip.open(SHARED_DATA / "mnist" / name).read()
        dims = raw[3]
        shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)

    np.savez(tmp_path / "t10k.npz", x=idx(MNIST_FILES[2]))
    preds = predict(ckpt, [tmp_path / "t10k.npz"])
    correct = int((preds.predicted.numpy() == idx(MNIST_FILES[3])).sum())
    metrics, _ = evaluate_checkpoint(ckpt, "test", out=tmp_path / "e.json")
    assert len(preds) == 10_000 and correct == round(metrics["test/acc"] * 10_000)
    print(f"real MNIST: predict {correct / 10_000:.4f}, eval test/acc {metrics['test/acc']:.4f}")
