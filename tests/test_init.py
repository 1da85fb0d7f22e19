"""Every activation runs forward; every init scheme applies to linear and convolution weights."""

import pytest
import torch
from torch import nn

from nntrain.models.init import ACTIVATIONS, INITS, apply_init, build_activation


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_forward_backward(name):
    act = ACTIVATIONS.build({"name": name})
    x = torch.linspace(-3, 3, 24).reshape(2, 3, 4).requires_grad_()
    y = act(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)  # nonlinear somewhere on [-3, 3]
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_activation_with_arguments():
    act = build_activation({"name": "leaky_relu", "negative_slope": 0.1})
    assert act(torch.tensor([-1.0])).item() == pytest.approx(-0.1)
    assert isinstance(build_activation("relu"), nn.ReLU)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.Linear(32, 4))


@pytest.mark.parametrize("name", INITS.names())
def test_init_applies_to_weights_and_zeros_biases(name):
    torch.manual_seed(0)
    model = _net()
    before = [p.detach().clone() for p in model.parameters()]
    apply_init(model, {"name": name})
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m, w_before in zip(layers, before[::2]):
        assert torch.isfinite(m.weight).all()
        assert not torch.equal(m.weight, w_before), f"init '{name}' left {m} unchanged"
        assert torch.all(m.bias == 0)


def test_init_none_keeps_torch_defaults():
    torch.manual_seed(0)
    model = _net()
    before = [p.detach().clone() for p in model.parameters()]
    apply_init(model, None)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(
    "spec, check",
    [
        ({"name": "zeros"}, lambda w: torch.all(w == 0)),
        ({"name": "constant", "val": 0.3}, lambda w: torch.allclose(w, torch.full_like(w, 0.3))),
        ({"name": "uniform", "a": 0.1, "b": 0.2}, lambda w: bool((w >= 0.1).all() and (w <= 0.2).all())),
        ({"name": "normal", "std": 0.05}, lambda w: abs(w.std().item() - 0.05) < 0.005),
        # Glorot: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 1024).
        ({"name": "xavier_normal"}, lambda w: abs(w.std().item() / (2 / 1024) ** 0.5 - 1) < 0.05),
        ({"name": "orthogonal"}, lambda w: torch.allclose(w @ w.T, torch.eye(512), atol=1e-4)),
    ],
    ids=lambda v: v["name"] if isinstance(v, dict) else "",
)
def test_init_distribution(spec, check):
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    apply_init(layer, spec)
    assert check(layer.weight.detach())


def test_orthogonal_init_of_convolution_is_delta_orthogonal():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    apply_init(conv, "orthogonal")
    w = conv.weight.detach()
    centre = w[:, :, 1, 1]
    torch.testing.assert_close(centre.T @ centre, torch.eye(8), atol=1e-5, rtol=0)
    w[:, :, 1, 1] = 0
    assert torch.all(w == 0)


def test_recurrent_weights_initialised():
    rnn = nn.LSTM(4, 6)
    apply_init(rnn, {"name": "constant", "val": 0.5})
    for name, p in rnn.named_parameters():
        assert torch.all(p == (0.5 if name.startswith("weight") else 0.0)), name
