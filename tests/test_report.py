"""`nntrain report` and the report `fit` writes: the HTML parsed (every image decodes, no external
URL, the tables present), report.json, the figures per task, TensorBoard's confusion matrix."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, base_config

from nntrain.fit import fit
from nntrain.validate import config_from_dict


class _Page(HTMLParser):
    """What the checks need from a page: images, links, scripts, tables, section titles."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.scripts = 0
        self.tables = 0
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Any]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self.tables += 1
        if tag == "h2":
            self._in_h2 = True
        for key in ("src", "href", "action", "data", "poster"):
            if values.get(key):
                self.urls.append(values[key])

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data.strip())


def check_page(path: Path) -> _Page:
    """Parses report.html: every <img> is a PNG data URI that PIL opens, no URL leaves the page
    (no http(s)://, no file or relative link but #anchors), no script; returns the parsed page."""
    from PIL import Image

    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert page.images, "no image in the report"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        assert image.format == "PNG" and image.width > 50 and image.height > 50
    for url in page.urls:
        assert url.startswith(("data:", "#")), url[:80]
    assert "http://" not in text and "https://" not in text
    assert page.scripts == 0
    return page


def _config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    raw = base_config(tmp_path)
    raw["train"] = {**raw["train"], "threads": 2}
    raw.update(sections)
    return raw


@pytest.fixture(scope="module")
def classification(tmp_path_factory) -> dict[str, Any]:
    """One epoch of a small MLP on the embedded MNIST subset, with TensorBoard and the report."""
    tmp = tmp_path_factory.mktemp("cls")
    raw = _config(tmp, model={"name": "mlp", "hidden": [32]})
    raw["data"] = {**raw["data"], "batch_size": 256}
    summary = fit(config_from_dict(raw), progress=False)
    return {"summary": summary, "dir": Path(summary["run_dir"])}


def test_fit_writes_the_report_into_the_run_folder(classification):
    run, summary = classification["dir"], classification["summary"]
    folder = run / "report"
    assert summary["report"] == str(folder / "report.html")
    page = check_page(folder / "report.html")
    for title in ("Metrics", "Per class", "Confusion matrix", "Calibration", "Most confidently wrong",
                  "Training", "Config", "Provenance"):
        assert title in page.headings
    # metrics, per class, confusion counts (10 classes), wrong samples, per-epoch log, provenance
    assert page.tables >= 6
    record = json.loads((folder / "report.json").read_text())
    assert record["split"] == "test" and record["task"] == "classification"
    # The report measures what the end-of-run test measured (the best checkpoint, same batches).
    assert record["test/acc"] == summary["test"]["test/acc"]
    assert record["test/loss"] == pytest.approx(summary["test"]["test/loss"])
    assert list(record["per_class"]) == [str(i) for i in range(10)]
    assert record["confusion_matrix"]["labels"] == [str(i) for i in range(10)]
    assert sum(map(sum, record["confusion_matrix"]["counts"])) == 1000
    for name in ("confusion_matrix", "f1_per_class", "reliability", "wrong", "training_curves"):
        assert record["figures"][name] == f"{name}.png" and (folder / f"{name}.png").stat().st_size > 1000
    wrong = record["wrong"]
    assert 0 < len(wrong) <= 16
    assert [w["probability"] for w in wrong] == sorted((w["probability"] for w in wrong), reverse=True)
    assert all(w["true"] != w["predicted"] and w["probability"] >= w["true_probability"] for w in wrong)
    assert record["provenance"]["torch"] == torch.__version__
    assert record["config"]["model"]["name"] == "mlp"
    assert record["metrics_jsonl"] == str(run / "metrics.jsonl")


def test_tensorboard_shows_the_confusion_matrix_each_validation(classification):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(classification["dir"]), size_guidance={"images": 0})
    events.Reload()
    assert "val/confusion_matrix" in events.Tags()["images"]
    (image,) = events.Images("val/confusion_matrix")  # one epoch, one validation
    assert image.width > 100 and image.height > 100
    (text,) = events.Tensors("val/confusion_matrix/text_summary")  # the counts, by class name
    table = text.tensor_proto.string_val[0].decode()
    assert table.startswith("| true \\ predicted | 0 | 1 |") and len(table.splitlines()) == 2 + 10


