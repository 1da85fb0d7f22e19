"""Normalizers fit on training data and apply to any split (augmentations: test_augment.py)."""

import pytest
import torch

from nntrain.data.transforms import NORMALIZERS
from nntrain.errors import DataError

# Required arguments of normalizers; a new normalizer with required arguments fails the tests
# below until it gets one here.
NORMALIZER_EXAMPLES = {
    "normalize": {"mean": [0.5], "std": [2.0]},
}


def _normalizer(name: str):
    return NORMALIZERS.build({"name": name, **NORMALIZER_EXAMPLES.get(name, {})})


@pytest.mark.parametrize("shape", [(64, 3, 8, 8), (64, 5)], ids=["images", "features"])
@pytest.mark.parametrize("name", NORMALIZERS.names())
def test_normalizer_fits_applies_and_round_trips(name, shape):
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(shape, generator=gen) * 5 + 2
    other = torch.rand(shape, generator=gen) * 5 + 2
    norm = _normalizer(name).fit(train)
    out = norm(other)
    assert out.shape == other.shape and out.dtype == other.dtype
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, other)
    restored = _normalizer(name)
    restored.load_state_dict(norm.state_dict())
    torch.testing.assert_close(restored(other), out)
    assert all(isinstance(v, torch.Tensor) for v in norm.state_dict().values())  # checkpoint-safe


def test_standardize_per_channel_on_images():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1, 1)
    shift = torch.tensor([0.0, -5.0, 3.0]).view(1, 3, 1, 1)
    x = torch.randn(32, 3, 8, 8, generator=gen) * scale + shift
    out = NORMALIZERS.build({"name": "standardize"}).fit(x)(x)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_standardize_per_feature_on_tables():
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = NORMALIZERS.build({"name": "standardize"}).fit(x)(x)
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(0), torch.ones(4), atol=1e-5, rtol=0)


def test_minmax_maps_training_data_to_unit_interval():
    x = torch.randn(32, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    out = NORMALIZERS.build({"name": "minmax"}).fit(x)(x)
    for c in range(2):
        assert out[:, c].min().item() == pytest.approx(0.0, abs=1e-6)
        assert out[:, c].max().item() == pytest.approx(1.0, abs=1e-6)


def test_constant_channel_does_not_divide_by_zero():
    x = torch.ones(10, 2, 3, 3)
    for name in NORMALIZERS.names():
        assert torch.isfinite(_normalizer(name).fit(x)(x)).all(), name


def test_normalize_uses_the_given_mean_and_std_per_channel():
    x = torch.rand(4, 3, 5, 5)
    norm = NORMALIZERS.build({"name": "normalize", "mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 4.0]}).fit(x)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    table = torch.rand(10, 2)
    norm = NORMALIZERS.build({"name": "normalize", "mean": [1.0, -1.0], "std": [0.5, 2.0]}).fit(table)
    torch.testing.assert_close(norm(table), (table - torch.tensor([1.0, -1.0])) / torch.tensor([0.5, 2.0]))


def test_normalize_with_the_wrong_number_of_channels():
    norm = NORMALIZERS.build({"name": "normalize", "mean": [0.1, 0.2], "std": [1.0]})
    with pytest.raises(DataError, match=r"data.normalize.mean: 2 values, but the data has 3 channels"):
        norm.fit(torch.rand(4, 3, 5, 5))
