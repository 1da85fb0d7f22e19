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
from nntrain.registries import DATASETS



@dataclass
class DataInfo:
    """What the data says about itself; models read their sizes from it.

    Input layouts: tabular (F,), images (C, H, W), real-valued sequences (T, F) and token
    sequences (T,) of int64 ids (`vocab_size` set; id 0 is padding). Variable-length real-valued
    sequences are padded at the end with rows that are NaN in every feature; variable-length
    token sequences are padded at the end with id 0. Sources of sequences say whether theirs
    vary in length (`variable_length`): recurrent models skip all padding work when they don't.
    """

    task: str  # "classification", "regression" or "reconstruction"
    input_shape: tuple[int, ...]
    num_classes: Optional[int] = None
    classes: Optional[list[str]] = None
    output_size: Optional[int] = None  # regression: values predicted per sample (targets are (N, output_size))
    vocab_size: Optional[int] = None  # token sequences: ids are in [0, vocab_size), 0 is padding
    # Regression targets in original units are y * target_scale + target_shift (per output).
    target_shift: Optional[list[float]] = None
    target_scale: Optional[list[float]] = None
    # What the source fitted on the training split (a vocabulary, a scaler): plain data, stored
    # in checkpoints and handed back to the source by `nntrain eval` so it prepares data the same way.
    source_state: Optional[dict[str, Any]] = None
    # Sequences: whether some are padded (True: token ids, NaN-padded rows), or all are full length.
    # None: the source doesn't say (and images or tables have no steps); models then assume padding.
    variable_length: Optional[bool] = None

    def model_kwargs(self) -> dict[str, Any]:
        """Sizes a model builder may take from the data instead of the config."""
        kwargs: dict[str, Any] = {"in_features": math.prod(self.input_shape)}
        if len(self.input_shape) == 3:
            channels, height, width = self.input_shape
            kwargs["in_channels"] = channels
            if height == width:
                kwargs["image_size"] = height
        if len(self.input_shape) == 2 and self.vocab_size is None:
            kwargs["input_size"] = self.input_shape[1]  # features per time step
        if self.vocab_size is not None:
            kwargs["vocab_size"] = self.vocab_size
            kwargs["padding_idx"] = PAD
        if self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        if self.output_size is not None:
            kwargs["output_size"] = self.output_size
        if self.variable_length is not None:
            kwargs["variable_length"] = self.variable_length
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": self.classes,
            "output_size": self.output_size,
            "vocab_size": self.vocab_size,
            "target_shift": self.target_shift,
            "target_scale": self.target_scale,
            "source_state": self.source_state,
            "variable_length": self.variable_length,
        }


# Token ids every vocabulary reserves.
PAD, UNK = 0, 1


@dataclass
class Splits:
    """Tensors of a data source, before validation split and normalization.

    A source that must split chronologically, or fit something on the training split only,
    gives its own validation split in `x_val`/`y_val`; otherwise `data.val_split` of the
    training split is held out at random.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    info: DataInfo
    x_test: Optional[torch.Tensor] = None
    y_test: Optional[torch.Tensor] = None
    extra: dict[str, Any] = field(default_factory=dict)
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None


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


# File-based sources (csv, npz, image_folder, text_csv, timeseries_csv) register on import.
from nntrain.data import files  # noqa: E402,F401
