"""Every registry nntrain has, declared in one leaf module (mmengine's `registry/root.py`).

Implementations register themselves when their package is imported (`nntrain.models`,
`nntrain.losses`, ...); `nntrain.components` imports them all and validates configs against them.
This module imports nothing of nntrain but the Registry class, so any layer may import it.
"""

from __future__ import annotations

from nntrain.registry import Registry

ACTIVATIONS = Registry("activation", bare_name=True)  # `activation: relu` or `{name: leaky_relu, ...}`
INITS = Registry("init", bare_name=True)
MODELS = Registry("model", nested={"activation": ACTIVATIONS, "init": INITS})
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
AUGMENTATIONS = Registry("augmentation")
NORMALIZERS = Registry("normalizer")

# Registries by the KIND argument of `nntrain list`.
REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "losses": LOSSES,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "augmentations": AUGMENTATIONS,
    "activations": ACTIVATIONS,
    "inits": INITS,
    "normalizers": NORMALIZERS,
}
