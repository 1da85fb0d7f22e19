"""`nntrain export`: every model family to ONNX and TorchScript, checked against PyTorch (< 1e-4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_clean_error
from test_predict import train

# name -> (dataset, model, normalize, task, loss); data files are made by `_data`.
FAMILIES: dict[str, tuple[dict, dict, Any, Any, str]] = {
    "mlp": ({"name": "npz", "path": "img.npz"}, {"name": "mlp", "hidden": [8]}, {"name": "standardize"}, None,
            "cross_entropy"),
    "lenet": ({"name": "npz", "path": "img.npz"}, {"name": "lenet", "batch_norm": True}, {"name": "standardize"}, None,
              "cross_entropy"),
    "autoencoder_conv": ({"name": "npz", "path": "img.npz"},
                         {"name": "autoencoder", "variant": "conv", "hidden": [4, 8], "latent_dim": 4}, None,
                         "reconstruction", "bce_with_logits"),
    "autoencoder_mlp": ({"name": "npz", "path": "img.npz"}, {"name": "autoencoder", "hidden": [16], "latent_dim": 4},
                        {"name": "whiten"}, "reconstruction", "mse"),
    "gru_fixed": ({"name": "npz", "path": "seq.npz"},
                  {"name": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True}, {"name": "standardize"},
                  None, "cross_entropy"),
    "lstm_forecast": ({"name": "timeseries_csv", "path": "series.csv", "columns": "v", "window": 8, "horizon": 2},
                      {"name": "lstm", "hidden_size": 8}, None, None, "mse"),
    "gru_text": ({"name": "text_csv", "path": "text.csv"},
                 {"name": "gru", "embedding_dim": 4, "hidden_size": 8, "num_layers": 2, "bidirectional": True,
                  "pool": "mean"}, None, None, "cross_entropy"),
    "lstm_text": ({"name": "text_csv", "path": "text.csv"},
                  {"name": "lstm", "embedding_dim": 4, "hidden_size": 8, "bidirectional": True}, None, None,
                  "cross_entropy"),
    "lstm_padded": ({"name": "npz", "path": "padded.npz"},
                    {"name": "lstm", "hidden_size": 8, "input_proj": 5, "pool": "max"}, {"name": "standardize"}, None,
                    "cross_entropy"),
}
VARIABLE = {"gru_text", "lstm_text", "lstm_padded"}


def _data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "img.npz", x=rng.integers(0, 256, (40, 1, 12, 12), dtype=np.uint8), y=rng.integers(0, 3, 40))
    seq = rng.standard_normal((40, 6, 3)).astype(np.float32)
    np.savez(folder / "seq.npz", x=seq, y=rng.integers(0, 2, 40))
    np.savez(folder / "padded.npz", x=seq, y=rng.integers(0, 2, 40), lengths=rng.integers(1, 7, 40))
    words = ["good", "bad", "fine", "awful", "film", "plot", "great"]
    texts = [" ".join(rng.choice(words, rng.integers(1, 8))) + f",{'pos' if i % 2 else 'neg'}" for i in range(50)]
    (folder / "text.csv").write_text("text,label\n" + "\n".join(texts) + "\n", encoding="utf-8")
    series = "\n".join(f"{i},{100 + 30 * np.sin(i / 5):.3f}" for i in range(80))
    (folder / "series.csv").write_text("t,v\n" + series + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trained(name)` -> the checkpoint of FAMILIES[name], trained once (one epoch, tiny data)."""
    folder = tmp_path_factory.mktemp("export")
    _data(folder)
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            dataset, model, normalize, task, loss = FAMILIES[name]
            dataset = {**dataset, "path": str(folder / dataset["path"])}
            done[name] = train(folder, name, dataset, model, normalize, task, loss)
        return done[name]

    return get