def test_confusion_heatmap_paints_each_cells_share():
    """Rows true, columns predicted, each row's share from white (0) to dark blue (1)."""
    from nntrain import figures

    image = figures.confusion_heatmap([[3, 1], [0, 0]], size=80)  # 40-pixel cells and a grid
    assert image.shape == (81, 81, 3) and image.dtype == np.uint8
    assert image[20, 20].tolist() == [68, 99, 144]  # 3/4 of the way from (247, 251, 255) to (8, 48, 107)
    assert image[20, 60].tolist() == [187, 200, 218]  # 1/4
    assert image[60, 20].tolist() == image[60, 60].tolist() == [247, 251, 255]  # a class never seen: white
    assert image[0, 10].tolist() == image[40, 10].tolist() == image[10, 80].tolist() == [190, 190, 190]  # the grid


def test_confusion_heatmap_of_many_classes_stays_small():
    """Beyond `size` classes each pixel averages a square of cells: 1,000 classes, 250 pixels."""
    from nntrain import figures

    image = figures.confusion_heatmap(np.eye(1000, dtype=np.int64) * 7, size=320)
    assert image.shape == (250, 250, 3)
    assert image[100, 100].tolist() == [187, 200, 218]  # 4 of the 16 cells averaged: a share of 1/4
    assert image[100, 200].tolist() == [247, 251, 255]


def test_report_command_on_another_split(classification, cli, tmp_path):
    best = classification["dir"] / "checkpoints" / "best.pt"
    out = tmp_path / "val-report"
    result = cli("report", best, "--split", "val", "--out", out, "--wrong", "4")
    assert result.exit_code == 0, result.stderr
    assert "test/acc" not in result.stdout and "val/acc" in result.stdout
    assert str(out / "report.html") in result.stdout.replace("\n", "")
    check_page(out / "report.html")
    record = json.loads((out / "report.json").read_text())
    assert record["split"] == "val" and len(record["wrong"]) == 4
    monitored = classification["summary"]["best"]  # best.pt is the epoch of the best monitored value
    assert record[monitored["monitor"]] == pytest.approx(monitored["value"], rel=1e-6)
    # The default folder sits beside the checkpoint.
    assert cli("report", best, "--wrong", "0").exit_code == 0
    assert (best.parent / "best.test.report" / "report.html").is_file()


