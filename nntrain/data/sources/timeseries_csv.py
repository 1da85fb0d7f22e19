"""`timeseries_csv`: forecasting windows from a CSV whose rows are in time order.

The scaler is fitted on the training rows only and kept in `DataInfo.source_state` (`shift`,
`scale` per column, and the `rows` of each part), so `nntrain eval` scales as training did.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from nntrain.data.csv_reader import csv_header, read_columns
from nntrain.data.info import DataInfo
from nntrain.data.reading import Columns, Delimiter, as_list, check_memory, existing_file
from nntrain.data.splits import DEFAULT_CONTEXT, Fraction, PositiveInt, SourceContext, Splits
from nntrain.errors import DataError
from nntrain.registries import DATASETS

Scale = Literal["standardize", "minmax", "none"]


def windows(values: np.ndarray, inputs: list[int], targets: list[int], window: int, horizon: int,
            first: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows whose targets lie in rows [first, end): x (N, window, len(inputs)), y (N, horizon * len(targets)).

    Sample t has inputs rows [t - window, t) and targets rows [t, t + horizon), flattened
    time step by time step.
    """
    starts = list(range(max(first, window), end - horizon + 1))
    if not starts:
        return torch.zeros((0, window, len(inputs))), torch.zeros((0, horizon * len(targets)))
    x = np.stack([values[t - window : t][:, inputs] for t in starts])
    y = np.stack([values[t : t + horizon][:, targets].reshape(-1) for t in starts])
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


@DATASETS.register("timeseries_csv", runtime=("context",))
def timeseries_csv(
    path: str,
    columns: Columns,
    target: Columns | None = None,
    window: PositiveInt = 16,
    horizon: PositiveInt = 1,
    test_split: Fraction = 0.15,
    scale: Scale = "standardize",
    delimiter: Delimiter = ",",
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """Forecasting windows from a CSV whose rows are in time order.

    Each sample is `window` rows of `columns` and the next `horizon` values of `target`
    (default: the same columns). The series is cut chronologically: the first part trains,
    the next `data.val_split` of the rows validates and the last `test_split` tests. A sample
    belongs to the part holding its targets; training samples never see a validation or test
    value, while validation and test samples take their inputs from the rows before them, as a
    forecaster would. Scaling statistics come from the training rows only; metrics are
    reported in the original units.
    """
    table = csv_header(existing_file(path), delimiter)  # the header; the columns: read_columns
    inputs, outputs = as_list(columns), as_list(target if target is not None else columns)
    names = list(dict.fromkeys(inputs + outputs))
    cols = [table.index(c, "columns") for c in names]
    values = read_columns(table.path, delimiter, [cols], empty=None).numbers[0].astype(np.float64)
    n = len(values)
    n_test, n_val = round(test_split * n), round(context.val_split * n)
    train_end, val_end = n - n_val - n_test, n - n_test
    if train_end < window + horizon or n_val < horizon or (n_test and n_test < horizon):
        raise DataError(
            f"{table.path}: {n} rows split {train_end}/{n_val}/{n_test} (train/val/test) leave no complete "
            f"window of {window} + {horizon} rows in some part; lower window, horizon or the split fractions"
        )
    values_per_sample = window * len(inputs) + horizon * len(outputs)
    check_memory(  # one window per row at most, stacked as float64 and then kept as float32
        n * values_per_sample * 12, f"{n:,} windows of {window:,} rows x {len(inputs)} column(s)",
        ("data", "dataset", "window"), "lower window",
    )
    if context.state is not None:  # nntrain eval: the training run's statistics
        shift = np.array([context.state["shift"][c] for c in names])
        spread = np.array([context.state["scale"][c] for c in names])
    else:
        shift, spread = _fit_scaler(values[:train_end], scale)
    scaled = (values - shift) / spread
    col = {c: i for i, c in enumerate(names)}
    i_in, i_out = [col[c] for c in inputs], [col[c] for c in outputs]
    x, y = windows(scaled, i_in, i_out, window, horizon, 0, train_end)
    x_val, y_val = windows(scaled, i_in, i_out, window, horizon, train_end, val_end)
    x_test = y_test = None
    if n_test:
        x_test, y_test = windows(scaled, i_in, i_out, window, horizon, val_end, n)
    info = DataInfo(
        "regression", (window, len(inputs)), output_size=horizon * len(outputs),
        target_shift=[float(shift[i]) for _ in range(horizon) for i in i_out],
        target_scale=[float(spread[i]) for _ in range(horizon) for i in i_out],
        source_state={
            "shift": {c: float(shift[i]) for c, i in col.items()},
            "scale": {c: float(spread[i]) for c, i in col.items()},
            "rows": {"train": [0, train_end], "val": [train_end, val_end], "test": [val_end, n]},
            "columns": inputs, "targets": outputs,  # `nntrain predict` reads new series by name
        },
        variable_length=False,  # every window is `window` rows
    )
    return Splits(x, y, info, x_test, y_test, x_val=x_val, y_val=y_val)


def _fit_scaler(rows: np.ndarray, scale: Scale) -> tuple[np.ndarray, np.ndarray]:
    """(shift, spread) per column of the training rows; a spread of ~0 becomes 1."""
    if scale == "standardize":
        shift, spread = rows.mean(0), rows.std(0)
    elif scale == "minmax":
        shift, spread = rows.min(0), rows.max(0) - rows.min(0)
    else:
        shift, spread = np.zeros(rows.shape[1]), np.ones(rows.shape[1])
    return shift, np.where(spread > 1e-12, spread, 1.0)
