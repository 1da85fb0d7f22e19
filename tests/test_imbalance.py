"""Imbalanced classes (issue 15): class weights (`weight: auto`, lists, mappings by class), the
seeded class subsample `data.class_fraction` and the balanced sampler `data.sampler: balanced`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import base_config

from nntrain.build import load_trained
from nntrain.checkpoint import load_checkpoint
from nntrain.data.info import DataInfo
from nntrain.data.loaders import TensorLoader, build_data
from nntrain.errors import ConfigError
from nntrain.evaluate import evaluate
from nntrain.fit import fit
from nntrain.losses import build_loss, class_weights
from nntrain.validate import config_from_dict

INFO = DataInfo("classification", (4,), 3, ["cat", "dog", "eel"])
# 10 samples: 6 cats, 3 dogs, 1 eel.
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])


def test_auto_weight_is_inverse_class_frequency():
    got = class_weights({"name": "cross_entropy", "weight": "auto"}, INFO, LABELS)["weight"]
    # n / (k * n_c) = 10 / (3 * [6, 3, 1])
    assert got == pytest.approx([10 / 18, 10 / 9, 10 / 3])


def test_auto_pos_weight_is_negatives_over_positives():
    got = class_weights({"name": "bce_with_logits", "pos_weight": "auto"}, INFO, LABELS)["pos_weight"]
    assert got == pytest.approx([4 / 6, 7 / 3, 9 / 1])


def test_explicit_list_and_mapping_by_name_or_index():
    assert class_weights({"weight": [1, 2, 3]}, INFO)["weight"] == [1.0, 2.0, 3.0]
    assert class_weights({"weight": {"eel": 5}}, INFO)["weight"] == [1.0, 1.0, 5.0]
    assert class_weights({"weight": {"1": 4}}, INFO)["weight"] == [1.0, 4.0, 1.0]  # an index


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"weight": [1, 2]}, r"loss.weight: gives 2 values for 3 classes"),
        ({"weight": {"eal": 2}}, r"loss.weight.eal: unknown class 'eal'; did you mean 'eel'\?"),
        ({"weight": [0, 0, 0]}, "every class has weight 0"),
    ],
)
def test_bad_class_weights_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        class_weights(spec, INFO, LABELS)


def test_auto_with_a_class_that_has_no_samples_is_refused():
    with pytest.raises(ConfigError, match="class 'eel' has none"):
        class_weights({"weight": "auto"}, INFO, torch.tensor([0, 1, 1]))


def test_auto_needs_classes():
    with pytest.raises(ConfigError, match="need class labels, but this is regression data"):
        class_weights({"weight": "auto"}, DataInfo("regression", (4,)), None)


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_weighted_loss_is_torchs_weighted_cross_entropy(name):
    torch.manual_seed(0)
    out, target = torch.randn(10, 3), LABELS
    loss_fn = build_loss({"name": name, "weight": "auto"}, INFO, LABELS)
    expected = F.cross_entropy(out, target, weight=torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    torch.testing.assert_close(loss_fn(out, target), expected)
    assert loss_fn.class_weights["weight"] == pytest.approx([10 / 18, 10 / 9, 10 / 3])


def test_stored_weights_win_over_auto():
    """A checkpoint's resolved weights: `nntrain eval` weighs classes as training did."""
    loss_fn = build_loss({"name": "cross_entropy", "weight": "auto"}, INFO, LABELS, stored={"weight": [1, 2, 3]})
    assert loss_fn.class_weights == {"weight": [1.0, 2.0, 3.0]}


def test_config_validation_takes_auto_and_rejects_bad_values(tmp_path):
    raw = base_config(tmp_path)
    raw["loss"] = {"name": "cross_entropy", "weight": "auto"}
    assert config_from_dict(raw).loss.model_dump()["weight"] == "auto"
    raw["loss"] = {"name": "cross_entropy", "weight": [1, -2]}
    with pytest.raises(ConfigError, match="loss.weight: every weight must be a number >= 0"):
        config_from_dict(raw)
    raw["loss"] = {"name": "bce_with_logits", "pos_weight": "auto"}
    config_from_dict(raw)


# ---------------------------------------------------------------- class_fraction


def _data(tmp_path, seed=0, **data):
    raw = base_config(tmp_path)
    raw["data"].update(data)
    raw["seed"] = seed
    cfg = config_from_dict(raw)
    return build_data(cfg.data, cfg.seed)


def test_class_fraction_cuts_the_training_split_only(tmp_path):
    plain = _data(tmp_path)
    cut = _data(tmp_path, class_fraction={"3": 0.05})
    before, after = plain.train[1].bincount(), cut.train[1].bincount()
    assert after[3] == round(0.05 * before[3].item())
    others = [c for c in range(10) if c != 3]
    assert torch.equal(after[others], before[others])
    assert torch.equal(cut.val[1], plain.val[1]) and torch.equal(cut.test[1], plain.test[1])
    # Seeded: the same samples again; another seed draws others.
    again = _data(tmp_path, class_fraction={"3": 0.05})
    assert torch.equal(again.train[0], cut.train[0])
    other = _data(tmp_path, seed=1, class_fraction={"3": 0.05})
    assert not torch.equal(other.train[0][other.train[1] == 3], cut.train[0][cut.train[1] == 3])


