"""Averaged weights (issue 15): `train.ema` and `train.swa` against hand-computed averages on a
2-parameter model, their LR, their place in checkpoints and what eval reads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import base_config
from torch import nn

from nntrain.averaging import Averaging
from nntrain.build import load_trained
from nntrain.callbacks import Callback
from nntrain.checkpoint import load_checkpoint
from nntrain.data.loaders import TensorLoader
from nntrain.errors import ConfigError
from nntrain.fit import fit
from nntrain.trainer import Trainer, TrainSettings
from nntrain.validate import config_from_dict


class Record(Callback):
    """The trained (raw) weights after every update and at every epoch end, and the LR of each update."""

    def __init__(self):
        self.updates: list[torch.Tensor] = []
        self.epochs: list[torch.Tensor] = []
        self.lrs: list[float] = []

    def on_update(self, trainer):
        self.updates.append(_flat(trainer.model))
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, trainer, metrics):
        self.epochs.append(_flat(trainer.model))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _trainer(epochs: int, ema=None, swa=None, schedule=None) -> tuple[Trainer, Record]:
    """y = 3x - 1 fitted by nn.Linear(1, 1) (2 parameters) with plain SGD, 16 samples in batches of 4."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 16, dtype=torch.float64).unsqueeze(1)
    y = 3 * x - 1
    model = nn.Linear(1, 1).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = schedule(optimizer) if schedule else None
    record = Record()
    trainer = Trainer(
        model, nn.MSELoss(), optimizer, schedule, TensorLoader(x, y, 4, shuffle=True), lambda split: {"val/loss": 0.0},
        TrainSettings(epochs=epochs, every_n_steps=1000), torch.device("cpu"), callbacks=[record],
        averaging=Averaging(model, ema=ema, swa=swa),
    )
    return trainer, record


def test_ema_is_the_hand_computed_exponential_average():
    decay, every = 0.8, 2
    trainer, record = _trainer(3, ema=SimpleNamespace(decay=decay, every_n_steps=every))
    trainer.fit()
    assert trainer.step == 12
    expected = None
    for step, w in enumerate(record.updates, start=1):
        if step % every == 0:  # the first average copies the weights, then avg = decay avg + (1 - decay) w
            expected = w.clone() if expected is None else decay * expected + (1 - decay) * w
    assert trainer.averaging.count == 6 and int(trainer.averaging.averaged.n_averaged) == 6
    torch.testing.assert_close(_flat(trainer.eval_model), expected, rtol=0, atol=1e-12)
    assert not torch.equal(_flat(trainer.eval_model), _flat(trainer.model))  # the raw weights are apart


def test_swa_is_the_mean_of_the_epoch_end_weights_and_its_lr_takes_over():
    from nntrain.schedules import build_schedule

    def schedule(optimizer):
        return build_schedule({"name": "exponential", "gamma": 0.5}, optimizer, 4, 5)

    swa = SimpleNamespace(start_epoch=3, lr=0.02, anneal_epochs=0, anneal_strategy="cos")
    trainer, record = _trainer(5, swa=swa, schedule=schedule)
    assert trainer.eval_model is trainer.model  # nothing averaged yet
    trainer.fit()
    # Epochs 3, 4, 5 (1-based) are averaged: the plain mean of the weights at their ends.
    expected = torch.stack(record.epochs[2:]).mean(0)
    assert trainer.averaging.count == 3
    torch.testing.assert_close(_flat(trainer.eval_model), expected, rtol=0, atol=1e-12)
    # The config's schedule halves the LR per epoch for epochs 1-2; from epoch 3 SWALR holds 0.02.
    per_epoch = [record.lrs[i * 4] for i in range(5)]
    assert per_epoch == pytest.approx([0.1, 0.05, 0.02, 0.02, 0.02])


def test_swa_anneals_with_torchs_swalr():
    swa = SimpleNamespace(start_epoch=2, lr=0.01, anneal_epochs=2, anneal_strategy="linear")
    trainer, record = _trainer(4, swa=swa)
    trainer.fit()
    per_epoch = [record.lrs[i * 4] for i in range(4)]
    # SWALR: the epoch it starts keeps the LR, then linear steps to the SWA LR over 2 epochs.
    assert per_epoch == pytest.approx([0.1, 0.1, 0.055, 0.01])


