"""Every registered model builds from the sizes the data gives, and trains (forward + backward)."""

import math

import pytest
import torch

from nntrain.components import INFERRED
from nntrain.data.datasets import DataInfo
from nntrain.errors import ConfigError
from nntrain.models import MODELS, build_model

MNIST = DataInfo("classification", (1, 28, 28), 10)
CIFAR = DataInfo("classification", (3, 32, 32), 10)


def _build_for(name: str, info: DataInfo, **kwargs) -> torch.nn.Module:
    inferred = info.model_kwargs()
    params = MODELS.parameters(name)
    needs = [k for k, p in params.items() if p.default is p.empty and k not in inferred and k not in kwargs]
    if needs:
        pytest.skip(f"model '{name}' needs {needs}, which image data of shape {info.input_shape} doesn't give")
    return build_model({"name": name, **kwargs}, inferred)


def _forward_backward(model: torch.nn.Module, info: DataInfo) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, *info.input_shape)
    out = model(x)
    assert out.shape[0] == 4
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "a parameter got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    return out


@pytest.mark.parametrize("info", [MNIST, CIFAR], ids=["mnist_1x28x28", "cifar_3x32x32"])
@pytest.mark.parametrize("name", MODELS.names())
def test_model_builds_forward_backward(name, info):
    model = _build_for(name, info)
    out = _forward_backward(model, info)
    if "num_classes" in MODELS.parameters(name):
        assert out.shape == (4, info.num_classes)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_eval_mode_is_deterministic(name):
    model = _build_for(name, MNIST).eval()
    x = torch.randn(3, *MNIST.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS.names())
def test_explicit_size_that_disagrees_with_data_is_an_error(name):
    params = MODELS.parameters(name)
    key = next((k for k in INFERRED if k in params and k in MNIST.model_kwargs()), None)
    if key is None:
        pytest.skip(f"model '{name}' takes no size from image data")
    wrong = MNIST.model_kwargs()[key] + 1
    with pytest.raises(ConfigError, match=rf"model\.{key}: the config says {wrong} but the data has"):
        build_model({"name": name, key: wrong}, MNIST.model_kwargs())


def test_required_size_the_data_does_not_give_is_an_error():
    # Regression data gives no num_classes: the model can't guess how many outputs to make.
    info = DataInfo("regression", (1, 28, 28))
    with pytest.raises(ConfigError, match=r"model\.num_classes: model 'mlp' needs it"):
        build_model({"name": "mlp"}, info.model_kwargs())
    model = build_model({"name": "mlp", "num_classes": 1}, info.model_kwargs())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 1)


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
    model = build_model({"name": "lenet", "pool": "avg", "activation": {"name": "leaky_relu", "negative_slope": 0.2}},
                        CIFAR.model_kwargs())
    kinds = {type(m).__name__ for m in model}
    assert {"AvgPool2d", "LeakyReLU"} <= kinds and "MaxPool2d" not in kinds
    act = next(m for m in model if isinstance(m, torch.nn.LeakyReLU))
    assert act.negative_slope == 0.2


@pytest.mark.parametrize("name", MODELS.names())
def test_init_option_applies(name):
    if "init" not in MODELS.parameters(name):
        pytest.skip(f"model '{name}' has no init option")
    model = _build_for(name, MNIST, init={"name": "constant", "val": 0.25})
    weights = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert weights
    for m in weights:
        assert torch.all(m.weight == 0.25)
        assert m.bias is None or torch.all(m.bias == 0)


def test_kaiming_normal_init_scale():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [512], "init": "kaiming_normal"}, MNIST.model_kwargs())
    weight = model[1].weight
    # He init for ReLU: std = sqrt(2 / fan_in); with 400k samples the estimate is within 1%.
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
