"""Class labels of classification sources: names in a stable order and their indices."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nntrain.errors import DataError

# The most classes a source may give: more is a regression target or a column of ids, not classes.
MAX_CLASSES = 100_000


def class_names(values: list[str]) -> list[str]:
    """Distinct labels, sorted numerically when they are all integers ("2" before "10")."""
    unique = set(values)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def check_class_count(classes: list[str], where: object) -> list[str]:
    """`classes`; more than MAX_CLASSES of them is an error naming `where`."""
    if len(classes) > MAX_CLASSES:
        raise DataError(
            f"{where}: {len(classes)} distinct labels, more than the {MAX_CLASSES} classes allowed; "
            f"for a numeric target set data.dataset.task: regression"
        )
    return classes


def csv_labels(cells: list[str], lines: list[int], column: str, path: Path) -> list[str]:
    """The labels of a CSV column, one per row: stripped; an empty one is an error naming its line.

    Labels that are all numbers are classes by value: "1", "1.0" and "01" are one class, "1";
    a fractional number can't be a class (an error naming its line).
    """
    labels = [cell.strip() for cell in cells]
    for label, line in zip(labels, lines):
        if not label:
            raise DataError(f"{path}:{line}: column '{column}' is empty; every row needs a label")
    try:
        values = [float(label) for label in labels]
    except ValueError:
        return labels  # names, taken as written
    for value, label, line in zip(values, labels, lines):
        if not math.isfinite(value) or value != round(value):
            raise DataError(
                f"{path}:{line}: column '{column}' holds {label!r}, which can't be a class (classes are "
                f"names or whole numbers); for a numeric target set data.dataset.task: regression"
            )
    return [_whole(label, value) for label, value in zip(labels, values)]


def _whole(label: str, value: float) -> str:
    """A whole number's canonical text: exact for integer literals ("007" -> "7"), else via the float."""
    try:
        return str(int(label))
    except ValueError:
        return str(int(value))


def encode_labels(values: list[str], classes: list[str], where: object) -> torch.Tensor:
    """Class indices (N,) int64 of `values`; a label outside `classes` is an error naming `where`."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not among the training labels {classes}")
    return torch.tensor([index[v] for v in values], dtype=torch.long)