class _BN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(2, 2), nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.lin(x))


def test_update_bn_gives_the_averaged_model_statistics_of_its_own():
    torch.manual_seed(0)
    model = _BN()
    x = torch.randn(64, 2) * 3 + 1
    swa = SimpleNamespace(start_epoch=1, lr=0.01, anneal_epochs=0, anneal_strategy="cos")
    averaging = Averaging(model, swa=swa, bn_batches=lambda: iter(x.split(16)))
    averaging.update()
    with torch.no_grad():
        model.lin.weight.add_(1.0)  # the trained model moves on
    averaging.update()
    averaging.update_bn()
    avg = averaging.module
    with torch.no_grad():
        h = avg.lin(x)
    # Cumulative mean over the 4 batches of the batch means (momentum None), as torch's update_bn does.
    means = torch.stack([b.mean(0) for b in h.split(16)]).mean(0)
    torch.testing.assert_close(avg.bn.running_mean, means, rtol=1e-5, atol=1e-6)


def test_ema_averages_buffers_as_torch_does():
    torch.manual_seed(0)
    model = _BN()
    averaging = Averaging(model, ema=SimpleNamespace(decay=0.5, every_n_steps=1))
    averaging.update()
    model.bn.running_mean.fill_(2.0)
    averaging.update()
    torch.testing.assert_close(averaging.module.bn.running_mean, torch.full((2,), 1.0))  # 0.5 * 0 + 0.5 * 2
    # torch's AveragedModel.update_parameters gives the same.
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    ref_model = _BN()
    ref = AveragedModel(ref_model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ref.update_parameters(ref_model)
    ref_model.bn.running_mean.fill_(2.0)
    ref.update_parameters(ref_model)
    for a, b in zip(ref.module.state_dict().values(), averaging.module.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- through fit and eval


def _config(tmp_path: Path, **train):
    raw = base_config(tmp_path)
    raw["data"].update(val_split=0.9, batch_size=100)  # 600 training images: 6 updates per epoch
    raw["model"] = {"name": "mlp", "hidden": [16], "batch_norm": True}
    raw["train"].update(epochs=2, **train)
    raw["log"].update(tensorboard=False)
    return config_from_dict(raw)


@pytest.mark.parametrize(
    "averaging",
    [{"ema": {"decay": 0.9}}, {"swa": {"start_epoch": 2, "lr": 1.0e-3}}],
    ids=["ema", "swa"],
)
def test_checkpoints_hold_the_average_as_model_and_eval_reads_it(tmp_path, averaging):
    summary = fit(_config(tmp_path, **averaging), progress=False)
    folder = Path(summary["run_dir"]) / "checkpoints"
    last = load_checkpoint(folder / "last.pt")
    assert set(last) >= {"model", "raw_model", "averaging"}
    assert last["averaging"]["n_averaged"] == (12 if "ema" in averaging else 1)
    assert any(not torch.equal(last["model"][k], last["raw_model"][k]) for k in last["model"])
    if "swa" in averaging:  # BN statistics recomputed for the averaged weights, not the raw ones
        assert not torch.equal(last["model"]["bn1.running_mean"], last["raw_model"]["bn1.running_mean"])
    # eval (and predict / export, which read `model` alike) gets the averaged weights.
    trained = load_trained(folder / "last.pt")
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, last["model"][key]), key
    # The validation recorded for the last epoch is the averaged model's.
    from nntrain.evaluate import evaluate

    parts = trained.parts
    val = evaluate(parts.model, parts.loss_fn, parts.data, "val", parts.cfg)
    assert val["val/loss"] == pytest.approx(last["metrics"]["val/loss"], rel=1e-5)


def test_ema_and_swa_together_are_refused(tmp_path):
    from nntrain.build import build_parts

    cfg = _config(tmp_path, ema={"decay": 0.9}, swa={"start_epoch": 1, "lr": 0.01})
    with pytest.raises(ConfigError, match="train.swa: give train.ema or train.swa, not both"):
        build_parts(cfg)
    with pytest.raises(ConfigError, match=r"train.swa.start_epoch: SWA would start after the last epoch \(2\)"):
        build_parts(_config(tmp_path, swa={"start_epoch": 3, "lr": 0.01}))