@pytest.mark.parametrize("with_preprocessing", [False, True], ids=["plain", "preprocessing"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_exports_to_onnx_and_torchscript(trained, tmp_path, name, with_preprocessing):
    from nntrain.export import export_checkpoint

    ckpt = trained(name)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        exported = export_checkpoint(ckpt, fmt, tmp_path / f"model{suffix}", with_preprocessing)
        assert exported.max_diff is not None and exported.max_diff < 1e-4, (fmt, exported.max_diff)
        assert exported.samples >= 8, exported.samples_from  # held-out samples, several batch sizes from the trace's 2
        names = [i["name"] for i in exported.meta["inputs"]]
        assert names == (["x", "lengths"] if name in VARIABLE else ["x"])
        assert exported.meta["inputs"][0]["shape"][0] == "batch"
        sidecar = json.loads(exported.sidecar.read_text())
        assert sidecar["format"] == fmt and sidecar["check"]["max_abs_diff"] == exported.max_diff
        assert sidecar["checkpoint"]["path"] == str(ckpt) and sidecar["preprocessing"]["in_graph"] == with_preprocessing
        print(f"{name} {fmt} preprocessing={with_preprocessing}: largest difference {exported.max_diff:.2e}")


def test_onnx_with_preprocessing_takes_raw_pixels_and_matches_predict(trained, tmp_path):
    """uint8 pixels straight from image files in, the same probabilities as `nntrain predict` out;
    any batch size runs."""
    import onnxruntime
    from PIL import Image

    from nntrain.export import export_checkpoint
    from nntrain.predict import predict

    ckpt = trained("lenet")
    exported = export_checkpoint(ckpt, "onnx", tmp_path / "m.onnx", with_preprocessing=True)
    assert exported.meta["inputs"][0] == {"name": "x", "shape": ["batch", 1, 12, 12], "dtype": "uint8"}
    assert exported.meta["classes"] == ["0", "1", "2"] and exported.meta["opset"] == 17
    rng = np.random.default_rng(1)
    files = []
    for i in range(5):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(files[-1])
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    pixels = np.stack([np.asarray(Image.open(f))[None] for f in files])
    logits = session.run(None, {"x": pixels})[0]
    preds = predict(ckpt, files, top_k=3)
    np.testing.assert_allclose(torch.tensor(logits).softmax(1).amax(1).numpy(), preds.probability.numpy(), atol=1e-5)
    assert session.run(None, {"x": pixels[:1]})[0].shape == (1, 3)  # a batch of one


def test_variable_length_export_takes_lengths(trained, tmp_path):
    """Padding after each sequence's length changes nothing; the PyTorch model packs, the export masks."""
    import onnxruntime

    from nntrain.build import load_model
    from nntrain.export import export_checkpoint

    ckpt = trained("lstm_text")
    exported = export_checkpoint(ckpt, "onnx", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    restored = load_model(ckpt, "cpu")
    x = torch.tensor([[3, 4, 5, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0], [6, 5, 4, 3, 2, 6, 5]])
    lengths = torch.tensor([3, 1, 7])
    with torch.no_grad():
        expected = restored.model(x)
    garbage = x.clone()
    garbage[0, 3:], garbage[1, 1:] = 4, 5  # whatever lies past the length is ignored
    for feed in (x, garbage):
        got = session.run(None, {"x": feed.numpy(), "lengths": lengths.numpy()})[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    longer = torch.cat([x, torch.zeros(3, 9, dtype=torch.long)], dim=1)  # 16 steps: the time axis is dynamic too
    got = session.run(None, {"x": longer.numpy(), "lengths": lengths.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_forecast_with_preprocessing_is_in_original_units(trained, tmp_path):
    from nntrain.export import export_checkpoint

    exported = export_checkpoint(trained("lstm_forecast"), "torchscript", tmp_path / "m.pt", with_preprocessing=True)
    steps = exported.meta["preprocessing"]["steps"]
    assert steps[0]["step"] == "scaler" and steps[0]["in_graph"] and steps[0]["columns"] == ["v"]
    assert "original units" in exported.meta["preprocessing"]["outputs"]
    model = torch.jit.load(str(exported.path))
    with torch.no_grad():
        out = model(torch.full((2, 8, 1), 100.0))
    assert out.shape == (2, 2) and 40 < float(out.mean()) < 160  # near the series' level, not scaled units


def test_cli_export_prints_the_difference_and_writes_a_sidecar(trained, cli, tmp_path):
    out = tmp_path / "model.onnx"
    result = cli("export", trained("mlp"), "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "largest absolute difference from PyTorch" in result.stdout and "limit 0.0001" in result.stdout
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert {"format", "opset", "inputs", "outputs", "classes", "preprocessing", "checkpoint"} <= set(meta)
    assert meta["outputs"] == [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}]
    default = cli("export", trained("mlp"), "--format", "torchscript", "--no-check")
    assert default.exit_code == 0, default.stderr
    assert "difference" not in default.stdout and trained("mlp").with_name("best.torchscript.pt").is_file()


def test_without_onnx_export_says_what_to_install(trained, cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    stderr = assert_clean_error(cli("export", trained("mlp"), "--format", "onnx", "--out", tmp_path / "m.onnx"))
    assert "pip install 'nntrain[export]'" in stderr
    assert not list(tmp_path.iterdir())


def test_a_failed_check_exits_1_and_names_the_difference(trained, cli, monkeypatch, tmp_path):
    import nntrain.export as export

    real = export._run_exported
    monkeypatch.setattr(export, "_run_exported", lambda *a: real(*a) + 1e-3)
    result = cli("export", trained("mlp"), "--format", "torchscript", "--out", tmp_path / "m.pt")
    stderr = assert_clean_error(result, code=1)
    assert "differs from PyTorch by up to 0.001" in stderr
    assert json.loads((tmp_path / "m.pt.json").read_text())["check"]["passed"] is False


@pytest.mark.parametrize(
    "args, message",
    [(["--format", "onnx", "--out", "{tmp}/no/m.onnx"], "does not exist"),
     (["--format", "onnx", "--out", "{tmp}"], "is a folder")],
    ids=["missing_folder", "out_is_a_folder"],
)
def test_bad_out(trained, cli, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert message in assert_clean_error(cli("export", trained("mlp"), *args))


@pytest.mark.slow
def test_real_mnist_lenet_exports(mnist_root, tmp_path):
    from nntrain.export import export_checkpoint

    ckpt = train(tmp_path, "mnist", {"name": "mnist", "root": str(mnist_root), "download": True},
                 {"name": "lenet"}, {"name": "standardize"}, batch_size=128, eval_batch_size=1000)
    for fmt in ("onnx", "torchscript"):
        exported = export_checkpoint(ckpt, fmt, tmp_path / f"m.{fmt}", with_preprocessing=True, samples=1000)
        assert exported.samples == 1000 and "test split of 'mnist'" in exported.samples_from
        assert exported.max_diff < 1e-4, exported.max_diff
        print(f"real MNIST LeNet {fmt}: largest difference {exported.max_diff:.2e} on {exported.samples_from}")
