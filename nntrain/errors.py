"""Errors with messages fit for users, and the helpers every message uses; `cli.py` turns the errors
into exit codes.

An error about a config value carries its dotted key as data (`ConfigError(msg, key=("optimizer",
"lr"))`); whoever knows where the config came from attaches the place (`locate`), and the message
reads `configs/a.yaml:12 optimizer.lr: msg`.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Callable, Iterable
from typing import Any

Key = tuple[str | int, ...]  # a dotted config key as parts: ("data", "augment", 0, "name")

QUOTE_LIMIT = 80  # the longest quote of a user's value in a message


def dotted(key: Key) -> str:
    """`("data", "augment", 0)` -> `data.augment.0`."""
    return ".".join(str(k) for k in key) or "<top level>"


def did_you_mean(name: Any, choices: Iterable[Any]) -> str:
    """`"; did you mean 'x'?"` for the choice closest to `name`, or "" when none is close."""
    text, choices = str(name), [str(c) for c in choices]
    if len(text) > QUOTE_LIMIT:  # no choice is that long; and difflib is quadratic
        return ""
    # A choice the name extends or abbreviates first (`val/accuracy` -> `val/acc`, `epoch` -> `epochs`).
    prefixed = [c for c in choices if min(len(c), len(text)) >= 3 and (text.startswith(c) or c.startswith(text))]
    close = difflib.get_close_matches(text, prefixed or choices, n=1, cutoff=0.0 if prefixed else 0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(what: str, name: Any, choices: Iterable[Any], label: str = "choices") -> str:
    """`unknown optimizer 'adamm'; did you mean 'adam'? (choices: adam, sgd)`."""
    choices = [str(c) for c in choices]
    return f"unknown {what} '{quote(name)}'{did_you_mean(name, choices)} ({label}: {', '.join(choices)})"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_LIMIT


def shorten(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, at most `limit` characters: huge or self-referencing values are never
    expanded (reprlib stops early)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(text: Any, limit: int = QUOTE_LIMIT) -> str:
    """`str(text)` cut to `limit` characters (for names and keys a user wrote)."""
    text = text if isinstance(text, str) else shorten(text, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NntrainError(Exception):
    """Base class: the message is shown to the user as is.

    Args:
        message: what is wrong and what is allowed.
        key: the dotted config key it is about, if any.
        where: where that key was written (`cfg.yaml:12`, `--set a.b=1`); see `locate`.
    """

    exit_code = 1

    def __init__(self, message: str, key: Key | None = None, where: str | None = None):
        super().__init__(message)
        self.message, self.key, self.where = message, None if key is None else tuple(key), where

    def __str__(self) -> str:
        text = self.message if self.key is None else f"{dotted(self.key)}: {self.message}"
        return f"{self.where} {text}" if self.where else text

    def locate(self, where: Callable[[Key], str]) -> NntrainError:
        """Attaches the place of the error's key (`where(key)`), once; returns self."""
        if self.key is not None and self.where is None:
            self.where = where(self.key)
        return self


class ConfigError(NntrainError):
    """A bad config, override or command-line usage (exit code 2)."""

    exit_code = 2


class DataError(NntrainError):
    """Data that is missing or doesn't fit the config (exit code 2)."""

    exit_code = 2


class CheckpointError(NntrainError):
    """A checkpoint that is missing, damaged or not nntrain's (exit code 2)."""

    exit_code = 2


class RunError(NntrainError):
    """A failure while training (exit code 1)."""

    exit_code = 1


class Interrupted(NntrainError):
    """SIGINT (exit 130) or SIGTERM (exit 143) stopped training after saving `last.pt`."""

    def __init__(self, message: str, signum: int, run_dir: str):
        super().__init__(message)
        self.exit_code = 128 + signum
        self.run_dir = run_dir


class ConfigWarning(UserWarning):
    """An option that has no effect, or a bad effect, where the run happens (CUDA-only options on
    the CPU); shown as one line on stderr, and the run goes on."""
