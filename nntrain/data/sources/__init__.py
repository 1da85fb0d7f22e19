"""Data sources: one module per source, each registering its builder in `DATASETS` on import.

The source protocol (what `build_data` relies on; `nntrain.data.splits` defines the types):

- **A builder**, registered with `@DATASETS.register(name, runtime=("context",))`. Its keyword
  arguments before `*` are the config's `data.dataset` keys; their annotations and defaults are
  the schema (`nntrain check` validates them, `nntrain list datasets` shows them).
- **Runtime arguments**: exactly one, the keyword-only `context: SourceContext` (default
  `DEFAULT_CONTEXT`). `build_data` passes it explicitly to every source; configs cannot set it.
  It holds `val_split` (for sources that hold out their own validation split), `seed` (the
  run's seed) and `state` (see below).
- **It returns `Splits`**: training tensors, optionally a test split, and optionally its own
  validation split (`x_val`/`y_val`) when the split must be chronological or must precede
  fitting; otherwise `build_data` holds out `data.val_split` with `splits.holdout`. A source
  needing the random split itself calls that same `holdout(n, context.val_split, context.seed)`.
- **Its task and classes** are in `Splits.info` (`DataInfo`): `task` is one of
  `nntrain.data.info.TASKS` (classification, regression, unlabeled; build_data turns any into
  reconstruction when the config asks). Classification gives `classes` (names, in index order)
  and `num_classes` with y of class indices; regression gives `output_size` with y of shape
  (N, output_size), and `target_shift`/`target_scale` when it scaled its targets.
- **What it fits** (a vocabulary, a scaler) comes from the training split only and is stored as
  plain data (JSON-like) in `DataInfo.source_state`. Checkpoints keep it; `nntrain eval` (and
  later prediction) hands it back as `context.state`, and the source must then use it instead
  of fitting again, so data is prepared exactly as in training.
- **Errors** are `DataError`s naming the config key (`data.dataset.<arg>`) or the file and line.
  Shared reading (paths, text, CSV, npz, images) lives in `nntrain.data.reading`.

Adding a source: one new module here, plus its name in the import line below.
"""

from nntrain.data.sources import (  # noqa: F401 - importing a source registers it
    csv_table,
    embedded,
    image_folder,
    npz,
    text_csv,
    timeseries_csv,
    torchvision_sets,
)
from nntrain.registries import DATASETS

__all__ = ["DATASETS"]
