"""Recurrent models: padding invariance (packing), no host sync on fixed-length data, heads, inference from the data, regression runs end to end."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from nntrain.data.info import DataInfo
from nntrain.data.sources import DATASETS
from nntrain.errors import ConfigError
from nntrain.eval_checkpoint import evaluate_checkpoint
from nntrain.models import MODELS, build_model
from nntrain.validate import config_from_dict

LENGTHS = [5, 2, 7, 1]


def padded_real(gen: torch.Generator, features: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A batch of real-valued sequences padded with NaN rows (the documented layout) and each one alone."""
    seqs = [torch.randn(n, features, generator=gen) for n in LENGTHS]
    batch = torch.full((len(seqs), max(LENGTHS), features), float("nan"))
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    return batch, [s.unsqueeze(0) for s in seqs]


def padded_tokens(gen: torch.Generator, vocab: int = 20) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seqs = [torch.randint(1, vocab, (n,), generator=gen) for n in LENGTHS]
    batch = torch.zeros((len(seqs), max(LENGTHS)), dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    return batch, [s.unsqueeze(0) for s in seqs]


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("tokens", [False, True], ids=["real", "tokens"])
def test_padded_batch_gives_each_sequence_its_output_alone(name, pool, tokens):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if tokens:
        batch, alone = padded_tokens(gen)
        inferred = {"vocab_size": 20, "padding_idx": 0, "num_classes": 3}
    else:
        batch, alone = padded_real(gen)
        inferred = {"input_size": 3, "num_classes": 3}
    spec = {"name": name, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "pool": pool,
            "embedding_dim": 6, "dropout": 0.3}
    model = build_model(spec, inferred).eval()
    with torch.no_grad():
        out = model(batch)
        single = torch.cat([model(s) for s in alone])
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    assert torch.allclose(out, single, atol=1e-5)


def test_padding_would_change_the_result_without_packing():
    """The invariance above is not vacuous: zero rows read as data give other outputs."""
    torch.manual_seed(0)
    batch, alone = padded_real(torch.Generator().manual_seed(1))
    model = build_model({"name": "gru", "hidden_size": 8}, {"input_size": 3, "num_classes": 2}).eval()
    with torch.no_grad():
        packed = model(batch)
        zeros_as_data = model(batch.nan_to_num(0.0))
    full = torch.tensor(LENGTHS) == max(LENGTHS)
    assert torch.allclose(packed[full], zeros_as_data[full], atol=1e-6)
    assert not torch.allclose(packed[~full], zeros_as_data[~full], atol=1e-3)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_forward_backward_regression_head(name):
    model = build_model({"name": name, "input_proj": 5, "hidden_size": 4}, {"input_size": 2, "output_size": 3})
    x = torch.randn(6, 9, 2)
    out = model(x)
    assert out.shape == (6, 3) and model.input_proj.in_features == 2
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sizes_come_from_the_data_and_explicit_mismatches_fail():
    info = DataInfo("classification", (12,), 4, vocab_size=50)
    model = build_model({"name": "lstm", "embedding_dim": 7}, info.model_kwargs())
    assert model.embedding.num_embeddings == 50 and model.embedding.padding_idx == 0
    assert model.head.out_features == 4
    with pytest.raises(ConfigError, match="model.vocab_size: the config says 40 but the data has 50"):
        build_model({"name": "lstm", "vocab_size": 40}, info.model_kwargs())
    with pytest.raises(ConfigError, match="exactly one of num_classes"):
        build_model({"name": "gru", "num_classes": 2}, {"input_size": 2, "output_size": 1})
    with pytest.raises(ConfigError, match="needs sequences"):
        build_model({"name": "gru"}, {"in_features": 4, "num_classes": 2})


def test_rnn_registry_parameters_are_listed():
    params = MODELS.parameters("gru")
    for key in ("hidden_size", "num_layers", "bidirectional", "dropout", "embedding_dim", "pool", "input_size"):
        assert key in params


def cpu_spy() -> tuple[list[tuple[int, ...]], object]:
    """A stand-in for `torch.Tensor.cpu` (a host sync on CUDA) and the shapes it was called on."""
    calls, real = [], torch.Tensor.cpu

    def cpu(tensor, *args, **kwargs):
        calls.append(tuple(tensor.shape))
        return real(tensor, *args, **kwargs)

    return calls, cpu


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("tokens", [False, True], ids=["real", "tokens"])
def test_fixed_length_model_never_syncs_nor_packs_and_gives_the_same_output(name, pool, tokens):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if tokens:
        x = torch.randint(1, 20, (4, 7), generator=gen)  # no id is padding
        inferred = {"vocab_size": 20, "padding_idx": 0, "num_classes": 3}
    else:
        x = torch.randn(4, 7, 3, generator=gen)
        inferred = {"input_size": 3, "num_classes": 3}
    spec = {"name": name, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "pool": pool,
            "embedding_dim": 6, "input_proj": None if tokens else 5}
    padded = build_model(spec, {**inferred, "variable_length": True}).eval()
    fixed = build_model(spec, {**inferred, "variable_length": False}).eval()
    fixed.load_state_dict(padded.state_dict())
    calls, cpu = cpu_spy()
    with torch.no_grad(), mock.patch.object(torch.Tensor, "cpu", cpu):
        before = padded(x)
        assert calls == [(4,)]  # the spy sees the padding-aware model's per-batch sync of the lengths
        with mock.patch("nntrain.models.rnn.pack_padded_sequence", side_effect=AssertionError("packed")):
            after = fixed(x)
    assert calls == [(4,)]
    assert torch.allclose(after, before, atol=1e-6)


def test_text_data_still_packs_and_stays_padding_invariant(tmp_path):
    csv = tmp_path / "t.csv"
    rows = [f"{'good ' * (1 + i % 5)}film,pos" if i % 2 else f"bad {'dull ' * (i % 4)},neg" for i in range(20)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    info = DATASETS.build({"name": "text_csv", "path": str(csv)}).info
    torch.manual_seed(0)
    model = build_model({"name": "lstm", "hidden_size": 8, "embedding_dim": 6, "pool": "mean"},
                        info.model_kwargs()).eval()
    assert model.variable_length
    batch, alone = padded_tokens(torch.Generator().manual_seed(1), vocab=info.vocab_size)
    with torch.no_grad(), mock.patch("nntrain.models.rnn.pack_padded_sequence", wraps=pack_padded_sequence) as pack:
        out = model(batch)
        single = torch.cat([model(s) for s in alone])
    assert pack.call_count == 1  # the padded batch; sequences alone are never padded
    assert torch.allclose(out, single, atol=1e-5)


def test_variable_length_comes_from_the_data(tmp_path):
    """Token ids and NaN-padded sequences may vary in length; windows and unpadded arrays don't."""
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\n" + "\n".join(f"w{i % 3} x,{i % 2}" for i in range(10)) + "\n", encoding="utf-8")
    text = DATASETS.build({"name": "text_csv", "path": str(csv)}).info
    series = DATASETS.build({"name": "timeseries_csv", "path": str(_sine_csv(tmp_path / "s.csv")),
                             "columns": "value"}).info
    np.savez(tmp_path / "full.npz", x=np.ones((3, 4, 2), np.float32), y=np.array([0, 1, 0]))
    np.savez(tmp_path / "ragged.npz", x=np.ones((3, 4, 2), np.float32), y=np.array([0, 1, 0]), lengths=[4, 2, 1])
    full, ragged = (DATASETS.build({"name": "npz", "path": str(tmp_path / f)}).info for f in ("full.npz", "ragged.npz"))
    for info, variable in [(text, True), (series, False), (full, False), (ragged, True)]:
        assert info.model_kwargs()["variable_length"] is variable
        assert info.to_dict()["variable_length"] is variable
        assert build_model({"name": "gru"}, info.model_kwargs()).variable_length is variable
    # Data that doesn't say (images, a source of its own): the builder's safe default, packing.
    assert "variable_length" not in DataInfo("classification", (1, 28, 28), 10).model_kwargs()
    assert build_model({"name": "gru"}, {"input_size": 3, "num_classes": 2}).variable_length
    with pytest.raises(ConfigError, match="model.variable_length: the config says True but the data has False"):
        build_model({"name": "gru", "variable_length": True}, series.model_kwargs())


def _sine_csv(path: Path, n: int = 160) -> Path:
    import math

    rows = [f"{i},{10 + 5 * math.sin(i / 4):.5f}" for i in range(n)]
    path.write_text("t,value\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_forecasting_run_reports_original_units_and_eval_reproduces_it(tmp_path):
    from nntrain.fit import fit

    raw = {
        "name": "sine",
        "data": {
            "dataset": {"name": "timeseries_csv", "path": str(_sine_csv(tmp_path / "s.csv")),
                        "columns": "value", "window": 8, "test_split": 0.2},
            "val_split": 0.2,
            "batch_size": 32,
        },
        "model": {"name": "gru", "hidden_size": 8},
        "loss": {"name": "mse"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3, "checkpoint": {"monitor": "val/rmse"}},
        "log": {"dir": str(tmp_path / "runs"), "tensorboard": False},
    }
    summary = fit(config_from_dict(raw), progress=False)
    final, test = summary["final"], summary["test"]
    assert {"val/mse", "val/rmse", "val/mae", "val/loss"} <= set(final) and "val/acc" not in final
    # The series has std ~3.5: mse in original units is the scaled loss times the variance.
    ratio = final["val/mse"] / final["val/loss"]
    assert 6 < ratio < 20
    assert test["test/rmse"] == pytest.approx(test["test/mse"] ** 0.5)
    ckpt = Path(summary["run_dir"]) / "checkpoints" / "best.pt"
    metrics, out = evaluate_checkpoint(ckpt, "test")
    assert metrics["test/rmse"] == pytest.approx(test["test/rmse"], rel=1e-5)
    assert json.loads(out.read_text())["test/mae"] == pytest.approx(test["test/mae"], rel=1e-5)
    # Checkpoints from before `variable_length` was recorded evaluate the same.
    stored = torch.load(ckpt, weights_only=True)
    assert stored["data_info"].pop("variable_length") is False
    old = ckpt.with_name("old.pt")
    torch.save(stored, old)
    metrics, _ = evaluate_checkpoint(old, "test")
    assert metrics["test/rmse"] == pytest.approx(test["test/rmse"], rel=1e-5)


def test_monitoring_accuracy_on_regression_data_is_a_config_error(tmp_path):
    from nntrain.build import build_parts

    raw = {
        "name": "sine",
        "data": {"dataset": {"name": "timeseries_csv", "path": str(_sine_csv(tmp_path / "s.csv")),
                             "columns": "value"}},
        "model": {"name": "lstm"},
        "loss": {"name": "mse"},
        "train": {"checkpoint": {"monitor": "val/acc"}},
    }
    with pytest.raises(ConfigError, match="train.checkpoint.monitor: 'val/acc' is not measured on regression"):
        build_parts(config_from_dict(raw))
    raw["train"] = {}
    raw["loss"] = {"name": "cross_entropy"}
    with pytest.raises(ConfigError, match="loss.name: 'cross_entropy' needs class labels"):
        build_parts(config_from_dict(raw))


def test_text_checkpoint_keeps_its_vocabulary_for_eval(tmp_path):
    """`nntrain eval` tokenizes with the vocabulary stored in the checkpoint, not one rebuilt from the file."""
    from nntrain.checkpoint import load_checkpoint
    from nntrain.fit import fit

    good, bad = ["great", "fine", "superb", "lovely"], ["awful", "dull", "poor", "bland"]
    rows = [f"{good[i % 4]} film {good[(i + 1) % 4]},pos" for i in range(30)]
    rows += [f"{bad[i % 4]} film {bad[(i + 2) % 4]},neg" for i in range(30)]
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngreat superb,pos\ndull poor film,neg\nlovely,pos\n", encoding="utf-8")
    raw = {
        "name": "text",
        "data": {"dataset": {"name": "text_csv", "path": str(train), "test_path": str(test)},
                 "val_split": 0.2, "batch_size": 16},
        "model": {"name": "gru", "embedding_dim": 8, "hidden_size": 8, "pool": "mean"},
        "optimizer": {"name": "adam", "lr": 0.05},
        "train": {"epochs": 3, "checkpoint": {"monitor": "val/acc"}},
        "log": {"dir": str(tmp_path / "runs"), "tensorboard": False},
    }
    summary = fit(config_from_dict(raw), progress=False)
    best = Path(summary["run_dir"]) / "checkpoints" / "best.pt"
    assert load_checkpoint(best)["data_info"]["variable_length"] is True
    stored = load_checkpoint(best)["data_info"]["source_state"]
    assert stored["vocab"][:2] == ["<pad>", "<unk>"] and "superb" in stored["vocab"]
    # A training file with other words would give another vocabulary; eval must not use it.
    train.write_text("text,label\n" + "\n".join(f"zz{i} yy{i},{'pos' if i % 2 else 'neg'}" for i in range(60)) + "\n",
                     encoding="utf-8")
    metrics, _ = evaluate_checkpoint(best, "test")
    assert metrics["test/acc"] == pytest.approx(summary["test"]["test/acc"])
    assert metrics["test/loss"] == pytest.approx(summary["test"]["test/loss"], rel=1e-5)
