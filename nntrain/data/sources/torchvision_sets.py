"""`mnist`, `fashion_mnist` and `cifar10`: torchvision's data sets, read from (or downloaded into) `root`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nntrain.data.info import DataInfo
from nntrain.data.reading import float_images
from nntrain.data.splits import DEFAULT_CONTEXT, SourceContext, Splits
from nntrain.errors import DataError
from nntrain.registries import DATASETS


def image_classification(x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, classes: list[str]) -> Splits:
    """Splits of uint8 images (N, H, W) or (N, C, H, W) and integer labels, with their class names."""
    x_train, x_test = float_images(torch.as_tensor(x_tr)), float_images(torch.as_tensor(x_te))
    info = DataInfo("classification", tuple(x_train.shape[1:]), len(classes), classes)
    return Splits(x_train, torch.as_tensor(y_tr).long(), info, x_test, torch.as_tensor(y_te).long())


def _torchvision(cls_name: str, root: str, download: bool) -> tuple[Any, Any]:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found..."
        raise DataError(
            f"{cls_name} not found under '{Path(root).resolve()}' ({exc}); "
            f"set data.dataset.download: true, or set data.dataset.root to a folder holding it",
            key=("data", "dataset"),
        ) from None
    except OSError as exc:  # no network, permission denied, ...
        raise DataError(
            f"could not download {cls_name} into '{Path(root).resolve()}' ({exc}); "
            f"this machine may have no network: copy the files there and set download: false",
            key=("data", "dataset"),
        ) from None


@DATASETS.register("mnist", runtime=("context",))
def mnist(root: str = "data", download: bool = False, *, context: SourceContext = DEFAULT_CONTEXT) -> Splits:
    """MNIST through torchvision (reads <root>/MNIST/raw)."""
    train, test = _torchvision("MNIST", root, download)
    return image_classification(train.data, train.targets, test.data, test.targets, list(train.classes))


@DATASETS.register("fashion_mnist", runtime=("context",))
def fashion_mnist(root: str = "data", download: bool = False, *, context: SourceContext = DEFAULT_CONTEXT) -> Splits:
    """Fashion-MNIST through torchvision (reads <root>/FashionMNIST/raw)."""
    train, test = _torchvision("FashionMNIST", root, download)
    return image_classification(train.data, train.targets, test.data, test.targets, list(train.classes))


@DATASETS.register("cifar10", runtime=("context",))
def cifar10(root: str = "data", download: bool = False, *, context: SourceContext = DEFAULT_CONTEXT) -> Splits:
    """CIFAR-10 through torchvision (reads <root>/cifar-10-batches-py)."""
    train, test = _torchvision("CIFAR10", root, download)
    to_nchw = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return image_classification(
        to_nchw(train.data), train.targets, to_nchw(test.data), test.targets, list(train.classes)
    )
