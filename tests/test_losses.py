"""Every registered loss computes on outputs/targets of the task and backpropagates; L1/L2 penalties."""

import pytest
import torch
import torch.nn.functional as F

from nntrain.data.info import DataInfo
from nntrain.losses import LOSSES, build_loss, penalized_parameters, penalty

CLASSES = DataInfo("classification", (1, 28, 28), 10)
REGRESSION = DataInfo("regression", (5,))
INDEX_LOSSES = {"cross_entropy", "nll"}  # take class indices, so no regression targets


def _check_backprop(loss: torch.Tensor, outputs: torch.Tensor) -> None:
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()
    assert outputs.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_on_classification_targets(name):
    torch.manual_seed(0)
    outputs = torch.randn(8, 10, requires_grad=True)
    targets = torch.randint(0, 10, (8,))
    loss_fn = build_loss({"name": name}, CLASSES)
    _check_backprop(loss_fn(outputs, targets), outputs)


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n not in INDEX_LOSSES])
def test_loss_on_regression_targets(name):
    torch.manual_seed(0)
    outputs = torch.randn(8, 3, requires_grad=True)
    targets = torch.rand(8, 3)  # in [0, 1]: valid for bce_with_logits too
    loss_fn = build_loss({"name": name}, REGRESSION)
    _check_backprop(loss_fn(outputs, targets), outputs)


def test_nll_on_logits_equals_cross_entropy():
    torch.manual_seed(0)
    outputs, targets = torch.randn(16, 10), torch.randint(0, 10, (16,))
    nll = build_loss({"name": "nll"}, CLASSES)(outputs, targets)
    torch.testing.assert_close(nll, F.cross_entropy(outputs, targets))


def test_regression_loss_on_classes_uses_one_hot_targets():
    torch.manual_seed(0)
    outputs, targets = torch.randn(16, 10), torch.randint(0, 10, (16,))
    mse = build_loss({"name": "mse"}, CLASSES)(outputs, targets)
    torch.testing.assert_close(mse, F.mse_loss(outputs, F.one_hot(targets, 10).float()))


def test_label_smoothing_reaches_the_loss():
    outputs, targets = torch.tensor([[10.0, -10.0]]), torch.tensor([0])
    info = DataInfo("classification", (2,), 2)
    plain = build_loss({"name": "cross_entropy"}, info)(outputs, targets)
    smooth = build_loss({"name": "cross_entropy", "label_smoothing": 0.2}, info)(outputs, targets)
    assert smooth > plain + 1.0


def test_penalty_values_and_parameters():
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.fill_(3.0)
    params = penalized_parameters(layer)
    assert params == [layer.weight]  # no bias by default (timm)
    assert penalty(params, l1=0.5, l2=0.0).item() == pytest.approx(0.5 * 3.0)
    assert penalty(params, l1=0.0, l2=0.1).item() == pytest.approx(0.1 * 5.0)
    everything = penalized_parameters(layer, include_bias_and_norm=True)
    assert penalty(everything, l1=1.0, l2=1.0).item() == pytest.approx((1 + 2 + 3) + (1 + 4 + 9))
