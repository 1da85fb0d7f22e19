"""One small registry class: names to builders, with did-you-mean errors."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from nntrain.errors import ConfigError


class Registry:
    """Maps short names to builders (classes or functions).

    Args:
        kind: what the entries are, for messages ("optimizer", "model", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._runtime: dict[str, tuple[str, ...]] = {}
        self._notes: dict[str, str] = {}

    def register(self, name: str, runtime: tuple[str, ...] = (), note: str = "") -> Callable:
        """Decorator registering `fn` under `name`.

        Args:
            name: the name configs use.
            runtime: keyword arguments configs may not set: supplied by nntrain at build time
                (e.g. an optimizer's params), or deprecated ones of a torch built-in.
            note: one line shown by `nntrain list`.
        """

        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = fn
            self._runtime[name] = tuple(runtime)
            self._notes[name] = note or (inspect.getdoc(fn) or "").split("\n")[0]
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: Any) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (choices: {', '.join(self.names())})"

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

    def note(self, name: str) -> str:
        return self._notes[name]

    def build(self, spec: dict[str, Any], **runtime: Any) -> Any:
        """Builds `spec` ({name: ..., **kwargs}, a mapping or a config Component) with runtime kwargs added."""
        kwargs = dict(spec)
        return self.get(kwargs.pop("name"))(**kwargs, **runtime)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
