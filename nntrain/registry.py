"""One small registry class: names to builders, with did-you-mean errors and validation hooks."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from nntrain.errors import ConfigError, Key, unknown

# A check of one config value: (key under the value, message) for each problem; [] when fine.
Check = Callable[[Any], list[tuple[Key, str]]]


class Registry:
    """Maps short names to builders (classes or functions), and says how to check a config entry.

    Args:
        kind: what the entries are, for messages ("optimizer", "model", ...).
        bare_name: a config may give an entry by its name alone (`activation: relu`).
        nested: arguments of every entry that name an entry of another registry
            (`{"activation": ACTIVATIONS}`), checked against that registry.

    The implementation package adds what only it knows with `set_checks` (a dry build, keys
    every entry takes, arguments nntrain fills in, placeholder values).
    """

    def __init__(self, kind: str, bare_name: bool = False, nested: dict[str, Registry] | None = None):
        self.kind, self.bare_name, self.nested = kind, bare_name, dict(nested or {})
        self.dry_build: Callable[[dict[str, Any]], Any] | None = None
        self.extra_keys: dict[str, Check] = {}
        self.filled: tuple[str, ...] = ()
        self.stand_ins: dict[str, tuple[Any, Any]] = {}
        self._entries: dict[str, Callable[..., Any]] = {}
        self._runtime: dict[str, tuple[str, ...]] = {}
        self._notes: dict[str, str] = {}
        self._bounds: dict[str, dict[str, Any]] = {}
        self._hints: dict[str, dict[str, Any]] = {}

    def register(self, name: str, runtime: tuple[str, ...] = (), note: str = "",
                 bounds: dict[str, Any] | None = None) -> Callable:
        """Decorator registering `fn` under `name`.

        Args:
            name: the name configs use.
            runtime: keyword arguments configs may not set: supplied by nntrain at build time
                (e.g. an optimizer's params), or deprecated ones of a torch built-in.
            note: one line shown by `nntrain list`.
            bounds: annotations that replace the builder's own for checking configs, for builders
                whose annotations can't be edited (`{"lr": Annotated[float, Field(ge=0)]}` on torch's).
        """

        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = fn
            self._runtime[name] = tuple(runtime)
            self._notes[name] = note or (inspect.getdoc(fn) or "").split("\n")[0]
            self._bounds[name] = dict(bounds or {})
            return fn

        return deco

    def set_checks(self, dry_build: Callable[[dict[str, Any]], Any] | None = None,
                   extra_keys: dict[str, Check] | None = None, filled: tuple[str, ...] = (),
                   stand_ins: dict[str, tuple[Any, Any]] | None = None) -> None:
        """Validation hooks, set by the package that registers the entries.

        Args:
            dry_build: builds a checked spec cheaply so the builder's own checks run before any
                data loads; raises ValueError, TypeError or KeyError for a bad spec.
            extra_keys: keys every entry takes besides its builder's arguments, with their check.
            filled: arguments nntrain supplies when a config leaves them out (from the data).
            stand_ins: `{arg: (placeholder, value)}`: a config value resolved before building
                (`lr: auto`), checked as `value`.
        """
        self.dry_build = dry_build
        self.extra_keys = dict(extra_keys or {})
        self.filled = tuple(filled)
        self.stand_ins = dict(stand_ins or {})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: Any) -> str:
        return unknown(self.kind, name, self.names())

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword arguments a config may set for `name` (runtime ones excluded)."""
        fn = self.get(name)
        target = fn.__init__ if inspect.isclass(fn) else fn
        params = inspect.signature(target).parameters
        skip = set(self._runtime[name]) | {"self", "params"}
        return {
            k: p
            for k, p in params.items()
            if k not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def hints(self, name: str) -> dict[str, Any]:
        """Each argument's annotation (with `Annotated` bounds), the registered `bounds` first;
        {} for annotations that can't be resolved."""
        if name not in self._hints:
            fn = self.get(name)
            try:
                found = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn, include_extras=True)
            except Exception:  # noqa: BLE001 - unresolvable annotations: skip the type check
                found = {}
            self._hints[name] = {**found, **self._bounds[name]}
        return self._hints[name]

    def note(self, name: str) -> str:
        return self._notes[name]

    def build(self, spec: dict[str, Any], **runtime: Any) -> Any:
        """Builds `spec` ({name: ..., **kwargs}, a mapping or a config Component) with runtime kwargs added."""
        kwargs = dict(spec)
        return self.get(kwargs.pop("name"))(**kwargs, **runtime)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
