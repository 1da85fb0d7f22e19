"""Autoencoders, the reconstruction task and transfer with `model.init_from`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nntrain.checkpoint import FORMAT, load_checkpoint
from nntrain.data.info import DataInfo
from nntrain.data.loaders import Data
from nntrain.errors import CheckpointError, ConfigError, DataError
from nntrain.evaluate import evaluate
from nntrain.models import build_model
from nntrain.optim import build_optimizer
from nntrain.validate import config_from_dict, validate

IMAGES = {"in_features": 784, "in_channels": 1, "image_size": 28}


@pytest.mark.parametrize("variant", ["mlp", "conv"])
@pytest.mark.parametrize("side", [28, 7])
def test_autoencoder_reconstructs_the_input_shape(variant, side):
    inferred = {"in_features": side * side * 2, "in_channels": 2, "image_size": side}
    model = build_model({"name": "autoencoder", "variant": variant, "latent_dim": 5, "hidden": [8, 4]}, inferred)
    x = torch.rand(3, 2, side, side)
    out = model(x)
    assert out.shape == x.shape
    assert model.encoder(x).shape == (3, 5) and model.decoder(model.encoder(x)).numel() == x.numel()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_decoder_mirrors_the_encoder():
    model = build_model({"name": "autoencoder", "hidden": [64, 16], "latent_dim": 4}, IMAGES)
    enc = [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)]
    dec = [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert enc == [64, 16, 4] and dec == [16, 64, 784]


def test_noise_only_in_training_mode():
    torch.manual_seed(0)
    model = build_model({"name": "autoencoder", "noise_std": 0.5, "latent_dim": 4}, IMAGES)
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    clean = model(x)
    model.train()
    noisy_a, noisy_b = model(x), model(x)
    assert not torch.allclose(noisy_a, noisy_b) and not torch.allclose(noisy_a, clean)
    model.noise_std = 0.0
    assert torch.allclose(model(x), clean)


def test_conv_variant_needs_images():
    with pytest.raises(ConfigError, match="'conv' needs square images"):
        build_model({"name": "autoencoder", "variant": "conv"}, {"in_features": 10})


def _recon_data(x: torch.Tensor) -> Data:
    return Data((x, x), (x, x), None, DataInfo("reconstruction", tuple(x.shape[1:])), None)


def test_reconstruction_mse_is_per_pixel_and_sigmoid_of_logits_with_bce():
    x = torch.rand(10, 1, 4, 4)
    cfg = SimpleNamespace(data=SimpleNamespace(eval_batch_size=3))
    zero = lambda t: torch.zeros_like(t)  # noqa: E731 - logits 0: sigmoid 0.5
    m = evaluate(zero, torch.nn.MSELoss(), _recon_data(x), "val", cfg, model=torch.nn.Identity())
    assert m["val/mse"] == pytest.approx((x ** 2).mean().item(), rel=1e-5)
    m = evaluate(zero, torch.nn.BCEWithLogitsLoss(), _recon_data(x), "val", cfg, model=torch.nn.Identity())
    assert m["val/mse"] == pytest.approx(((x - 0.5) ** 2).mean().item(), rel=1e-5)
    assert "val/acc" not in m and "val/rmse" not in m


def test_regression_metrics_in_original_units():
    x, y = torch.zeros(8, 2), torch.arange(8.0).view(8, 1)
    info = DataInfo("regression", (2,), output_size=1, target_shift=[100.0], target_scale=[10.0])
    data = Data((x, y), (x, y), None, info, None)
    cfg = SimpleNamespace(data=SimpleNamespace(eval_batch_size=5))
    m = evaluate(lambda t: torch.zeros(len(t), 1), torch.nn.MSELoss(), data, "val", cfg, model=torch.nn.Identity())
    # scaled errors 0..7 become 0..70 in original units
    assert m["val/loss"] == pytest.approx((y ** 2).mean().item())
    assert m["val/mse"] == pytest.approx(100 * (y ** 2).mean().item(), rel=1e-5)
    assert m["val/mae"] == pytest.approx(35.0, rel=1e-5) and m["val/rmse"] == pytest.approx(m["val/mse"] ** 0.5)


# ---------------------------------------------------------------- init_from


def _save_autoencoder(path: Path, **kw) -> torch.nn.Module:
    spec = {"name": "autoencoder", "variant": "conv", "hidden": [4, 8], "latent_dim": 6, **kw}
    ae = build_model(spec, IMAGES)
    torch.save({"format": FORMAT, "model": ae.state_dict()}, path)
    return ae


def _classifier(path: Path, **init_from) -> torch.nn.Module:
    spec = {"name": "encoder_classifier", "variant": "conv", "hidden": [4, 8], "latent_dim": 6,
            "head_hidden": [5], "dropout": 0.2, "init_from": {"checkpoint": str(path), **init_from}}
    return build_model(spec, {**IMAGES, "num_classes": 10})


def test_init_from_loads_the_encoder_and_freezes_it(tmp_path):
    torch.manual_seed(0)
    ae = _save_autoencoder(tmp_path / "ae.pt")
    model = _classifier(tmp_path / "ae.pt", component="encoder", freeze=True)
    for key, value in ae.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.encoder.training and model.head.training  # a frozen part stays in eval mode
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1}, model)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.encoder.parameters()}
    before = [p.clone() for p in model.encoder.parameters()]
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))


def test_init_from_without_freeze_trains_the_encoder(tmp_path):
    _save_autoencoder(tmp_path / "ae.pt")
    model = _classifier(tmp_path / "ae.pt", component="encoder")
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.encoder.training


def test_init_from_shape_mismatch_names_the_tensor(tmp_path):
    _save_autoencoder(tmp_path / "ae.pt", latent_dim=12)
    with pytest.raises(CheckpointError, match=r"encoder.*\(12, 392\) vs model \(6, 392\)"):
        _classifier(tmp_path / "ae.pt", component="encoder")


def test_init_from_unknown_component_and_missing_file(tmp_path):
    _save_autoencoder(tmp_path / "ae.pt")
    with pytest.raises(ConfigError, match="has no submodule 'encodr' \\(it has: encoder, head\\)"):
        _classifier(tmp_path / "ae.pt", component="encodr")
    with pytest.raises(CheckpointError, match="model.init_from.checkpoint: .*not found"):
        _classifier(tmp_path / "nope.pt", component="encoder")
    torch.save({"format": FORMAT, "model": {"body.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="has no 'head' \\(it has: body\\)"):
        _classifier(tmp_path / "other.pt", component="head")
    with pytest.raises(ConfigError, match="name the component to freeze"):
        _classifier(tmp_path / "ae.pt", freeze=True)


def test_init_from_is_validated_with_the_config():
    raw = {"name": "t", "data": {"dataset": {"name": "mnist_small"}},
           "model": {"name": "mlp", "init_from": {"checkpoint": "x.pt", "freez": True}}}
    with pytest.raises(ConfigError, match="model.init_from.freez: unknown key 'freez'; did you mean 'freeze'"):
        validate(raw)
    raw["model"]["init_from"] = {"component": "encoder"}
    with pytest.raises(ConfigError, match="model.init_from.checkpoint"):
        validate(raw)
    raw["model"]["init_from"] = {"checkpoint": "x.pt", "component": "encoder", "freeze": True}
    assert validate(raw).model.model_dump()["init_from"]["freeze"] is True


def test_bce_needs_targets_in_unit_range(tmp_path):
    from nntrain.build import build_parts

    raw = {"name": "t", "data": {"dataset": {"name": "mnist_small"}, "task": "reconstruction",
                                 "normalize": {"name": "standardize"}},
           "model": {"name": "autoencoder"}, "loss": {"name": "bce_with_logits"}}
    with pytest.raises(DataError, match="bce_with_logits needs targets in \\[0, 1\\]"):
        build_parts(config_from_dict(raw))
    raw["data"]["task"] = None
    raw["data"]["normalize"] = None
    raw["loss"] = {"name": "cross_entropy"}
    with pytest.raises(DataError, match="set data.task: reconstruction"):
        build_parts(config_from_dict(raw))


def test_pretrain_then_finetune_then_eval_without_the_pretrained_file(tmp_path):
    """mnist_small: autoencoder -> classifier on its frozen encoder -> `nntrain eval` of the classifier."""
    import shutil

    from nntrain.eval_checkpoint import evaluate_checkpoint
    from nntrain.fit import fit

    runs = tmp_path / "runs"
    common = {"log": {"dir": str(runs), "tensorboard": False}, "optimizer": {"name": "adam", "lr": 3e-3}}
    ae = {"name": "ae", "data": {"dataset": {"name": "mnist_small"}, "task": "reconstruction", "val_split": 0.5,
                                 "batch_size": 64},
          "model": {"name": "autoencoder", "latent_dim": 16, "hidden": [64]}, "loss": {"name": "bce_with_logits"},
          "train": {"epochs": 1, "checkpoint": {"monitor": "val/mse"}, "test_at_end": False}, **common}
    summary = fit(config_from_dict(ae), progress=False)
    assert 0 < summary["final"]["val/mse"] < 0.1  # per pixel, pixels in [0, 1]
    pretrained = load_checkpoint(Path(summary["run_dir"]) / "checkpoints" / "best.pt")["model"]
    clf = {"name": "clf", "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 128},
           "model": {"name": "encoder_classifier", "latent_dim": 16, "hidden": [64],
                     "init_from": {"checkpoint": str(runs / "ae"), "component": "encoder", "freeze": True}},
           "train": {"epochs": 1, "checkpoint": {"monitor": "val/acc"}}, **common}
    summary = fit(config_from_dict(clf), progress=False)
    assert summary["final"]["val/acc"] > 0.1
    best = Path(summary["run_dir"]) / "checkpoints" / "best.pt"
    tuned = load_checkpoint(best)["model"]
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(torch.equal(tuned[k], pretrained[k]) for k in encoder)  # loaded, then frozen
    shutil.rmtree(runs / "ae")  # the fine-tuned checkpoint holds every weight it needs
    metrics, _ = evaluate_checkpoint(best, "test")
    assert metrics["test/acc"] == pytest.approx(summary["test"]["test/acc"])


def test_reconstruction_runs_log_an_image_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nntrain.fit import fit

    raw = {"name": "ae", "data": {"dataset": {"name": "mnist_small"}, "task": "reconstruction",
                                  "val_split": 0.8, "batch_size": 128},
           "model": {"name": "autoencoder", "variant": "conv", "latent_dim": 8, "hidden": [4, 8]},
           "loss": {"name": "bce_with_logits"},
           "train": {"epochs": 2, "checkpoint": {"monitor": "val/mse"}, "test_at_end": False},
           "log": {"dir": str(tmp_path)}}
    summary = fit(config_from_dict(raw), progress=False)
    events = EventAccumulator(summary["run_dir"])
    events.Reload()
    grids = events.Images("val/reconstructions")
    assert [g.step for g in grids] == [10, 20]  # one per epoch: 1,200 images / 128 -> 10 updates
    assert grids[0].width == 16 * 30 + 2 and grids[0].height == 2 * 30 + 2  # 16 pairs, 2-pixel padding
