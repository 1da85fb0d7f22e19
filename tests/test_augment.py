"""Augmentations: batched on the device, drawn from their generator only, training batches only,
and distributed as torchvision.transforms.v2 defines them."""

import itertools
import math

import pytest
import torch
from helpers import assert_clean_error, base_config
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from nntrain.data.augment import AUGMENTATIONS, check_augmentations
from nntrain.errors import ConfigError, DataError
from nntrain.validate import config_from_dict

# Required arguments, and arguments that make each augmentation change a batch of 8 images
# (as a function of the batch shape). A new augmentation fails the tests below until it is here.
EXAMPLES = {
    "random_crop": lambda shape: {"size": shape[-1], "padding": 2},
    "horizontal_flip": lambda shape: {},
    "vertical_flip": lambda shape: {},
    "random_rotation": lambda shape: {"degrees": 30},
    "random_affine": lambda shape: {"degrees": 15, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 5},
    "color_jitter": lambda shape: {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "random_erasing": lambda shape: {"p": 1.0},
    "gaussian_noise": lambda shape: {},
}
# Arguments with which each augmentation must return its input unchanged.
IDENTITY = {
    "random_crop": {"padding": 0},
    "horizontal_flip": {"p": 0.0},
    "vertical_flip": {"p": 0.0},
    "random_rotation": {"degrees": 0},
    "random_affine": {"degrees": 0},
    "color_jitter": {},
    "random_erasing": {"p": 0.0},
    "gaussian_noise": {"std": 0.0},
}
# Every random augmentation (normalize, the one deterministic entry, applies when data is loaded).
RANDOM = [n for n in AUGMENTATIONS.names() if n != "normalize"]
IMAGE_SHAPES = [(8, 1, 28, 28), (8, 3, 32, 32)]
LARGE = 10_000  # samples for distribution checks


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _build(name: str, shape=IMAGE_SHAPES[0], seed: int = 0, **kwargs):
    return AUGMENTATIONS.build({"name": name, **EXAMPLES[name](shape), **kwargs}, generator=_gen(seed))


def _images(shape, seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed))  # pixel values in [0, 1]


def test_every_augmentation_has_examples():
    assert sorted(EXAMPLES) == RANDOM == sorted(IDENTITY)


@pytest.mark.parametrize("name", RANDOM)
def test_list_says_how_each_augmentation_runs(name):
    note = AUGMENTATIONS.note(name)
    assert "batched on device" in note or "per-sample fallback" in note, note


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s[1:])))
@pytest.mark.parametrize("name", RANDOM)
def test_keeps_shape_dtype_and_device(name, shape):
    x = _images(shape)
    y = _build(name, shape)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x), f"'{name}' with its example arguments changed nothing"


