"""Imbalanced classes: classes named in configs, per-class weights, a seeded class subsample and the
sample weights of the balanced sampler.

Configs name a class by its name as the data gives it (`DataInfo.classes`: "3" for the embedded
MNIST subset and for CSV labels, "3 - three" for torchvision's MNIST) or by its index ("3" or 3),
the name winning when both would match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nntrain.errors import ConfigError, Key, did_you_mean

# Offset of the class subsample's generator from the run's seed: another stream than the
# validation split's and the data order's.
_SUBSAMPLE_SEED = 7_919


def class_index(name: Any, classes: Sequence[str], key: Key) -> int:
    """The index of the class a config names: its name, else its index; ConfigError otherwise."""
    text = str(name)
    if text in classes:
        return list(classes).index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
        return int(text)
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    hint = did_you_mean(text, list(classes))
    raise ConfigError(f"unknown class '{text}'{hint} (classes: {shown}; or an index 0-{len(classes) - 1})", key=key)


def class_counts(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Training samples per class (float64, on the host)."""
    return torch.bincount(targets.detach().cpu().long(), minlength=num_classes).double()


def inverse_frequency(counts: torch.Tensor) -> torch.Tensor:
    """n / (k * n_c): 1.0 for every class of a balanced split, above 1 for rare classes."""
    return counts.sum() / (len(counts) * counts)


def per_class(
    value: Any, classes: Sequence[str], key: Key, default: float = 1.0
) -> list[float]:
    """An explicit per-class list (one number per class) or mapping by class (unnamed classes get
    `default`) as one number per class, in class order."""
    k = len(classes)
    if isinstance(value, Mapping):
        out = [default] * k
        for name, v in value.items():
            out[class_index(name, classes, key + (name,))] = float(v)
        return out
    values = [float(v) for v in value]
    if len(values) != k:
        raise ConfigError(f"gives {len(values)} values for {k} classes; give one per class, in class order", key=key)
    return values


def subsample_classes(
    x: torch.Tensor, y: torch.Tensor, fractions: Mapping[Any, float], classes: Sequence[str], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keeps `fractions[c]` of the samples of each named class (at least one), drawn with `seed`.

    The kept samples stay in their original order; classes not named are kept whole.
    """
    gen = torch.Generator().manual_seed(seed + _SUBSAMPLE_SEED)
    labels = y.cpu()
    drop = torch.zeros(len(labels), dtype=torch.bool)
    for name, fraction in fractions.items():
        c = class_index(name, classes, ("data", "class_fraction", name))
        rows = (labels == c).nonzero().flatten()
        if len(rows) == 0:
            continue
        keep = max(1, round(fraction * len(rows)))
        order = torch.randperm(len(rows), generator=gen)
        drop[rows[order[keep:]]] = True
    kept = (~drop).nonzero().flatten().to(x.device)
    return x[kept], (x[kept] if y is x else y[kept])


def balanced_sample_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample draw weights 1 / n_c: every class is drawn equally often in expectation."""
    counts = class_counts(targets, num_classes)
    return (1.0 / counts.clamp_min(1.0))[targets.detach().cpu().long()]