def test_class_fraction_names_an_unknown_class(tmp_path):
    with pytest.raises(ConfigError, match=r"data.class_fraction.three: unknown class 'three'"):
        _data(tmp_path, class_fraction={"three": 0.5})


# ---------------------------------------------------------------- balanced sampler


def _balanced(y: torch.Tensor, rank: int = 0, world: int = 1, batch: int = 8) -> TensorLoader:
    from nntrain.data.balance import balanced_sample_weights

    x = torch.arange(len(y)).float()
    return TensorLoader(x, y, batch, shuffle=True, seed=5, rank=rank, world=world,
                        weights=balanced_sample_weights(y, int(y.max()) + 1))


def _drawn(loader: TensorLoader, epoch: int, start: int = 0) -> torch.Tensor:
    return torch.cat([xb for xb, _ in loader.epoch(epoch, start)]).long()


def test_balanced_sampler_draws_classes_equally_with_the_epoch_length_unchanged():
    y = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()  # 90% / 9% / 1%
    loader = _balanced(y)
    drawn = _drawn(loader, 0)
    assert len(drawn) == len(y) and len(loader) == -(-len(y) // 8)
    share = y[drawn].bincount(minlength=3).float() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.05), share
    # With replacement: the 10 samples of class 2 come back about 33 times each.
    assert len(drawn[y[drawn] == 2].unique()) == 10


def test_balanced_order_is_a_function_of_seed_and_epoch_and_can_start_midway():
    y = torch.cat([torch.zeros(50), torch.ones(10)]).long()
    a, b = _balanced(y), _balanced(y)
    assert torch.equal(_drawn(a, 3), _drawn(b, 3))
    assert not torch.equal(_drawn(a, 3), _drawn(a, 4))
    assert torch.equal(_drawn(a, 3, start=2), _drawn(a, 3)[16:])


def test_balanced_sampler_is_sharded_across_ranks():
    y = torch.cat([torch.zeros(50), torch.ones(10)]).long()
    whole = _drawn(_balanced(y), 2)
    shards = [_drawn(_balanced(y, rank=r, world=2, batch=4), 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 30
    # The same draw as one process, each rank taking every second sample of it.
    assert torch.equal(shards[0], whole[0::2]) and torch.equal(shards[1], whole[1::2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sampler": "balanced", "shuffle": False}, "data.sampler: 'balanced' draws a random order every epoch"),
        ({"sampler": "balanced", "task": "reconstruction"}, "balances classes, but this is reconstruction data"),
    ],
)
def test_balanced_sampler_refuses_what_it_cannot_do(tmp_path, data, message):
    from nntrain.build import build_parts

    raw = base_config(tmp_path)
    raw["data"].update(data)
    if data.get("task") == "reconstruction":
        raw["model"] = {"name": "autoencoder"}
        raw["loss"] = {"name": "mse"}
    with pytest.raises(ConfigError, match=message):
        build_parts(config_from_dict(raw))


# ---------------------------------------------------------------- end to end


def test_weights_are_stored_in_the_checkpoint_and_eval_uses_them(tmp_path):
    raw = base_config(tmp_path)
    raw["data"].update(val_split=0.5, class_fraction={"3": 0.1}, sampler="balanced", batch_size=128)
    raw["model"] = {"name": "mlp", "hidden": [16]}
    raw["loss"] = {"name": "cross_entropy", "weight": "auto"}
    raw["log"]["tensorboard"] = False
    summary = fit(config_from_dict(raw), progress=False)
    best = Path(summary["run_dir"]) / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(best)
    weights = ckpt["class_weights"]["weight"]
    assert len(weights) == 10 and weights[3] == max(weights) and weights[3] > 5  # the rare class
    # eval takes the stored weights, not weights fitted anew: change them in the file and eval follows.
    ckpt["class_weights"]["weight"] = [1.0] * 10
    torch.save(ckpt, best)
    trained = load_trained(best)  # what `nntrain eval` builds
    assert trained.parts.loss_fn.class_weights["weight"] == [1.0] * 10
    parts = trained.parts
    got = evaluate(parts.model, parts.loss_fn, parts.data, "test", parts.cfg)["test/loss"]
    x, y = parts.data.test
    with torch.no_grad():
        expected = F.cross_entropy(trained.model(x), y).item()  # unweighted, as the file now says
    assert got == pytest.approx(expected, rel=1e-4)
    assert summary["test"]["test/acc"] > 0.3
