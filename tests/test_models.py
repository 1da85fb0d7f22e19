"""Every registered model builds from the sizes the data gives, and trains (forward + backward)."""

import math

import pytest
import torch

from nntrain.data.info import DataInfo
from nntrain.errors import ConfigError
from nntrain.models import MODELS, build_model

MNIST = DataInfo("classification", (1, 28, 28), 10)
CIFAR = DataInfo("classification", (3, 32, 32), 10)
SEQUENCE = DataInfo("regression", (12, 3), output_size=2)  # (T, F) real values, forecasting
TOKENS = DataInfo("classification", (12,), num_classes=2, vocab_size=50)  # (T,) token ids, 0 pads
DATA = {"mnist_1x28x28": MNIST, "cifar_3x32x32": CIFAR, "sequence_12x3": SEQUENCE, "tokens_12": TOKENS}

# Which inputs a model takes, by the size arguments it declares.
_TAKES = {
    "mnist_1x28x28": ("in_features", "in_channels"),
    "cifar_3x32x32": ("in_features", "in_channels"),
    "sequence_12x3": ("input_size",),
    "tokens_12": ("vocab_size",),
}


def _inputs(info: DataInfo, n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if info.vocab_size is not None:
        x = torch.randint(2, info.vocab_size, (n, *info.input_shape), generator=gen)
        x[0, 8:] = 0  # a shorter sentence, padded at the end
        return x
    return torch.randn(n, *info.input_shape, generator=gen)


def _applies(name: str, kind: str) -> bool:
    return any(arg in MODELS.parameters(name) for arg in _TAKES[kind])


def _build_for(name: str, kind: str, **kwargs) -> torch.nn.Module:
    return build_model({"name": name, **kwargs}, DATA[kind].model_kwargs())


def _first_kind(name: str) -> str:
    return next(kind for kind in DATA if _applies(name, kind))


# Every (model, data) pair where the model takes that kind of input.
PAIRS = [(name, kind) for name in MODELS.names() for kind in DATA if _applies(name, kind)]


@pytest.mark.parametrize("name, kind", PAIRS, ids=[f"{n}-{k}" for n, k in PAIRS])
def test_model_builds_forward_backward(name, kind):
    model = _build_for(name, kind)
    info = DATA[kind]
    x = _inputs(info)
    out = model(x)
    if "num_classes" in MODELS.parameters(name) and info.num_classes:
        assert out.shape == (4, info.num_classes)
    elif "output_size" in MODELS.parameters(name) and info.output_size:
        assert out.shape == (4, info.output_size)
    else:  # reconstruction
        assert out.shape == x.shape
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_takes_some_data(name):
    assert any(_applies(name, kind) for kind in DATA), f"model '{name}' takes no size this test knows"


@pytest.mark.parametrize("name", MODELS.names())
def test_model_eval_mode_is_deterministic(name):
    kind = _first_kind(name)
    model = _build_for(name, kind).eval()
    x = _inputs(DATA[kind], 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in MODELS.names() if _applies(n, "mnist_1x28x28")])
def test_explicit_size_that_disagrees_with_data_is_an_error(name):
    params, sizes = MODELS.parameters(name), MNIST.model_kwargs()
    key = next(k for k in ("in_channels", "in_features", "num_classes") if k in params and k in sizes)
    wrong = sizes[key] + 1
    with pytest.raises(ConfigError, match=rf"model\.{key}: the config says {wrong} but the data has"):
        build_model({"name": name, key: wrong}, sizes)
    model = build_model({"name": name, key: sizes[key]}, sizes)  # an explicit value that agrees is fine
    assert isinstance(model, torch.nn.Module)


def test_required_size_the_data_does_not_give_is_an_error():
    # Regression data gives no num_classes: the model can't guess how many outputs to make.
    info = DataInfo("regression", (1, 28, 28))
    with pytest.raises(ConfigError, match=r"model\.num_classes: model 'mlp' needs it"):
        build_model({"name": "mlp"}, info.model_kwargs())
    model = build_model({"name": "mlp", "num_classes": 1}, info.model_kwargs())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 1)


@pytest.mark.parametrize("name, shape", [("mlp", (5,)), ("lenet", (1, 28, 28))])
def test_regression_data_gives_a_one_head_model_its_outputs(name, shape):
    # A regression CSV says how many values to predict (output_size): that is the head's width.
    info = DataInfo("regression", shape, output_size=2)
    model = build_model({"name": name}, info.model_kwargs())
    assert model(torch.randn(3, *shape)).shape == (3, 2)
    with pytest.raises(ConfigError, match=r"model\.num_classes: the config says 3 but the data has 2"):
        build_model({"name": name, "num_classes": 3}, info.model_kwargs())


def test_mlp_layers_follow_config():
    model = build_model(
        {"name": "mlp", "hidden": [32, 16], "activation": "tanh", "dropout": 0.5, "batch_norm": True},
        MNIST.model_kwargs(),
    )
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "Flatten", "Linear", "BatchNorm1d", "Tanh", "Dropout", "Linear", "BatchNorm1d", "Tanh", "Dropout", "Linear",
    ]
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 16), (16, 10)]


def test_lenet_is_lenet5_on_mnist():
    model = build_model({"name": "lenet"}, MNIST.model_kwargs())
    # conv(1->6) 156 + conv(6->16) 2416 + fc 400->120 48120 + 120->84 10164 + 84->10 850
    assert sum(p.numel() for p in model.parameters()) == 61706
    model = build_model(
        {"name": "lenet", "pool": "avg", "activation": {"name": "leaky_relu", "negative_slope": 0.2}},
        CIFAR.model_kwargs(),
    )
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"AvgPool2d", "LeakyReLU"} <= kinds and "MaxPool2d" not in kinds
    act = next(m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert act.negative_slope == 0.2


@pytest.mark.parametrize("name", [n for n in MODELS.names() if "init" in MODELS.parameters(n)])
def test_init_option_applies(name):
    model = _build_for(name, _first_kind(name), init={"name": "constant", "val": 0.25})
    weights = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert weights
    for m in weights:
        assert torch.all(m.weight == 0.25)
        assert m.bias is None or torch.all(m.bias == 0)


def test_kaiming_normal_init_scale():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [512], "init": "kaiming_normal"}, MNIST.model_kwargs())
    weight = model[1].weight
    # He init for ReLU: std = sqrt(2 / fan_in); 400k samples estimate it to well within 2%.
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
