"""The Registry class: registration, lookup with did-you-mean, parameters and build."""

import pytest

from nntrain.errors import ConfigError
from nntrain.registry import Registry


def _registry() -> Registry:
    reg = Registry("optimizer")

    @reg.register("adam")
    def adam(params, lr: float = 1e-3, betas=(0.9, 0.999)):
        """Adam."""
        return ("adam", params, lr, betas)

    @reg.register("sgd", note="plain SGD")
    class SGD:
        def __init__(self, params, lr: float, momentum: float = 0.0, *args, **kwargs):
            self.params, self.lr, self.momentum = params, lr, momentum

    return reg


def test_register_twice_is_an_error():
    reg = _registry()
    with pytest.raises(ValueError, match="optimizer 'adam' is registered twice"):
        reg.register("adam")(lambda: None)
    assert reg.names() == ["adam", "sgd"]


def test_unknown_name_lists_choices_and_closest_match():
    reg = _registry()
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adamm'; did you mean 'adam'\? \(choices: adam, sgd\)"):
        reg.get("adamm")
    with pytest.raises(ConfigError) as info:
        reg.build({"name": "zzz"})
    assert "did you mean" not in str(info.value)  # nothing close: no suggestion
    assert "(choices: adam, sgd)" in str(info.value)


def test_names_sorted_and_contains():
    reg = _registry()
    assert reg.names() == ["adam", "sgd"]
    assert "sgd" in reg and "rmsprop" not in reg


def test_parameters_skip_runtime_self_and_varargs():
    reg = _registry()
    assert list(reg.parameters("adam")) == ["lr", "betas"]
    assert list(reg.parameters("sgd")) == ["lr", "momentum"]  # no self, params, *args, **kwargs

    runtime = Registry("augmentation")
    runtime.register("crop", runtime=("generator",))(lambda generator, size=3: (generator, size))
    assert list(runtime.parameters("crop")) == ["size"]


def test_build_passes_config_and_runtime_kwargs():
    reg = _registry()
    assert reg.build({"name": "adam", "lr": 0.5}, params=[1]) == ("adam", [1], 0.5, (0.9, 0.999))
    sgd = reg.build({"name": "sgd", "lr": 0.1, "momentum": 0.9}, params=[2])
    assert (sgd.params, sgd.lr, sgd.momentum) == ([2], 0.1, 0.9)


def test_note_from_argument_or_docstring():
    reg = _registry()
    assert reg.note("adam") == "Adam."
    assert reg.note("sgd") == "plain SGD"


def test_bounds_replace_the_builders_annotations_for_checking():
    from typing import Annotated

    from pydantic import Field

    def huber(delta: float = 1.0, reduction: str = "mean"):
        return delta

    bound = Annotated[float, Field(gt=0)]
    reg = Registry("loss")
    reg.register("plain")(huber)
    reg.register("bounded", bounds={"delta": bound})(huber)
    assert reg.hints("plain") == {"delta": float, "reduction": str}
    assert reg.hints("bounded") == {"delta": bound, "reduction": str}


def _checked_registries() -> tuple[Registry, Registry]:
    """A model registry with a nested activation registry and every hook, as packages set them."""
    acts = Registry("activation", bare_name=True)
    acts.register("relu")(lambda: "relu")
    models = Registry("model", nested={"activation": acts})

    @models.register("net")
    def net(width: int, lr: float = 0.1, activation: str = "relu"):
        if width > 100:
            raise ValueError("width too large for this toy")
        return (width, lr, activation)

    def init_from(value):
        return [] if isinstance(value, str) else [(("checkpoint",), "give a path")]

    models.set_checks(
        dry_build=lambda spec: models.build({"width": 1, **spec}),  # width: what the data would fill in
        extra_keys={"init_from": init_from},
        filled=("width",),
        stand_ins={"lr": ("auto", 0.01)},
    )
    return models, acts


def test_registry_hooks_drive_the_component_checks():
    from nntrain.components import spec_errors

    models, _ = _checked_registries()
    key = ("model",)
    assert spec_errors(key, models, {"name": "net"}) == []  # width is filled in from the data
    assert spec_errors(key, models, {"name": "net", "lr": "auto", "activation": "relu"}) == []
    assert spec_errors(key, models, {"name": "net", "init_from": {}}) == [
        (("model", "init_from", "checkpoint"), "give a path")
    ]
    (where, msg), = spec_errors(key, models, {"name": "net", "activation": "reluu"})
    assert where == ("model", "activation", "name") and "did you mean 'relu'" in msg
    (where, msg), = spec_errors(key, models, {"name": "net", "width": 500})
    assert where == ("model",) and msg == "model 'net' rejects these arguments: width too large for this toy"
    (where, msg), = spec_errors(key, models, {"name": "net", "lr": float("nan")})
    assert where == ("model", "lr") and "finite" in msg
    (where, msg), = spec_errors(key, models, {"name": "net", "width": True})
    assert where == ("model", "width") and "not a boolean" in msg
