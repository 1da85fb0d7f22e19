"""What the data says about itself (`DataInfo`), and the model arguments taken from it (`INFERRED`).

A leaf module: models and losses read sizes from a `DataInfo` without importing any data source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Every value `DataInfo.task` takes:
#   classification: y holds class indices (N,) int64 in [0, num_classes); `classes` names them.
#   regression: y holds (N, output_size) float32 values, scaled back by target_shift/target_scale.
#   reconstruction: y is x itself (set by `build_data` when the config says `data.task: reconstruction`).
#   unlabeled: the source has inputs only (npz with `y_key: null`); y is a placeholder of zeros
#       and training needs `data.task: reconstruction`.
TASKS = ("classification", "regression", "reconstruction", "unlabeled")

# Token ids every vocabulary reserves.
PAD, UNK = 0, 1

# Model arguments the data determines: optional in configs, checked against the data. The one
# list of them: `DataInfo.model_kwargs` gives exactly these keys, and config validation
# (nntrain.components) lets models leave them out.
INFERRED = (
    "in_features", "in_channels", "image_size", "num_classes",
    "input_size", "vocab_size", "padding_idx", "output_size", "variable_length",
)


@dataclass
class DataInfo:
    """What the data says about itself; models read their sizes from it.

    Input layouts: tabular (F,), images (C, H, W), real-valued sequences (T, F) and token
    sequences (T,) of int64 ids (`vocab_size` set; id 0 is padding). Variable-length real-valued
    sequences are padded at the end with rows that are NaN in every feature; variable-length
    token sequences are padded at the end with id 0. Sources of sequences say whether theirs
    vary in length (`variable_length`): recurrent models skip all padding work when they don't.
    """

    task: str  # one of TASKS
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    classes: list[str] | None = None
    output_size: int | None = None  # regression: values predicted per sample (targets are (N, output_size))
    vocab_size: int | None = None  # token sequences: ids are in [0, vocab_size), 0 is padding
    # Regression targets in original units are y * target_scale + target_shift (per output).
    target_shift: list[float] | None = None
    target_scale: list[float] | None = None
    # What the source fitted on the training split (a vocabulary, a scaler): plain data, stored
    # in checkpoints and handed back to the source (`SourceContext.state`) by `nntrain eval`, so
    # it prepares data the same way.
    source_state: dict[str, Any] | None = None
    # Sequences: whether some are padded (True: token ids, NaN-padded rows), or all are full length.
    # None: the source doesn't say (and images or tables have no steps); models then assume padding.
    variable_length: bool | None = None

    def model_kwargs(self) -> dict[str, Any]:
        """Sizes a model builder may take from the data instead of the config (keys of INFERRED)."""
        values = self._inferred()
        return {key: values[key] for key in INFERRED if values[key] is not None}

    def _inferred(self) -> dict[str, Any]:
        """Every INFERRED argument, None where the data doesn't determine it."""
        shape = self.input_shape
        image = len(shape) == 3
        tokens = self.vocab_size is not None
        return {
            "in_features": math.prod(shape),
            "in_channels": shape[0] if image else None,
            "image_size": shape[1] if image and shape[1] == shape[2] else None,
            "num_classes": self.num_classes,
            "input_size": shape[1] if len(shape) == 2 and not tokens else None,  # features per time step
            "vocab_size": self.vocab_size,
            "padding_idx": PAD if tokens else None,
            "output_size": self.output_size,
            "variable_length": self.variable_length,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints (the constructor's arguments, input_shape as a list)."""
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
