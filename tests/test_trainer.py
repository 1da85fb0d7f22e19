"""The loop's arithmetic: gradient accumulation over k batches of b equals one batch of k*b."""

import pytest
import torch
from helpers import base_config

from nntrain.data.info import DataInfo
from nntrain.data.loaders import TensorLoader
from nntrain.losses import build_loss
from nntrain.models import build_model
from nntrain.optim import build_optimizer
from nntrain.trainer import Trainer, TrainSettings
from nntrain.validate import config_from_dict

INFO = DataInfo("classification", (20,), 3)

# float64 throughout: accumulated and big-batch gradients differ only in summation order, so they
# agree to ~1e-16 relative; after two SGD+momentum updates of parameters of size ~0.1-1 an absolute
# 1e-12 leaves four orders of margin, while a missing or wrong loss weight moves them by >1e-4.
ATOL = 1e-12


def _samples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 20, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _trainer(tmp_path, x, y, batch_size: int, accumulate: int) -> Trainer:
    raw = base_config(tmp_path)
    raw["data"].update(batch_size=batch_size, shuffle=False, normalize=None)
    # An MLP without batch norm or dropout: each sample's gradient is independent of its batch.
    raw["model"] = {"name": "mlp", "hidden": [16], "activation": "tanh"}
    raw["optimizer"] = {"name": "sgd", "lr": 0.5, "momentum": 0.9}
    raw["train"].update(accumulate=accumulate)
    raw["log"]["every_n_steps"] = 1000
    cfg = config_from_dict(raw)
    torch.manual_seed(0)  # the same initial weights for every trainer
    model = build_model(cfg.model.model_dump(), INFO.model_kwargs()).double()
    optimizer = build_optimizer(cfg.optimizer.model_dump(), model)
    loss_fn = build_loss(cfg.loss.model_dump(), INFO)
    loader = TensorLoader(x, y, batch_size, shuffle=False)
    settings = TrainSettings(epochs=1, accumulate=accumulate, every_n_steps=1000)
    evaluate = lambda split: {}  # noqa: E731 - these tests train only
    return Trainer(model, loss_fn, optimizer, None, loader, evaluate, settings, torch.device("cpu"))


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "n, batch, k",
    [
        (24, 4, 3),  # 6 batches of 4 -> 2 updates, like 2 batches of 12
        (18, 4, 3),  # batches 4,4,4 | 4,2: the short last group is weighted by its own size, like 12 | 6
        (20, 5, 2),
    ],
)
def test_accumulation_equals_the_big_batch(tmp_path, n, batch, k):
    x, y = _samples(n)
    small = _trainer(tmp_path, x, y, batch, accumulate=k)
    big = _trainer(tmp_path, x, y, batch * k, accumulate=1)
    start = _params(small)
    _assert_same(start, _params(big))
    small.train_epoch()
    big.train_epoch()
    assert small.step == big.step == -(-n // (batch * k))
    moved = max((p - q).abs().max().item() for p, q in zip(_params(small), start))
    assert moved > 1e-3  # the updates are real, so agreement below is not trivial
    _assert_same(_params(small), _params(big))


def test_update_weights_make_summed_gradients_the_group_mean(tmp_path):
    x, y = _samples(12)
    acc = _trainer(tmp_path, x, y, 4, accumulate=3)
    one = _trainer(tmp_path, x, y, 12, accumulate=1)
    acc.update([(x[4 * i : 4 * (i + 1)], y[4 * i : 4 * (i + 1)]) for i in range(3)])
    assert acc.step == 1
    one.update([(x, y)])
    _assert_same(_params(acc), _params(one))

    # Without the weights the update would be k times too large: the comparison can tell.
    wrong = _trainer(tmp_path, x, y, 4, accumulate=1)
    for i in range(3):
        wrong._forward_backward(x[4 * i : 4 * (i + 1)], y[4 * i : 4 * (i + 1)], weight=1.0)
    wrong._step(log_now=False)
    assert max((p - q).abs().max().item() for p, q in zip(_params(wrong), _params(one))) > 1e-4


def test_a_short_group_is_weighted_by_its_own_samples(tmp_path):
    """Batches of 4 and 2 in one update: weights 4/6 and 2/6, like one batch of 6."""
    x, y = _samples(6)
    acc = _trainer(tmp_path, x, y, 4, accumulate=2)
    one = _trainer(tmp_path, x, y, 6, accumulate=1)
    acc.update([(x[:4], y[:4]), (x[4:], y[4:])])
    one.update([(x, y)])
    assert acc.step == one.step == 1
    assert all(p.grad is None for p in acc.model.parameters())  # zeroed after the update
    _assert_same(_params(acc), _params(one))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run_on_cpu(tmp_path, precision):
    """The autocast / GradScaler code paths run on CPU too; fp16's scaler state goes in the checkpoint."""
    from nntrain.checkpoint import load_checkpoint
    from nntrain.fit import fit
    from nntrain.validate import config_from_dict

    cfg = config_from_dict({
        "name": "amp",
        "data": {"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 100,
                 "normalize": {"name": "standardize"}},
        "model": {"name": "lenet"},
        "optimizer": {"name": "adam", "lr": 0.005},
        "train": {"epochs": 1, "precision": precision, "grad_clip": {"norm": 1.0}, "test_at_end": False},
        "log": {"dir": str(tmp_path), "tensorboard": False, "every_n_steps": 3},
    })
    summary = fit(cfg, progress=False)
    assert summary["final"]["val/acc"] > 0.5
    state = load_checkpoint(f"{summary['run_dir']}/checkpoints/last.pt")
    assert bool(state["scaler"]) == (precision == "fp16")  # an enabled scaler has a scale to save
