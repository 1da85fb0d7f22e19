"""Data, from files to batches.

- `info.py`: `DataInfo` (what the data says about itself, the task values) and `INFERRED`
  (the model arguments taken from the data). A leaf: models and losses import it.
- `splits.py`: what a source receives (`SourceContext`) and returns (`Splits`); the seeded
  validation split (`holdout`).
- `sources/`: one module per data source, registered in `DATASETS`; its docstring is the source protocol.
- `reading.py`: reading files (paths, UTF-8 text, CSV, npz, images); `labels.py`: class labels.
- `loaders.py`: `build_data` (source, validation split, normalization) and `TensorLoader` (batches).
- `transforms.py`: normalizers; `augment.py`: augmentations of training batches (builds on transforms).
- `embedded/`: the data sets shipped with nntrain, each with its attribution and licence.
"""
