"""LR schedules: each one's LR per optimizer update against a closed form, warmup, plateau, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from nntrain.errors import ConfigError, RunError
from nntrain.schedules import SCHEDULERS, build_schedule, preview_schedule
from nntrain.validate import validate

BASE = 0.1


def _optimizer(name: str = "sgd", lr: float = BASE, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


def _run(schedule, optimizer, spe: int, epochs: int, metrics=None, start_epoch: int = 0):
    """LR (and momentum) each update uses, stepping the schedule as the trainer does."""
    lrs, moms = [], []
    for epoch in range(start_epoch, epochs):
        for _ in range(spe):
            group = optimizer.param_groups[0]
            lrs.append(group["lr"])
            moms.append(group["betas"][0] if "betas" in group else group.get("momentum"))
            schedule.after_update()
        value = 1.0 if metrics is None else metrics[epoch]
        schedule.after_epoch({"train/loss": value, "val/loss": value, "val/acc": 1 - value, "lr": lrs[-1]})
    return lrs, moms


def _lrs(spec: dict, spe: int = 5, epochs: int = 6, metrics=None, opt: str = "sgd") -> list[float]:
    optimizer = _optimizer(opt)
    return _run(build_schedule(spec, optimizer, spe, epochs), optimizer, spe, epochs, metrics)[0]


def _warm(u: int, w: int, f: float = 0.1) -> float:
    return f + (1 - f) * u / w


# ---------------------------------------------------------------- closed forms, no warmup


def test_step():
    spe, epochs = 4, 7
    got = _lrs({"name": "step", "step_size": 2, "gamma": 0.5}, spe, epochs)
    assert got == pytest.approx([BASE * 0.5 ** ((u // spe) // 2) for u in range(spe * epochs)], rel=1e-12)


def test_multistep():
    spe, epochs = 3, 8
    got = _lrs({"name": "multistep", "milestones": [2, 5], "gamma": 0.1}, spe, epochs)
    expected = [BASE * 0.1 ** ((u // spe >= 2) + (u // spe >= 5)) for u in range(spe * epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_exponential():
    spe, epochs = 3, 5
    got = _lrs({"name": "exponential", "gamma": 0.7}, spe, epochs)
    assert got == pytest.approx([BASE * 0.7 ** (u // spe) for u in range(spe * epochs)], rel=1e-12)


def test_cosine_decays_over_the_whole_run():
    spe, epochs, floor = 5, 4, 1e-3
    total = spe * epochs
    got = _lrs({"name": "cosine", "min_lr": floor}, spe, epochs)
    expected = [floor + (BASE - floor) * (1 + math.cos(math.pi * u / total)) / 2 for u in range(total)]
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs, floor", [({"min_lr": 0.01}, 0.01), ({"end_factor": 0.2}, 0.02), ({}, 0.0)])
def test_linear(kwargs, floor):
    spe, epochs = 5, 4
    total = spe * epochs
    got = _lrs({"name": "linear", **kwargs}, spe, epochs)
    assert got == pytest.approx([BASE + (floor - BASE) * u / total for u in range(total)], rel=1e-12, abs=1e-15)


def _onecycle_closed_form(u, total, peak, pct=0.3, div=25.0, final_div=1e4):
    """torch's OneCycleLR (two phases, cos): phase one ends at update pct*total - 1."""
    start, end = peak / div, peak / div / final_div
    cos = lambda a, b, p: b + (a - b) * (1 + math.cos(math.pi * p)) / 2  # noqa: E731
    e1 = pct * total - 1
    if u <= e1:
        return cos(start, peak, u / e1), cos(0.95, 0.85, u / e1)
    p = (u - e1) / (total - 1 - e1)
    return cos(peak, end, p), cos(0.85, 0.95, p)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_onecycle_matches_closed_form_and_torch(opt):
    spe, epochs, peak = 7, 3, 0.5
    total = spe * epochs
    optimizer = _optimizer(opt)
    schedule = build_schedule({"name": "onecycle", "max_lr": peak}, optimizer, spe, epochs)
    lrs, moms = _run(schedule, optimizer, spe, epochs)
    expected = [_onecycle_closed_form(u, total, peak) for u in range(total)]
    assert lrs == pytest.approx([e[0] for e in expected], rel=1e-12)
    assert moms == pytest.approx([e[1] for e in expected], rel=1e-12)  # SGD momentum / Adam beta1 cycle

    reference_opt = _optimizer(opt)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=peak, total_steps=total)
    torch_lrs = []
    for _ in range(total):
        torch_lrs.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    assert lrs == pytest.approx(torch_lrs, rel=1e-12)


