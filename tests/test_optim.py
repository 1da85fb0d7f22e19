"""Every optimizer steps, every scheduler builds and steps; parameter groups skip biases and norms."""

import math

import pytest
import torch
from torch import nn

from nntrain.optim import OPTIMIZERS, build_optimizer
from nntrain.schedules import SCHEDULERS, build_schedule

# Arguments for schedulers that have required ones; a new scheduler with required arguments
# fails test_scheduler_builds_and_steps until it gets an example here.
SCHEDULER_EXAMPLES: dict[str, dict] = {
    "onecycle": {"max_lr": 0.1},
    "cyclic": {"base_lr": 0.001, "max_lr": 0.1},
    "multistep": {"milestones": [1, 2]},
    "reduce_on_plateau": {"monitor": "val/loss"},
}
STEPS_PER_EPOCH, EPOCHS = 5, 3


def _model(norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    # The norm follows the activation: a bias right before batch norm gets no gradient.
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8) if norm else nn.Identity(), nn.Linear(8, 2))


def _backward(model: nn.Module) -> None:
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 2
    nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_steps(name):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer({"name": name, "lr": 0.01}, model)
    _backward(model)
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(changed), f"optimizer '{name}' left some parameters unchanged: {changed}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = optimizer.state_dict()
    again = build_optimizer({"name": name, "lr": 0.01}, _model())
    again.load_state_dict(state)  # round trip, as resume does


def test_weight_decay_skips_biases_and_norm_parameters():
    model = _model(norm=True)
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1, "weight_decay": 0.01}, model)
    decay, rest = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(rest["params"]) == 4  # two biases, the norm's weight and bias

    everything = build_optimizer({"name": "sgd", "lr": 0.1, "weight_decay": 0.01}, model, include_bias_and_norm=True)
    assert len(everything.param_groups) == 1
    assert len(everything.param_groups[0]["params"]) == len(list(model.parameters()))


def test_optimizer_kwargs_reach_torch():
    optimizer = build_optimizer({"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, _model())
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.05, 0.9, True)


def _run_schedule(name: str, kwargs: dict) -> tuple[list[float], object]:
    model = _model()
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9}, model)
    schedule = build_schedule({"name": name, **kwargs}, optimizer, STEPS_PER_EPOCH, EPOCHS)
    lrs = []
    for _ in range(EPOCHS):
        for _ in range(STEPS_PER_EPOCH):
            _backward(model)
            optimizer.step()
            optimizer.zero_grad()
            schedule.after_update()
            lrs.append(optimizer.param_groups[0]["lr"])
        schedule.after_epoch({"train/loss": 1.0, "val/loss": 1.0, "val/acc": 0.5})
    return lrs, schedule


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_scheduler_builds_and_steps(name):
    params = SCHEDULERS.parameters(name)
    kwargs = SCHEDULER_EXAMPLES.get(name, {})
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    assert not missing, f"add example arguments {missing} for scheduler '{name}' to SCHEDULER_EXAMPLES"
    lrs, schedule = _run_schedule(name, kwargs)
    assert len(lrs) == STEPS_PER_EPOCH * EPOCHS
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    state = schedule.state_dict()
    _, fresh = _run_schedule(name, kwargs)
    fresh.load_state_dict(state)  # round trip, as resume does


def test_exponential_schedule_decays_per_epoch():
    lrs, _ = _run_schedule("exponential", {"gamma": 0.5})
    per_epoch = [lrs[e * STEPS_PER_EPOCH] for e in range(EPOCHS)]
    assert per_epoch == pytest.approx([0.1, 0.05, 0.025])
    assert lrs[: STEPS_PER_EPOCH] == pytest.approx([0.1] * STEPS_PER_EPOCH)  # constant inside an epoch


def test_step_schedule_drops_every_step_size_epochs():
    lrs, _ = _run_schedule("step", {"step_size": 2, "gamma": 0.1})
    assert lrs[STEPS_PER_EPOCH] == pytest.approx(0.1)
    assert lrs[2 * STEPS_PER_EPOCH] == pytest.approx(0.01)


def test_no_scheduler_section_means_no_schedule():
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1}, _model())
    assert build_schedule(None, optimizer, STEPS_PER_EPOCH, EPOCHS) is None
