"""`csv`: a table of numeric features and a target column (classification or regression)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nntrain.data.csv_reader import csv_header, read_columns
from nntrain.data.info import DataInfo
from nntrain.data.labels import check_class_count
from nntrain.data.reading import Columns, CsvTable, Delimiter, as_list, existing_file
from nntrain.data.splits import DEFAULT_CONTEXT, SourceContext, Splits
from nntrain.errors import DataError
from nntrain.registries import DATASETS


@DATASETS.register("csv", runtime=("context",))
def csv_table(
    path: str,
    target: Columns,
    features: Annotated[list[str], Field(min_length=1)] | None = None,
    task: Literal["classification", "regression"] = "classification",
    test_path: str | None = None,
    delimiter: Delimiter = ",",
    drop_labels: list[str] = [],  # noqa: B006 - never mutated; a list shows as [] in `nntrain list`
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """A table: numeric `features` (default: every other column) and a `target` column.

    Classification targets may be strings or whole numbers ("1" and "1.0" are one class); they
    are mapped to class indices in sorted order and the names kept as the classes. Regression
    targets may be several columns. Rows whose label is in `drop_labels` are skipped.
    `test_path` has the training file's columns.
    """
    targets = as_list(target)
    if task == "classification" and len(targets) != 1:
        raise DataError("a classification target is one column", key=("data", "dataset", "target"))
    train = csv_header(existing_file(path, "path"), delimiter)
    names = features if features is not None else [h for h in train.header if h not in targets]
    _check_features(names, targets, train)

    def load(table: CsvTable, classes: list[str] | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        # `table` is the header; read_columns reads the columns (pyarrow, or the line-accurate
        # reader when the file has a problem to report: csv_reader's docstring).
        t_idx = [table.index(t, "target") for t in targets]
        f_idx = [table.index(f, "features") for f in names]
        if task == "regression":
            cols = read_columns(table.path, delimiter, [f_idx, t_idx], drop_labels=drop_labels, drop_column=t_idx[0])
            return torch.from_numpy(cols.numbers[0]), torch.from_numpy(cols.numbers[1]), []
        cols = read_columns(table.path, delimiter, [f_idx], (t_idx[0], targets[0]), drop_labels)
        classes = classes or check_class_count(cols.labels.classes(), f"{table.path}: column '{targets[0]}'")
        return torch.from_numpy(cols.numbers[0]), cols.labels.encode(classes, table.path), classes

    x, y, classes = load(train, None)
    x_test = y_test = None
    if test_path is not None:
        test = csv_header(existing_file(test_path, "test_path"), delimiter)
        if features is None:
            _check_same_columns(train, test)
        x_test, y_test, _ = load(test, classes or None)
    # What `nntrain predict` needs to read new rows: the feature columns in order, and the others.
    state = {"features": list(names), "targets": targets, "columns": list(train.header)}
    if task == "regression":
        info = DataInfo("regression", tuple(x.shape[1:]), output_size=y.shape[1], source_state=state)
    else:
        info = DataInfo("classification", tuple(x.shape[1:]), len(classes), classes, source_state=state)
    return Splits(x, y, info, x_test, y_test)


def _check_features(names: list[str], targets: list[str], table: CsvTable) -> None:
    """A DataError if there is no feature, or a target is one."""
    if not names:
        raise DataError(
            f"{table.path} has no column besides the target ({', '.join(targets)}); a model needs at least one feature",
            key=("data", "dataset", "features"),
        )
    leaked = [t for t in targets if t in names]
    if leaked:
        raise DataError(
            f"'{leaked[0]}' is the target; a model given its own target as a "
            f"feature learns nothing useful (remove it from features)",
            key=("data", "dataset", "features"),
        )


def _check_same_columns(train: CsvTable, test: CsvTable) -> None:
    """With every other column a feature, the test file must have the training file's columns."""
    missing = [h for h in train.header if h not in test.header]
    extra = [h for h in test.header if h not in train.header]
    if missing or extra:
        diff = "; ".join(
            f"{what}: {', '.join(cols)}" for what, cols in (("missing", missing), ("extra", extra)) if cols
        )
        raise DataError(
            f"{test.path}:1: the columns differ from {train.path}'s ({diff}); "
            f"give the same columns, or list data.dataset.features",
            key=("data", "dataset", "test_path"),
        )
