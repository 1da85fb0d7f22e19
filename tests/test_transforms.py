"""Normalizers fit on training data and apply to any split; augmentations keep shape and dtype."""

import pytest
import torch

from nntrain.data.transforms import AUGMENTATIONS, NORMALIZERS

# Required arguments of augmentations, as a function of the batch shape; a new augmentation
# with required arguments fails test_augmentation_keeps_shape_and_dtype until it gets one here.
AUGMENT_EXAMPLES = {
    "random_crop": lambda shape: {"size": shape[-1], "padding": 2},
}
IMAGE_SHAPES = [(8, 1, 28, 28), (8, 3, 32, 32)]


def _augmentation(name: str, shape, seed: int = 0, **kwargs):
    params = AUGMENTATIONS.parameters(name)
    example = AUGMENT_EXAMPLES.get(name, lambda s: {})(shape)
    missing = [k for k, p in params.items() if p.default is p.empty and k not in {**example, **kwargs}]
    assert not missing, f"add example arguments {missing} for augmentation '{name}' to AUGMENT_EXAMPLES"
    return AUGMENTATIONS.build({"name": name, **example, **kwargs}, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s[1:])))
@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_augmentation_keeps_shape_and_dtype(name, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    y = _augmentation(name, shape)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x), f"augmentation '{name}' with its example arguments changed nothing"


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_augmentation_is_reproducible_from_its_generator(name):
    shape = IMAGE_SHAPES[0]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_augmentation(name, shape, seed=3)(x), _augmentation(name, shape, seed=3)(x))


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    crop = _augmentation("random_crop", x.shape, padding=0, size=4)
    y = crop(x)
    assert y.shape == (2, 1, 4, 4)
    for i in range(2):
        windows = [x[i, :, t : t + 4, l : l + 4] for t in range(3) for l in range(3)]
        assert any(torch.equal(y[i], w) for w in windows)
    # Without padding and with the full size, the only window is the image itself.
    assert torch.equal(_augmentation("random_crop", x.shape, padding=0, size=6)(x), x)


def test_horizontal_flip_probabilities():
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(_augmentation("horizontal_flip", x.shape, p=1.0)(x), x.flip(-1))
    assert torch.equal(_augmentation("horizontal_flip", x.shape, p=0.0)(x), x)


def test_gaussian_noise_scale():
    x = torch.zeros(64, 1, 28, 28)
    noise = _augmentation("gaussian_noise", x.shape, std=0.2)(x)
    assert noise.std().item() == pytest.approx(0.2, rel=0.02)
    assert torch.equal(_augmentation("gaussian_noise", x.shape, std=0.0)(x), x)


@pytest.mark.parametrize("shape", [(64, 3, 8, 8), (64, 5)], ids=["images", "features"])
@pytest.mark.parametrize("name", NORMALIZERS.names())
def test_normalizer_fits_applies_and_round_trips(name, shape):
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(shape, generator=gen) * 5 + 2
    other = torch.rand(shape, generator=gen) * 5 + 2
    norm = NORMALIZERS.build({"name": name}).fit(train)
    out = norm(other)
    assert out.shape == other.shape and out.dtype == other.dtype
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, other)
    restored = NORMALIZERS.build({"name": name})
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
        assert torch.isfinite(NORMALIZERS.build({"name": name}).fit(x)(x)).all(), name