def test_eval_json_holds_everything(classification, cli, tmp_path):
    out = tmp_path / "eval.json"
    result = cli("eval", classification["dir"] / "checkpoints" / "best.pt", "--out", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads(out.read_text())
    for key in ("test/acc", "test/top5", "test/precision_macro", "test/recall_macro", "test/f1_macro",
                "test/precision_weighted", "test/recall_weighted", "test/f1_weighted", "test/auroc", "test/ece"):
        assert 0 <= record[key] <= 1, key
    assert set(record["per_class"]["7"]) == {"precision", "recall", "f1", "support", "auroc"}
    matrix = record["confusion_matrix"]
    assert len(matrix["counts"]) == len(matrix["normalized"]) == 10
    assert all(abs(sum(row) - 1) < 1e-9 for row in matrix["normalized"])
    assert len(record["calibration"]["bins"]) == 15
    # Printed: the metrics, the per-class table and the confusion matrix (10 classes).
    assert "per class" in result.stdout and "confusion matrix" in result.stdout


def test_report_errors_are_clean(classification, cli, tmp_path):
    assert "nope.pt" in assert_clean_error(cli("report", tmp_path / "nope.pt"))
    best = classification["dir"] / "checkpoints" / "best.pt"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    stderr = assert_clean_error(cli("report", best, "--out", blocker / "sub"), code=1)
    assert "is a file" in stderr


def test_regression_report_and_the_off_switch(tmp_path, cli):
    """A GRU on the embedded sunspots; `log.report: false` writes none, `nntrain report` does."""
    raw = _config(
        tmp_path,
        data={"dataset": {"name": "sunspots", "window": 10}, "val_split": 0.15, "batch_size": 32},
        model={"name": "gru", "hidden_size": 8, "pool": "last"},
        loss={"name": "mse"},
        train={"epochs": 2, "device": "cpu", "threads": 2, "checkpoint": {"monitor": "val/rmse"}},
        log={"dir": str(tmp_path / "runs"), "report": False, "tensorboard": False},
    )
    summary = fit(config_from_dict(raw), progress=False)
    run = Path(summary["run_dir"])
    assert not (run / "report").exists() and "report" not in summary
    result = cli("report", run / "checkpoints" / "best.pt", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    page = check_page(tmp_path / "r" / "report.html")
    assert "Predictions" in page.headings and "Confusion matrix" not in page.headings
    record = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(record["figures"]) == {"predicted_vs_true", "residuals", "training_curves"}
    assert record["test/rmse"] == pytest.approx(summary["test"]["test/rmse"])
    assert {"test/mae", "test/r2"} <= set(record)
    # In sunspot numbers, not in scaled units: the largest errors are tens of sunspots.
    assert max(abs(e["true"]) for e in record["largest_errors"]) > 10


def test_reconstruction_report(tmp_path):
    """An autoencoder on small made-up images (an npz without labels), 12x12 blobs."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(12), np.arange(12), indexing="ij"))
    for name, n in (("train", 400), ("test", 80)):
        centres = rng.uniform(3, 9, (n, 2, 1, 1))
        blobs = np.exp(-((grid[None] - centres) ** 2).sum(1) / 6)
        blobs /= blobs.max(axis=(1, 2), keepdims=True)  # pixels span 0 to 255: PSNR's peak is 1
        np.savez(tmp_path / f"{name}.npz", x=(255 * blobs).astype(np.uint8))
    raw = _config(
        tmp_path,
        data={"dataset": {"name": "npz", "path": str(tmp_path / "train.npz"), "y_key": None,
                          "test_path": str(tmp_path / "test.npz")},
              "task": "reconstruction", "val_split": 0.1, "batch_size": 32},
        model={"name": "autoencoder", "variant": "mlp", "hidden": [32], "latent_dim": 4},
        loss={"name": "bce_with_logits"},
        train={"epochs": 2, "device": "cpu", "threads": 2, "checkpoint": {"monitor": "val/mse"}},
        log={"dir": str(tmp_path / "runs"), "tensorboard": False},
    )
    summary = fit(config_from_dict(raw), progress=False)
    folder = Path(summary["run_dir"]) / "report"
    page = check_page(folder / "report.html")
    assert "Reconstructions" in page.headings
    record = json.loads((folder / "report.json").read_text())
    assert set(record["figures"]) == {"reconstructions", "training_curves"}
    assert record["test/mse"] == pytest.approx(summary["test"]["test/mse"])
    assert record["test/psnr"] == pytest.approx(10 * np.log10(1 / record["test/mse"]), rel=1e-3)  # pixels in [0, 1]


# ------------------------------------------------------------------ pieces


def test_images_are_denormalized_with_the_stored_statistics():
    from nntrain.data.transforms import MinMax, Standardize, Whiten
    from nntrain.report.samples import denormalize, display_images

    x = torch.rand(200, 1, 3, 3)
    for normalizer in (Standardize(), MinMax(), Whiten()):
        normalizer.fit(x)
        torch.testing.assert_close(denormalize(normalizer, normalizer(x)), x, atol=2e-3, rtol=0)
    (tile,) = display_images(torch.full((1, 3, 2, 2), 255.0))
    assert tile.shape == (2, 2, 3) and np.allclose(tile, 1.0)


def test_texts_are_shown_as_words_of_the_stored_vocabulary():
    from nntrain.data.info import DataInfo
    from nntrain.report.samples import describe_inputs

    info = DataInfo("classification", (5,), 2, ["neg", "pos"], vocab_size=4,
                    source_state={"vocab": ["<pad>", "<unk>", "good", "film"], "max_len": 5, "classes": ["neg", "pos"]})
    shown = describe_inputs(info, torch.tensor([[2, 3, 1, 0, 0]]), None)
    assert shown == {"kind": "text", "texts": ["good film <unk>"]}


def test_sequence_gallery_drops_padding_rows():
    from nntrain import figures
    from nntrain.data.info import DataInfo
    from nntrain.report.samples import describe_inputs

    x = torch.randn(2, 5, 2)
    x[1, 3:] = float("nan")
    shown = describe_inputs(DataInfo("classification", (5, 2), 2), x, None)
    assert [s.shape for s in shown["series"]] == [(5, 2), (3, 2)]
    png = figures.png(figures.series([[("", s)] for s in shown["series"]], ["a", "b"]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_on_real_mnist(tmp_path, mnist_root):
    """One epoch of an MLP on the full MNIST of ../shared/data; the report of its 10,000 test images."""
    raw = _config(
        tmp_path,
        data={"dataset": {"name": "mnist", "root": str(mnist_root), "download": True}, "val_split": 0.1,
              "batch_size": 128, "normalize": {"name": "standardize"}},
        model={"name": "mlp", "hidden": [128]},
    )
    summary = fit(config_from_dict(raw), progress=False)
    folder = Path(summary["run_dir"]) / "report"
    page = check_page(folder / "report.html")
    assert page.tables >= 6
    record = json.loads((folder / "report.json").read_text())
    assert sum(c["support"] for c in record["per_class"].values()) == 10_000
    assert record["test/acc"] == summary["test"]["test/acc"] > 0.9 and record["test/top5"] > 0.99
    assert len(record["wrong"]) == 16