def test_onecycle_defaults_to_the_optimizer_lr_and_linear_anneal():
    spe, epochs = 10, 1
    got = _lrs({"name": "onecycle", "anneal_strategy": "linear", "pct_start": 0.5}, spe, epochs)
    start, end = BASE / 25, BASE / 25 / 1e4
    e1 = 0.5 * 10 - 1
    expected = [start + (BASE - start) * u / e1 if u <= e1 else BASE + (end - BASE) * (u - e1) / (9 - e1) for u in range(10)]
    assert got == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- warmup


def test_linear_warmup_then_cosine_over_the_remaining_updates():
    spe, epochs, w = 5, 4, 6
    total = spe * epochs
    got = _lrs({"name": "cosine", "warmup_steps": w}, spe, epochs)
    expected = [
        BASE * _warm(u, w) if u < w else BASE * (1 + math.cos(math.pi * (u - w) / (total - w))) / 2
        for u in range(total)
    ]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[w] == pytest.approx(BASE)  # the schedule takes over from the base LR


def test_constant_warmup_with_start_factor():
    spe, epochs, w = 4, 3, 3
    got = _lrs({"name": "linear", "end_factor": 0.5, "warmup_steps": w, "warmup_mode": "constant",
                "warmup_start_factor": 0.25}, spe, epochs)
    span = spe * epochs - w
    expected = [BASE * 0.25 if u < w else BASE + (0.5 * BASE - BASE) * (u - w) / span for u in range(spe * epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_warmup_epochs_before_an_epoch_schedule():
    # Two warmup epochs, then exponential decay that starts from the base LR (not base * gamma**2).
    spe, epochs = 4, 6
    got = _lrs({"name": "exponential", "gamma": 0.5, "warmup_epochs": 2, "warmup_start_factor": 0.0}, spe, epochs)
    w = 2 * spe
    expected = [BASE * u / w if u < w else BASE * 0.5 ** (u // spe - 2) for u in range(spe * epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_fractional_warmup_epochs_round_to_updates_and_count_partial_epochs():
    # 1.5 epochs of 4 updates = 6 updates; epoch 1 ends after warmup, so it counts for step decay.
    spe, epochs = 4, 4
    got = _lrs({"name": "step", "step_size": 1, "gamma": 0.5, "warmup_epochs": 1.5}, spe, epochs)
    expected = [BASE * _warm(u, 6) if u < 6 else BASE * 0.5 ** max(0, u // spe - 1) for u in range(spe * epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_onecycle_after_warmup_starts_at_its_initial_lr():
    spe, epochs, w, peak = 6, 2, 4, 0.4
    got = _lrs({"name": "onecycle", "max_lr": peak, "warmup_steps": w}, spe, epochs)
    span = spe * epochs - w
    expected = [
        peak / 25 * _warm(u, w) if u < w else _onecycle_closed_form(u - w, span, peak)[0]
        for u in range(spe * epochs)
    ]
    assert got == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- plateau and newbob


def test_plateau_matches_torch_reduce_lr_on_plateau():
    metrics = [1.0, 0.9, 0.9, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7]
    spec = {"name": "reduce_on_plateau", "factor": 0.5, "patience": 1, "cooldown": 1, "min_lr": 0.03}
    got = _lrs(spec, spe=1, epochs=len(metrics), metrics=metrics)
    reference_opt = _optimizer()
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        reference_opt, factor=0.5, patience=1, cooldown=1, min_lr=0.03
    )
    expected = []
    for value in metrics:
        expected.append(reference_opt.param_groups[0]["lr"])
        reference.step(value)
    assert got == pytest.approx(expected, rel=1e-12)
    # By hand: best 0.9 at epoch 1; epochs 2, 3 bad -> x0.5 after epoch 3, then one cooldown epoch (4,
    # where 0.8 is the new best); epochs 5, 6 bad -> x0.5 = 0.025, clamped to min_lr 0.03 after epoch 6;
    # epoch 7 is cooldown, 8 bad, 9 improves, 10 bad, 11 bad -> the reduction after the last epoch.
    assert got == pytest.approx([0.1] * 4 + [0.05] * 3 + [0.03] * 5, rel=1e-12)


def test_plateau_monitoring_accuracy_uses_max_mode():
    acc = [0.5, 0.6, 0.6, 0.6, 0.7]  # val/acc = 1 - value in _run
    got = _lrs({"name": "reduce_on_plateau", "monitor": "val/acc", "patience": 1}, 1, 5, [1 - a for a in acc])
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01], rel=1e-12)


def test_warmup_then_plateau():
    # 3 updates per epoch, warmup 4 updates: epoch 0 is all warmup (its metric is ignored), epoch 1 ends
    # after warmup and is the first counted. The LR reaches the base LR at update 4 and stays there
    # until the plateau rule fires: patience 1, so two bad epochs after the best.
    spe, epochs, w = 3, 7, 4
    metrics = [0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # epoch 0's 0.1 would be the best, were it counted
    spec = {"name": "reduce_on_plateau", "patience": 1, "factor": 0.5, "warmup_steps": w}
    got = _lrs(spec, spe, epochs, metrics)
    # epoch 1: best=1.0; epochs 2, 3 bad -> halve after epoch 3; epochs 4, 5 bad -> halve after epoch 5.
    per_epoch = [None, 1, 1, 1, 0.5, 0.5, 0.25]
    expected = [BASE * _warm(u, w) if u < w else BASE * per_epoch[u // spe] for u in range(spe * epochs)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_newbob_halves_whenever_val_loss_does_not_improve():
    metrics = [1.0, 0.8, 0.85, 0.7, 0.7, 0.6, 0.65]
    got = _lrs({"name": "newbob"}, spe=2, epochs=len(metrics), metrics=metrics)
    per_epoch = [1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    assert got == pytest.approx([BASE * per_epoch[u // 2] for u in range(2 * len(metrics))], rel=1e-12)


def test_plateau_monitor_missing_from_the_metrics_is_a_clear_error():
    optimizer = _optimizer()
    schedule = build_schedule({"name": "reduce_on_plateau", "monitor": "val/acc"}, optimizer, 2, 3)
    schedule.after_update()
    with pytest.raises(RunError, match="val/acc.*not recorded"):
        schedule.after_epoch({"train/loss": 1.0, "val/loss": 1.0})


# ---------------------------------------------------------------- resume


RESUME_SPECS = {
    "step": {"step_size": 2, "gamma": 0.5, "warmup_steps": 3},
    "multistep": {"milestones": [1, 3], "warmup_epochs": 1},
    "exponential": {"gamma": 0.8, "warmup_steps": 5, "warmup_mode": "constant"},
    "cosine": {"min_lr": 1e-4, "warmup_epochs": 0.5},
    "linear": {"end_factor": 0.1, "warmup_steps": 2},
    "onecycle": {"max_lr": 0.3},
    "reduce_on_plateau": {"patience": 0, "factor": 0.5, "warmup_steps": 4, "cooldown": 1},
    "newbob": {"warmup_steps": 2},
}


def test_every_scheduler_has_a_resume_case():
    assert sorted(RESUME_SPECS) == SCHEDULERS.names()


@pytest.mark.parametrize("name", sorted(RESUME_SPECS))
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_resume_continues_with_identical_lrs(name, opt):
    spec, spe, epochs, cut = {"name": name, **RESUME_SPECS[name]}, 4, 6, 3
    metrics = [1.0, 0.9, 0.95, 0.95, 0.8, 0.9]
    optimizer = _optimizer(opt, groups=2)
    uninterrupted = build_schedule(spec, optimizer, spe, epochs)
    whole = _run(uninterrupted, optimizer, spe, epochs, metrics)

    first_opt = _optimizer(opt, groups=2)
    first = build_schedule(spec, first_opt, spe, epochs)
    head = _run(first, first_opt, spe, cut, metrics)
    buffer = io.BytesIO()
    torch.save({"optimizer": first_opt.state_dict(), "scheduler": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what a checkpoint allows

    resumed_opt = _optimizer(opt, groups=2)
    resumed = build_schedule(spec, resumed_opt, spe, epochs)
    resumed_opt.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    tail = _run(resumed, resumed_opt, spe, epochs, metrics, start_epoch=cut)
    assert head[0] + tail[0] == whole[0]  # exact, not approximate
    assert head[1] + tail[1] == whole[1]
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert len(set(whole[0])) > 1  # the schedule did change the LR within the run


# ---------------------------------------------------------------- accumulation and the trainer


def test_accumulation_counts_updates_not_batches(tmp_path):
    from nntrain.build import build_parts, build_trainer

    raw = {
        "name": "acc",
        "data": {"dataset": {"name": "mnist_small"}, "batch_size": 512, "val_split": 0.1},
        "model": {"name": "mlp", "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": BASE},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "train": {"epochs": 2, "accumulate": 3, "device": "cpu"},
        "log": {"dir": str(tmp_path)},
    }
    parts = build_parts(validate(raw))
    batches = math.ceil(5400 / 512)  # 11 batches -> 4 updates per epoch (3 + 3 + 3 + 2 batches)
    assert parts.updates_per_epoch == math.ceil(batches / 3) == 4
    seen = []

    class Record:
        def __getattr__(self, hook):
            return lambda trainer, *args: None

        def on_batch_end(self, trainer):
            seen.append((trainer.step, trainer.optimizer.param_groups[0]["lr"]))

    trainer = build_trainer(parts, [Record()])
    trainer.fit()
    assert trainer.step == parts.schedule.updates == 8
    total, w = 8, 2
    expected = [BASE * _warm(u, w) if u < w else BASE * (1 + math.cos(math.pi * (u - w) / (total - w))) / 2
                for u in range(total + 1)]
    # The LR after each batch is the one set for the next update: it changes only on update batches.
    assert [lr for _, lr in seen] == pytest.approx([expected[s] for s, _ in seen], rel=1e-12)
    assert seen[-1] == (8, pytest.approx(0.0, abs=1e-15))  # the cosine reached 0 at the end of the run


# ---------------------------------------------------------------- config errors and preview


def _raw(scheduler: dict) -> dict:
    return {"name": "x", "data": {"dataset": {"name": "mnist_small"}}, "model": {"name": "mlp"},
            "scheduler": scheduler}


@pytest.mark.parametrize(
    "scheduler, message",
    [
        ({"name": "cosine", "warmup_steps": 10, "warmup_epochs": 1}, "warmup_steps or warmup_epochs, not both"),
        ({"name": "linear", "min_lr": 0.0, "end_factor": 0.1}, "min_lr or end_factor, not both"),
        ({"name": "reduce_on_plateau", "monitor": "val/los"}, "did you mean 'val/loss'"),
        ({"name": "cosine", "warmup_mode": "cos"}, "scheduler.warmup_mode"),
        ({"name": "multistep", "milestones": [4, 2]}, "milestones must be increasing"),
        ({"name": "multistep"}, "scheduler.milestones: missing"),
        ({"name": "newbob", "patience": 2}, "unknown key 'patience'"),
        ({"name": "onecycle", "pct_start": 1.5}, "scheduler.pct_start"),
        ({"name": "cosin"}, "did you mean 'cosine'"),
    ],
)
def test_bad_scheduler_configs(scheduler, message):
    with pytest.raises(ConfigError, match=message):
        validate(_raw(scheduler))


def test_warmup_longer_than_the_run_is_a_config_error():
    with pytest.raises(ConfigError, match="longer than the run"):
        build_schedule({"name": "cosine", "warmup_epochs": 3}, _optimizer(), 10, 2)


def test_preview_simulates_every_update_with_a_flat_metric_for_plateau():
    rows, warmup = preview_schedule({"name": "newbob", "warmup_steps": 2}, {"name": "sgd", "lr": 0.1}, 3, 4)
    assert warmup == 2
    assert [r[0] for r in rows] == list(range(12)) and [r[1] for r in rows] == [u // 3 for u in range(12)]
    # epoch 0 sets the best; epochs 1 and 2 do not improve -> halved after each.
    expected = [0.1 * _warm(u, 2) if u < 2 else 0.1 * [1, 1, 0.5, 0.25][u // 3] for u in range(12)]
    assert [r[2] for r in rows] == pytest.approx(expected, rel=1e-12)
    constant, _ = preview_schedule(None, {"name": "adam", "lr": 0.01}, 2, 2)
    assert [r[2] for r in constant] == [0.01] * 4
