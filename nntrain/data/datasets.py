"""Data sources. Each builder returns a `Splits` of in-memory tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nntrain.errors import DataError
from nntrain.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class DataInfo:
    """What the data says about itself; models read their sizes from it."""

    task: str  # "classification" or "regression"
    input_shape: tuple[int, ...]
    num_classes: Optional[int] = None
    classes: Optional[list[str]] = None

    def model_kwargs(self) -> dict[str, Any]:
        """Sizes a model builder may take from the data instead of the config."""
        kwargs: dict[str, Any] = {"in_features": math.prod(self.input_shape)}
        if len(self.input_shape) == 3:
            channels, height, width = self.input_shape
            kwargs["in_channels"] = channels
            if height == width:
                kwargs["image_size"] = height
        if self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": self.classes,
        }


@dataclass
class Splits:
    """Tensors of a data source, before validation split and normalization."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    info: DataInfo
    x_test: Optional[torch.Tensor] = None
    y_test: Optional[torch.Tensor] = None
    extra: dict[str, Any] = field(default_factory=dict)


def _images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def _classification(x_tr, y_tr, x_te, y_te, classes: list[str]) -> Splits:
    x_train, x_test = _images(torch.as_tensor(x_tr)), _images(torch.as_tensor(x_te))
    info = DataInfo("classification", tuple(x_train.shape[1:]), len(classes), classes)
    return Splits(
        x_train, torch.as_tensor(y_tr).long(), info, x_test, torch.as_tensor(y_te).long()
    )


@DATASETS.register("mnist_small")
def mnist_small() -> Splits:
    """Embedded MNIST subset shipped with nntrain: 6,000 train / 1,000 test (CC BY-SA 3.0)."""
    ref = resources.files("nntrain.data") / "embedded" / "mnist_small.npz"
    with resources.as_file(ref) as path, np.load(path) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return _classification(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        [str(i) for i in range(10)],
    )


def _torchvision(cls_name: str, root: str, download: bool) -> tuple[Any, Any]:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found..."
        raise DataError(
            f"data.dataset: {cls_name} not found under '{Path(root).resolve()}' ({exc}); "
            f"set data.dataset.download: true, or set data.dataset.root to a folder holding it"
        ) from None
    except OSError as exc:  # no network, permission denied, ...
        raise DataError(
            f"data.dataset: could not download {cls_name} into '{Path(root).resolve()}' ({exc}); "
            f"this machine may have no network: copy the files there and set download: false"
        ) from None


@DATASETS.register("mnist")
def mnist(root: str = "data", download: bool = False) -> Splits:
    """MNIST through torchvision (reads <root>/MNIST/raw)."""
    train, test = _torchvision("MNIST", root, download)
    return _classification(train.data, train.targets, test.data, test.targets, list(train.classes))


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str = "data", download: bool = False) -> Splits:
    """Fashion-MNIST through torchvision (reads <root>/FashionMNIST/raw)."""
    train, test = _torchvision("FashionMNIST", root, download)
    return _classification(train.data, train.targets, test.data, test.targets, list(train.classes))


@DATASETS.register("cifar10")
def cifar10(root: str = "data", download: bool = False) -> Splits:
    """CIFAR-10 through torchvision (reads <root>/cifar-10-batches-py)."""
    train, test = _torchvision("CIFAR10", root, download)
    to_nchw = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return _classification(
        to_nchw(train.data), train.targets, to_nchw(test.data), test.targets, list(train.classes)
    )
