"""Model families. Each file registers its builders in MODELS."""

from __future__ import annotations

from typing import Any

from torch import nn

from nntrain.errors import ConfigError
from nntrain.registry import Registry

MODELS = Registry("model")


def build_model(spec: dict[str, Any], inferred: dict[str, Any]) -> nn.Module:
    """Builds `spec`, filling in the sizes the data determines.

    Args:
        spec: the `model` section ({name, **kwargs}).
        inferred: sizes the data says (in_features, in_channels, image_size, num_classes...).

    Raises:
        ConfigError: an explicit size disagrees with the data.
    """
    params = MODELS.parameters(spec["name"])
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    for key, value in inferred.items():
        if key not in params:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"model.{key}: the config says {kwargs[key]!r} but the data has {value!r}; "
                f"remove the key to use the data's value"
            )
        kwargs[key] = value
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ConfigError(
            f"model.{missing[0]}: model '{spec['name']}' needs it and the data doesn't determine it; "
            f"set it in the config"
        )
    return MODELS.build({"name": spec["name"], **kwargs})


# Register the families (import for their side effect).
from nntrain.models import lenet, mlp  # noqa: E402,F401