@pytest.mark.parametrize("name", RANDOM)
def test_identity_arguments_change_nothing(name):
    x = _images(IMAGE_SHAPES[1])
    out = AUGMENTATIONS.build({"name": name, **IDENTITY[name]}, generator=_gen())(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", RANDOM)
def test_reproducible_from_the_generator_and_never_the_global_rng(name):
    x = _images(IMAGE_SHAPES[1])
    global_state = torch.get_rng_state()
    first = _build(name, x.shape, seed=3)(x)
    assert torch.equal(torch.get_rng_state(), global_state), f"'{name}' drew from the global RNG"
    assert torch.equal(first, _build(name, x.shape, seed=3)(x))
    assert not torch.equal(first, _build(name, x.shape, seed=4)(x))
    # Successive batches from one generator differ (the generator advances).
    aug = _build(name, x.shape, seed=3)
    assert not torch.equal(aug(x), aug(x))


# ---------------------------------------------------------------- crops and flips


@pytest.mark.parametrize(("name", "dim"), [("horizontal_flip", -1), ("vertical_flip", -2)])
def test_flip_rate_and_direction(name, dim):
    x = _images((LARGE, 1, 4, 4))
    y = _build(name, x.shape, p=0.5)(x)
    flipped = (y == x.flip(dim)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each sample is either flipped or left alone
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    assert abs(_build(name, x.shape, p=0.2)(x).eq(x.flip(dim)).flatten(1).all(1).float().mean().item() - 0.2) < 0.03
    assert torch.equal(_build(name, x.shape, p=1.0)(x), x.flip(dim))


def test_random_crop_shifts_by_at_most_padding_and_all_shifts_occur():
    p, size = 2, 8
    # Unique positive pixel values, so the constant (0) padding is recognisable.
    image = torch.arange(1, size * size + 1, dtype=torch.float32).view(1, 1, size, size)
    x = image.expand(LARGE, 1, size, size)
    y = _build("random_crop", x.shape, size=size, padding=p)(x)
    # Output pixel (p, p) is padded pixel (top + p, left + p) = image pixel (top, left).
    index = y[:, 0, p, p].long() - 1
    top, left = index // size, index % size
    dy, dx = top - p, left - p
    assert dy.abs().max() <= p and dx.abs().max() <= p
    counts = torch.bincount(((dy + p) * (2 * p + 1) + (dx + p)), minlength=(2 * p + 1) ** 2)
    expected = LARGE / (2 * p + 1) ** 2  # uniform over the 25 offsets, as torchvision's RandomCrop
    assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected
    # Each output is the image shifted by (dy, dx), zero where it came from the padding.
    padded = torch.nn.functional.pad(image, (p, p, p, p))[0, 0]
    for i in range(20):
        t, l = int(top[i]), int(left[i])
        assert torch.equal(y[i, 0], padded[t : t + size, l : l + size])


def test_random_crop_is_a_window_of_the_image_without_padding():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    y = _build("random_crop", x.shape, padding=0, size=4)(x)
    assert y.shape == (2, 1, 4, 4)
    for i in range(2):
        windows = [x[i, :, t : t + 4, l : l + 4] for t in range(3) for l in range(3)]
        assert any(torch.equal(y[i], w) for w in windows)
    assert y.shape == _build("random_crop", x.shape, padding=1, size=[4, 5])(x).shape[:2] + (4, 4)


def test_random_crop_pads_with_fill():
    x = torch.ones(LARGE, 1, 4, 4)
    y = _build("random_crop", x.shape, padding=2, fill=-1.0)(x)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    # The image's pixels survive: a 4x4 image shifted by at most 2 keeps at least a 2x2 block.
    assert ((y == 1).flatten(1).sum(1) >= 4).all()


def test_random_crop_size_defaults_to_the_image_and_reflect_padding():
    x = _images((64, 3, 10, 12))
    y = AUGMENTATIONS.build({"name": "random_crop", "padding": 3, "padding_mode": "reflect"}, generator=_gen())(x)
    assert y.shape == x.shape
    # Reflection never introduces a value the image lacks (unlike zero padding).
    assert torch.isin(y, x).all()


# ---------------------------------------------------------------- rotations and affine maps


def test_rotation_by_90_degrees_is_rot90():
    x = _images((16, 3, 28, 28))
    y = _build("random_rotation", x.shape, degrees=[90, 90])(x)
    assert torch.equal(y, torch.rot90(x, k=1, dims=(-2, -1)))  # counter-clockwise, as torchvision
    bilinear = _build("random_rotation", x.shape, degrees=[90, 90], interpolation="bilinear")(x)
    torch.testing.assert_close(bilinear, torch.rot90(x, k=1, dims=(-2, -1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_matches_torchvision_rotate(interpolation):
    x = _images((4, 3, 20, 26))
    for angle in (33.0, -71.5):
        y = _build("random_rotation", x.shape, degrees=[angle, angle], interpolation=interpolation, fill=0.25)(x)
        mode = T.InterpolationMode(interpolation)
        expected = torch.stack([TF.rotate(img, angle, interpolation=mode, fill=0.25) for img in x])
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)


def test_rotation_angles_are_uniform_in_the_range():
    angles = _build("random_rotation", degrees=30).params(LARGE)
    assert -30 <= angles.min() and angles.max() <= 30
    assert abs(angles.mean().item()) < 0.6
    assert abs(angles.std().item() - 60 / math.sqrt(12)) < 0.6  # the std of U(-30, 30)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_matches_torchvision_affine_with_the_drawn_parameters(interpolation):
    x = _images((6, 3, 24, 30))
    spec = {"degrees": 40, "translate": [0.2, 0.1], "scale": [0.7, 1.3], "shear": [-10, 10, -5, 5],
            "interpolation": interpolation, "fill": 0.5}
    y = _build("random_affine", x.shape, seed=5, **spec)(x)
    prm = _build("random_affine", x.shape, seed=5, **spec).params(6, 24, 30)
    for i in range(6):
        expected = TF.affine(
            x[i], angle=prm["angle"][i].item(), translate=[prm["tx"][i].item(), prm["ty"][i].item()],
            scale=prm["scale"][i].item(), shear=[prm["shear_x"][i].item(), prm["shear_y"][i].item()],
            interpolation=T.InterpolationMode(interpolation), fill=0.5,
        )
        if interpolation == "bilinear":
            torch.testing.assert_close(y[i], expected, rtol=0, atol=1e-4)
        else:  # nearest may round a rare pixel centre lying on a boundary the other way
            assert (y[i] != expected).float().mean() < 0.005


def test_affine_parameters_follow_torchvision_ranges():
    aug = _build("random_affine", degrees=[-10, 20], translate=[0.1, 0.25], scale=[0.8, 1.2], shear=7)
    prm = aug.params(LARGE, 28, 32)  # height 28, width 32
    assert -10 <= prm["angle"].min() and prm["angle"].max() <= 20
    assert abs(prm["angle"].mean().item() - 5) < 0.5
    # Shifts: whole pixels, up to translate[0] * width horizontally and translate[1] * height vertically.
    assert torch.equal(prm["tx"], prm["tx"].round()) and torch.equal(prm["ty"], prm["ty"].round())
    assert set(prm["tx"].long().tolist()) == set(range(-3, 4))  # 0.1 * 32 = 3.2 -> -3..3
    assert set(prm["ty"].long().tolist()) == set(range(-7, 8))  # 0.25 * 28 = 7
    assert 0.8 <= prm["scale"].min() and prm["scale"].max() <= 1.2
    assert -7 <= prm["shear_x"].min() and prm["shear_x"].max() <= 7 and (prm["shear_y"] == 0).all()


# ---------------------------------------------------------------- colour


@pytest.mark.parametrize(
    "kwargs",
    [
        {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        {"brightness": [0.2, 2.0], "saturation": 0.8},
        {"contrast": 0.9, "hue": [-0.5, 0.2]},
    ],
    ids=["all", "brightness-saturation", "contrast-hue"],
)
def test_color_jitter_is_torchvisions_per_sample_sequence(kwargs):
    x = _images((32, 3, 12, 10))
    y = AUGMENTATIONS.build({"name": "color_jitter", **kwargs}, generator=_gen(7))(x)
    ops, factors = AUGMENTATIONS.build({"name": "color_jitter", **kwargs}, generator=_gen(7)).params(32, 3)
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(32):
        expected = x[i]
        for op, factor in zip(ops[i].tolist(), factors[i].tolist()):
            expected = adjust[op](expected, factor)
        torch.testing.assert_close(y[i], expected, rtol=0, atol=1e-5)


def test_color_jitter_factors_and_orders():
    aug = AUGMENTATIONS.build(
        {"name": "color_jitter", "brightness": 0.4, "contrast": [0.5, 0.9], "saturation": 2.0, "hue": 0.1},
        generator=_gen(),
    )
    ops, factors = aug.params(LARGE, 3)
    by_op = {int(o): factors[ops == o] for o in range(4)}
    ranges = {0: (0.6, 1.4), 1: (0.5, 0.9), 2: (0.0, 3.0), 3: (-0.1, 0.1)}  # saturation: max(0, 1 - 2)
    for op, (lo, hi) in ranges.items():
        assert len(by_op[op]) == LARGE  # every sample takes every jitter once
        assert lo <= by_op[op].min() and by_op[op].max() <= hi
        assert abs(by_op[op].mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo) + 1e-3
    # Each of the 24 orders, as torchvision draws one per image.
    orders = torch.bincount(sum(ops[:, i] * 4**i for i in range(4)), minlength=4**4)
    counts = orders[[sum(p[i] * 4**i for i in range(4)) for p in itertools.permutations(range(4))]]
    assert counts.sum() == LARGE and counts.min() > 0.7 * LARGE / 24


def test_color_jitter_on_gray_images_only_brightness_and_contrast():
    x = _images((16, 1, 8, 8))
    aug = AUGMENTATIONS.build({"name": "color_jitter", "brightness": 0.5, "saturation": 0.5, "hue": 0.3},
                              generator=_gen())
    ops, _ = aug.params(16, 1)
    assert ops.shape == (16, 1) and (ops == 0).all()
    y = aug(x)
    # Brightness only: each image is scaled by one factor (where nothing was clamped at 1).
    ratio = y / x
    spread = ratio.flatten(1).amax(1) - ratio.flatten(1).amin(1)
    unclamped = (y < 1).flatten(1).all(1)
    assert unclamped.sum() >= 4 and (spread[unclamped] < 1e-5).all()
    assert not torch.equal(y, x)


# ---------------------------------------------------------------- erasing and noise


def _erased_boxes(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(erased?, height, width) per sample of ones-images erased with value 0."""
    zero = y[:, 0] == 0
    rows, cols = zero.any(2), zero.any(1)
    return zero.flatten(1).any(1), rows.sum(1), cols.sum(1)


def test_random_erasing_rate_and_boxes_match_torchvision():
    h, w = 32, 32
    x = torch.ones(LARGE, 1, h, w)
    y = _build("random_erasing", x.shape, p=0.5)(x)
    erased, bh, bw = _erased_boxes(y)
    assert abs(erased.float().mean().item() - 0.5) < 0.03
    # Exactly one rectangle per erased sample: the zero pixels are its full box.
    assert torch.equal((y[:, 0] == 0).flatten(1).sum(1), bh * bw)
    area = (bh * bw)[erased].float() / (h * w)
    aspect = (bh.float() / bw.float())[erased]
    assert area.min() >= 0.02 * 0.8 and area.max() <= 0.33 * 1.2  # area fraction in `scale` (rounded sides)
    assert aspect.min() >= 0.3 * 0.7 and aspect.max() <= 3.3 / 0.7
    # torchvision's RandomErasing, sample by sample, gives the same distribution of boxes.
    torch.manual_seed(0)
    reference = T.RandomErasing(p=1.0)
    ref = torch.stack([reference(torch.ones(1, h, w)) for _ in range(2000)])
    _, rh, rw = _erased_boxes(ref)
    ref_area = (rh * rw).float() / (h * w)
    assert abs(area.mean().item() - ref_area.mean().item()) < 0.015
    assert abs((bh.float() / bw.float())[erased].log().mean().item() - (rh.float() / rw.float()).log().mean().item()) < 0.06


def test_random_erasing_values():
    x = torch.full((64, 3, 16, 16), 0.5)
    per_channel = _build("random_erasing", x.shape, p=1.0, value=[0.1, 0.2, 0.3])(x)
    for c, v in enumerate((0.1, 0.2, 0.3)):
        assert ((per_channel[:, c] == 0.5) | (per_channel[:, c] == torch.tensor(v))).all()
        assert (per_channel[:, c] == torch.tensor(v)).any()
    noise = _build("random_erasing", x.shape, p=1.0, value="random")(x)
    inside = noise != 0.5
    assert 0.8 < noise[inside].std().item() < 1.2  # standard normal inside the rectangles


def test_gaussian_noise_scale_and_any_float_data():
    x = torch.zeros(64, 1, 28, 28)
    noise = _build("gaussian_noise", x.shape, std=0.2)(x)
    assert noise.std().item() == pytest.approx(0.2, rel=0.02)
    table = torch.zeros(5000, 7)  # tabular batches too: no image needed
    check_augmentations([{"name": "gaussian_noise", "std": 0.1}], table)
    assert _build("gaussian_noise", table.shape, std=0.5)(table).std().item() == pytest.approx(0.5, rel=0.03)


# ---------------------------------------------------------------- checks before training


@pytest.mark.parametrize("name", [n for n in RANDOM if n != "gaussian_noise"])
def test_image_augmentations_refuse_tabular_data_at_build_time(name):
    spec = {"name": name, **EXAMPLES[name]((8, 1, 28, 28))}
    with pytest.raises(DataError, match=rf"data.augment.0: {name}: needs image batches \(N, C, H, W\)"):
        check_augmentations([spec], torch.rand(10, 5))


def test_checks_name_every_bad_entry():
    x = torch.randn(10, 4, 8, 8)  # 4 channels, standardized values
    specs = [
        {"name": "horizontal_flip"},
        {"name": "random_crop", "size": 16, "padding": 2},
        {"name": "color_jitter", "brightness": 0.2},
        {"name": "random_erasing", "value": [0.0, 1.0]},
    ]
    with pytest.raises(DataError) as info:
        check_augmentations(specs, x)
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("data.augment.1: random_crop: size 16x16 is larger than the padded images (12x12)")
    assert lines[1].startswith("data.augment.2: color_jitter: needs 1- or 3-channel images")
    assert lines[2].startswith("data.augment.3: random_erasing: value has 2 entries")
    with pytest.raises(DataError, match=r"pixel values in \[0, 1\].*minmax"):
        check_augmentations([{"name": "color_jitter", "brightness": 0.2}], torch.randn(10, 3, 8, 8))
    with pytest.raises(DataError, match=r"needs real-valued inputs"):
        check_augmentations([{"name": "gaussian_noise"}], torch.zeros(10, 20, dtype=torch.long))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "horizontal_flip", "p": 1.5}, r"augment.0.p: Input should be less than or equal to 1"),
        ({"name": "random_rotation", "degrees": -5}, r"augment.0.degrees: Input should be greater than or equal to 0"),
        ({"name": "random_rotation", "degrees": [10, 5]}, r"augment.0.degrees: .*min <= max"),
        ({"name": "random_rotation"}, r"augment.0.degrees: missing"),
        ({"name": "random_affine", "degrees": 0, "translate": [1.5, 0]}, r"augment.0.translate: "),
        ({"name": "random_affine", "degrees": 0, "scale": [0.0, 1.0]}, r"augment.0.scale: .*greater than 0"),
        ({"name": "color_jitter", "hue": 0.7}, r"augment.0.hue: "),
        ({"name": "color_jitter", "brightness": -1}, r"augment.0.brightness: "),
        ({"name": "random_erasing", "scale": [0.5, 0.1]}, r"augment.0.scale: .*min <= max"),
        ({"name": "random_crop", "padding": -1}, r"augment.0.padding: .*greater than or equal to 0"),
        ({"name": "random_crop", "padding_mode": "mirror"}, r"augment.0.padding_mode: "),
        ({"name": "gaussian_noise", "std": -0.1}, r"augment.0.std: "),
        ({"name": "horizontal_flip", "prob": 0.5}, r"augment.0.prob: unknown key 'prob'"),
    ],
)
def test_bad_arguments_are_config_errors(spec, message):
    raw = {"name": "x", "data": {"dataset": {"name": "mnist_small"}, "augment": [spec]}, "model": {"name": "mlp"}}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_normalize_std_must_be_positive():
    raw = {"name": "x", "data": {"dataset": {"name": "mnist_small"},
                                 "normalize": {"name": "normalize", "mean": [0.1], "std": [0.0]}},
           "model": {"name": "mlp"}}
    with pytest.raises(ConfigError, match=r"data.normalize.std.*greater than 0"):
        config_from_dict(raw)


def test_check_builds_every_augmentation_on_real_images(cli, tmp_path, write_config):
    augment = [{"name": n, **EXAMPLES[n]((1, 1, 28, 28))} for n in RANDOM]
    data = {"dataset": {"name": "mnist_small"}, "val_split": 0.5, "batch_size": 32,
            "normalize": {"name": "minmax"}, "augment": augment}
    result = cli("check", write_config(tmp_path, data=data))
    assert result.exit_code == 0, result.stderr
    # The same with standardized inputs: color_jitter's [0, 1] is refused before anything runs.
    data["normalize"] = {"name": "standardize"}
    err = assert_clean_error(cli("check", write_config(tmp_path, data=data)))
    index = AUGMENTATIONS.names().index("color_jitter")
    assert f"data.augment.{index}: color_jitter: works on pixel values in [0, 1]" in err and "minmax" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- training batches only


def test_trainer_augments_training_batches_only(tmp_path, write_config):
    from nntrain.build import build_parts, build_trainer
    from nntrain.validate import load_config

    data = {"dataset": {"name": "mnist_small"}, "val_split": 0.9, "batch_size": 100,
            "normalize": {"name": "standardize"}, "augment": [{"name": "horizontal_flip"}]}
    cfg = load_config(write_config(tmp_path, data=data, model={"name": "mlp", "hidden": [16]}))
    parts = build_parts(cfg)
    trainer = build_trainer(parts)
    seen = []

    def counting(x):
        seen.append(len(x))
        return x

    trainer.augment = trainer.augment + [counting]
    trainer.fit()  # one epoch: every training batch, then an evaluation of the validation split
    assert seen == trainer.train_loader.batch_sizes() and sum(seen) == len(parts.data.train[0])
    before = trainer.aug_generator.get_state()
    trainer.evaluate("val")
    trainer.evaluate("test")
    assert len(seen) == trainer.batches_per_epoch  # evaluation never augments
    assert torch.equal(trainer.aug_generator.get_state(), before)  # nor draws augmentation numbers


def test_normalize_listed_in_augment_normalizes_every_split_like_data_normalize(tmp_path):
    """torchvision habit: Normalize in the augmentation list. It isn't random, so it applies to
    every split once, exactly as data.normalize would, and is not applied again to batches."""
    from nntrain.build import build_parts, build_trainer
    from nntrain.data.loaders import build_data

    stats = {"name": "normalize", "mean": [0.2], "std": [0.4]}
    as_normalize = base_config(tmp_path)
    as_normalize["data"]["normalize"] = stats
    as_augment = base_config(tmp_path)
    as_augment["data"].pop("normalize")
    as_augment["data"]["augment"] = [stats, {"name": "horizontal_flip", "p": 0.5}]
    a = build_data(config_from_dict(as_normalize).data, 0)
    b = build_data(config_from_dict(as_augment).data, 0)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split)[0], getattr(b, split)[0])
    assert b.normalizer is not None and b.normalizer.state_dict().keys() == a.normalizer.state_dict().keys()
    parts = build_parts(config_from_dict(as_augment))
    trainer = build_trainer(parts)
    assert [type(aug).__name__ for aug in trainer.augment] == ["HorizontalFlip"]


def test_normalize_given_twice_is_refused(tmp_path):
    from nntrain.data.loaders import build_data

    raw = base_config(tmp_path)
    raw["data"]["augment"] = [{"name": "normalize", "mean": [0.2], "std": [0.4]}]
    with pytest.raises(DataError, match=r"data.augment.0: normalize is given twice \(also as data.normalize\)"):
        build_data(config_from_dict(raw).data, 0)
    raw["data"]["augment"][0]["mean"] = [0.1, 0.2]
    raw["data"].pop("normalize")
    with pytest.raises(DataError, match=r"data.augment.0.mean: 2 values, but the data has 1 channels"):
        build_data(config_from_dict(raw).data, 0)
