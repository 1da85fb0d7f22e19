"""Data sources, the seeded validation split, normalization on the training split, batching."""

import pytest
import torch
from helpers import base_config

from nntrain.data.loaders import TensorLoader, build_data
from nntrain.data.sources import DATASETS
from nntrain.errors import DataError
from nntrain.validate import config_from_dict


def _data_cfg(tmp_path, **data):
    raw = base_config(tmp_path)
    raw["data"].update(data)
    return config_from_dict(raw).data


@pytest.fixture(scope="module")
def mnist_small():
    return DATASETS.build({"name": "mnist_small"})


def test_mnist_small_is_the_documented_subset(mnist_small):
    s = mnist_small
    assert s.x_train.shape == (6000, 1, 28, 28) and s.x_test.shape == (1000, 1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert set(s.y_train.unique().tolist()) == set(range(10))
    assert s.info.task == "classification" and s.info.num_classes == 10
    assert s.info.model_kwargs() == {"in_features": 784, "in_channels": 1, "image_size": 28, "num_classes": 10}


def test_val_split_is_seeded_disjoint_and_sized(tmp_path, mnist_small):
    cfg = _data_cfg(tmp_path, val_split=0.1, normalize=None)
    a, b, c = build_data(cfg, seed=0), build_data(cfg, seed=0), build_data(cfg, seed=1)
    assert len(a.train[0]) == 5400 and len(a.val[0]) == 600 and len(a.test[0]) == 1000
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.train[1], b.train[1])
    assert not torch.equal(a.val[0], c.val[0])
    # Train and val partition the source's training images: every image is in exactly one of them.
    flat = lambda t: {tuple(row.tolist()) for row in (t * 255).round().to(torch.uint8).flatten(1)}  # noqa: E731
    train, val = flat(a.train[0]), flat(a.val[0])
    assert not train & val
    assert len(train | val) == len(flat(mnist_small.x_train))


def test_standardize_uses_training_statistics(tmp_path):
    data = build_data(_data_cfg(tmp_path, normalize={"name": "standardize"}), seed=0)
    x = data.train[0]
    assert x.mean(dim=(0, 2, 3)).item() == pytest.approx(0.0, abs=1e-4)
    assert x.std(dim=(0, 2, 3)).item() == pytest.approx(1.0, abs=1e-4)
    # Val and test are transformed with the training statistics, not fitted on themselves.
    assert data.test[0].mean().item() != pytest.approx(0.0, abs=1e-4)
    assert abs(data.test[0].mean().item()) < 0.1
    # Restoring the statistics (as eval does from a checkpoint) gives the same tensors.
    again = build_data(_data_cfg(tmp_path, normalize={"name": "standardize"}), seed=0,
                       normalizer_state=data.normalizer.state_dict())
    assert torch.equal(again.test[0], data.test[0])


def test_restored_statistics_are_used_not_refitted(tmp_path):
    cfg = _data_cfg(tmp_path, normalize={"name": "standardize"})
    state = {"mean": torch.full((1, 1, 1), 0.5), "std": torch.full((1, 1, 1), 2.0)}
    data = build_data(cfg, seed=0, normalizer_state=state)
    raw = build_data(_data_cfg(tmp_path, normalize=None), seed=0)
    torch.testing.assert_close(data.test[0], (raw.test[0] - 0.5) / 2.0)


@pytest.mark.parametrize("n, batch", [(10, 3), (12, 4), (5, 8)])
def test_tensor_loader_covers_every_sample_once(n, batch):
    x, y = torch.arange(n).float().unsqueeze(1), torch.arange(n)
    loader = TensorLoader(x, y, batch, shuffle=True, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == -(-n // batch)
    assert [len(b[1]) for b in batches] == loader.batch_sizes()
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    assert all(torch.equal(b[0].squeeze(1).long(), b[1]) for b in batches)  # x and y stay paired


def test_tensor_loader_order_depends_on_seed_and_epoch_and_can_start_midway():
    x = y = torch.arange(100)
    order = lambda seed, epoch, start=0: torch.cat(  # noqa: E731
        [b[1] for b in TensorLoader(x, y, 10, shuffle=True, seed=seed).epoch(epoch, start)]
    )
    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(0, 1))
    assert not torch.equal(order(0, 0), order(1, 0))
    assert torch.equal(order(0, 2, start=3), order(0, 2)[30:])  # resume inside an epoch
    assert torch.equal(torch.cat([b[1] for b in TensorLoader(x, y, 7).epoch()]), y)  # no shuffle: in order


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_torchvision_data_says_how_to_fix(tmp_path, name):
    with pytest.raises(DataError) as info:
        DATASETS.build({"name": name, "root": str(tmp_path), "download": False})
    message = str(info.value)
    assert "not found" in message and str(tmp_path) in message
    assert "download: true" in message


def test_real_mnist_from_shared_data(mnist_root):
    splits = DATASETS.build({"name": "mnist", "root": str(mnist_root), "download": True})
    assert splits.x_train.shape == (60000, 1, 28, 28) and splits.x_test.shape == (10000, 1, 28, 28)
    assert splits.y_train.bincount().tolist()[0] == 5923  # the canonical MNIST class counts
    assert splits.info.num_classes == 10


def test_model_kwargs_give_exactly_the_inferred_arguments():
    """INFERRED (the arguments config validation lets models omit) is the one list `model_kwargs` draws from."""
    from nntrain.data.info import INFERRED, DataInfo

    infos = [
        DataInfo("classification", (3, 8, 8), 10, variable_length=None),
        DataInfo("regression", (20, 2), output_size=1, variable_length=False),
        DataInfo("classification", (40,), 2, vocab_size=100, variable_length=True),
    ]
    given = set().union(*(info.model_kwargs() for info in infos))
    assert given == set(INFERRED)
    assert infos[1].model_kwargs() == {"in_features": 40, "input_size": 2, "output_size": 1, "variable_length": False}
