"""A config as written: YAML read with the line of every key, `--set` overrides, and `Source`,
which says where each key came from.

Reading is bounded: a file over `MAX_BYTES`, nesting deeper than `MAX_DEPTH`, more than
`MAX_VALUES` values once aliases are expanded ("billion laughs") and an alias inside itself are
ConfigErrors, found by walking each YAML node once. The schema is in config.py.

A config may build on others (`base: other.yaml`, see the end of this file): `read_yaml` merges
them, and `Source` names the file of each key, the config's or a base's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from nntrain.errors import ConfigError, Key, dotted, quote, shorten

MAX_BYTES = 1_000_000  # configs are small text files
MAX_DEPTH = 64  # sections nest a few levels; sweep choices add a few more
MAX_VALUES = 100_000  # scalars, lists and mappings after expanding aliases
SET_LIMIT = 240  # a `--set` quoted as the place of an error: long enough for a path
_TEXT = "tag:yaml.org,2002:str"


class Source:
    """Where each key of the raw config came from: a YAML line or a `--set` override.

    Args:
        path: the file (or a description such as `ckpt.pt (stored config)`).
        lines: the 1-based line of each key written in the file.
    """

    def __init__(self, path: str, lines: dict[Key, int] | None = None):
        self.path, self.lines = path, dict(lines or {})
        self.overrides: dict[Key, str] = {}
        self.files: dict[Key, str] = {}  # keys written in a base (`base:`), not in `path`: their file

    def where(self, key: Key) -> str:
        """`file:line` of `key` (or of its closest written parent), or the `--set` that set it.

        An override at or above `key` wins; then one below it (a problem of a section whose key an
        override changed is that override's doing); then the file.
        """
        for i in range(len(key), -1, -1):
            if key[:i] in self.overrides:
                return f"--set {quote(self.overrides[key[:i]], SET_LIMIT)}"
        below = [text for k, text in self.overrides.items() if k[: len(key)] == key]
        if below:
            return f"--set {quote(below[-1], SET_LIMIT)}"
        written = self._written(key)
        if written is None:
            return self.path
        return f"{self.files.get(written, self.path)}:{self.lines[written]}"

    def _written(self, key: Key) -> Key | None:
        """`key` or its closest parent that the file (or a base) has a line for."""
        for i in range(len(key), 0, -1):
            if key[:i] in self.lines:
                return key[:i]
        return None

    def line(self, key: Key) -> int | None:
        """The file line of `key` or of its closest written parent; None if the file has neither."""
        written = self._written(key)
        return None if written is None else self.lines[written]

    def order(self, key: Key) -> float:
        """Sorts problems in file order (the config's, then its bases'), those from overrides or
        without a line last."""
        where = self.where(key)
        written = self._written(key)
        if written is None or where.startswith("--set"):
            return float("inf")
        return self.lines[written] + (MAX_BYTES if written in self.files else 0)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading `1e-3` as a number, as YAML 1.2 does (YAML 1.1 wants `1.0e-3`,
    and a string `lr: '1e-3'` would pass validation and then fail inside torch)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),  # 1e-3, 1.0e30, .5e3
    list("-+0123456789."),
)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield k
            yield v
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _bound(node: yaml.Node) -> str | None:
    """What makes a composed document too big or cyclic, or None; each node is visited once.

    Sizes are counted with aliases expanded (a node's size is remembered, not recounted).
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        ident = id(current)
        if done:
            on_path.discard(ident)
            size[ident] = 1 + sum(size[id(c)] for c in _children(current))
            if size[ident] > MAX_VALUES:
                return f"more than {MAX_VALUES:,} values once its aliases (*name) are expanded"
            continue
        if ident in size:
            continue
        if ident in on_path:
            return f"an alias refers to a section that contains it (line {current.start_mark.line + 1})"
        on_path.add(ident)
        if len(on_path) > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels (line {current.start_mark.line + 1})"
        stack.append((current, True))
        stack.extend((c, False) for c in _children(current) if id(c) not in size)
    return None


def _compose(text: str, name: str, file: bool = True) -> tuple[Any, dict[Key, int]]:
    """(data, line of every key) of one YAML document through `_Loader`, a SafeLoader: tags that
    build Python objects are refused. `name` starts errors: a file's path, or `--set a=b` (`file`
    False: no lines)."""
    loader = _Loader(text)
    what = "invalid YAML" if file else "the value is not valid YAML"
    try:
        node = loader.get_single_node()
        problem = None if node is None else _bound(node)
        if problem:
            raise ConfigError(f"{name}: the YAML is too large or too deep: {problem}")
        if node is None:
            return None, {}
        lines = _line_map(node, name) if file else {}  # before building: keys that are no names
        return loader.construct_document(node), lines
    except RecursionError:
        raise ConfigError(f"{name}: the YAML is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark and file else ""
        problem = (exc.problem or str(exc)).strip()
        if "python/" in problem or "could not determine a constructor" in problem:
            problem += " (only plain YAML is allowed: tags that build Python objects are refused)"
        raise ConfigError(f"{name}{line}: {what}: {quote(problem, 200)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: {what}: {quote(str(exc), 200)}") from None
    finally:
        loader.dispose()


def _line_map(node: yaml.Node, path: str) -> dict[Key, int]:
    """The line of every key; an aliased section is walked once (its keys take the alias's line).

    Raises:
        ConfigError: duplicate keys and keys that are not text, one line each.
    """
    lines: dict[Key, int] = {}
    errors: list[str] = []
    seen: set[int] = set()

    def walk(current: yaml.Node, key: Key) -> None:
        if id(current) in seen:
            return
        seen.add(id(current))
        pairs = current.value if isinstance(current, yaml.MappingNode) else ()
        items = enumerate(current.value) if isinstance(current, yaml.SequenceNode) else ()
        names: set[Any] = set()
        for k_node, v_node in pairs:
            where = f"{path}:{k_node.start_mark.line + 1}"
            if not isinstance(k_node, yaml.ScalarNode) or k_node.tag != _TEXT:
                shown = quote(k_node.value) if isinstance(k_node, yaml.ScalarNode) else "a list or mapping"
                errors.append(f"{where} {dotted(key)}: keys must be names, not {shown}; quote a key that is one")
                continue
            k = k_node.value
            if k in names:
                errors.append(f"{where} {dotted(key + (quote(k),))}: duplicate key")
            names.add(k)
            lines[key + (k,)] = k_node.start_mark.line + 1
            walk(v_node, key + (k,))
        for i, item in items:
            lines[key + (i,)] = item.start_mark.line + 1
            walk(item, key + (i,))

    walk(node, ())
    if errors:
        raise ConfigError("\n".join(errors))
    return lines


def _read_file(path: Path) -> tuple[dict[str, Any], Source]:
    """Reads one config file, without its bases: its mapping and the line of every key.

    Raises:
        ConfigError: missing, unreadable, too large or invalid YAML; not a mapping; duplicate keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config may have at most {MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    raw, lines = _compose(text, str(path))
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least 'name', 'data' and 'model'")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}:1: the config must be a mapping of sections (name, data, model, ...), "
            f"not a {type(raw).__name__}"
        )
    return raw, Source(str(path), lines)


def parse_override(text: str) -> tuple[Key, Any]:
    """`a.b=value` -> (('a', 'b'), YAML-parsed value)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.isidentifier() or p.isdigit() for p in parts):
        raise ConfigError(
            f"--set {quote(text, SET_LIMIT)}: expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=0.01"
        )
    if len(text) > MAX_BYTES:
        raise ConfigError(f"--set {quote(text, SET_LIMIT)}: {len(text):,} characters; at most {MAX_BYTES:,}")
    parsed = _compose(value, f"--set {quote(text, SET_LIMIT)}", file=False)[0] if value.strip() else None
    return tuple(int(p) if p.isdigit() else p for p in parts), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: Source | None = None) -> dict[str, Any]:
    """Applies `--set` overrides to a copy of `raw`; a mapping replaces the whole section."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        set_key(raw, key, value, f"--set {quote(text, SET_LIMIT)}")
        if source is not None:
            source.overrides[key] = text
    return raw


def set_key(raw: dict[str, Any], key: Key, value: Any, where: str) -> None:
    """Sets a dotted key in place: a missing section is created, a value replaces a whole section.

    `where` names the origin (e.g. `--set a.b=1`) in the error raised for a path that can't exist.
    """
    node: Any = raw
    for i, part in enumerate(key):
        if isinstance(node, list) and not (isinstance(part, int) and part < len(node)):
            raise ConfigError(f"{where}: '{dotted(key[:i])}' has {len(node)} items")
        if isinstance(node, dict) and isinstance(part, int):
            raise ConfigError(f"{where}: '{dotted(key[:i])}' is a mapping: its keys are names, not item numbers")
        if i == len(key) - 1:
            break
        nxt = node[part] if isinstance(node, list) else node.get(part)
        if nxt is None and isinstance(node, dict):
            if isinstance(key[i + 1], int):
                raise ConfigError(f"{where}: '{dotted(key[: i + 1])}' is not set; give the whole list")
            nxt = node[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"{where}: '{dotted(key[: i + 1])}' is not a section")
        node = nxt
    node[key[-1]] = value


def raw_problems(raw: Any) -> list[tuple[Key, str]]:
    """Keys that are not text and sections inside themselves, anywhere in a raw config (`--set`
    values and stored configs included); each container is visited once."""
    problems: list[tuple[Key, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Key, Any]] = [((), raw)]
    while stack:
        key, value = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if len(key) > MAX_DEPTH:
            problems.append((key, f"nested deeper than {MAX_DEPTH} levels"))
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(value, dict) and not isinstance(k, str):
                what = f"{type(k).__name__} {shorten(k)}"
                problems.append((key, f"keys must be names, not {what}; quote it if it is one"))
                continue
            stack.append((key + (k,), v))
    return problems


# ---------------------------------------------------------------- base: configs that build on others
# (issue 14) `base: other.yaml` or `base: [a.yaml, b.yaml]` at the top of a config: the bases are
# read first (each with its own bases), later ones merged over earlier ones, then the file's own
# keys over them all. Paths are relative to the file that names them. Mappings merge key by key;
# lists and scalars replace; null sets a section to null (an optional one is then gone), as --set
# does. A component mapping whose `name` differs from the base's replaces it whole: another
# optimizer keeps none of the old one's arguments. Every key keeps the file and line that wrote it.

MAX_BASE_FILES = 32  # files read for one config, its bases and theirs (a chain, a list, repeats)

_Written = dict[Key, tuple[str, int]]  # the (file, line) of every key of a mapping


def read_yaml(path: Path) -> tuple[dict[str, Any], Source]:
    """Reads a config file with its bases: the merged mapping, and the file and line of every key.

    Raises:
        ConfigError: a file missing, unreadable, too large or invalid (not a mapping, duplicate
            keys); a `base` that is no path or list of paths, names a missing file, or leads back
            to a file of its own chain (the files of the cycle are named).
    """
    path = Path(path)
    raw, written = _read_with_bases(path, (), [0])
    source = Source(str(path), {key: line for key, (_, line) in written.items()})
    source.files = {key: file for key, (file, _) in written.items() if file != str(path)}
    return raw, source


def _read_with_bases(path: Path, chain: tuple[Path, ...], count: list[int]) -> tuple[dict[str, Any], _Written]:
    count[0] += 1
    raw, source = _read_file(path)
    written = {key: (str(path), line) for key, line in source.lines.items() if key[0] != "base"}
    if "base" not in raw:
        return raw, written
    where = f"{path}:{source.lines.get(('base',), 1)} base"
    value = raw.pop("base")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(
            f"{where}: expected a path or a list of paths of configs this one builds on, "
            f"e.g. base: course_base.yaml (got {shorten(value)})"
        )
    chain = (*chain, path)
    merged: dict[str, Any] = {}
    merged_written: _Written = {}
    for name in names:
        base = path.parent / name
        if any(base.resolve() == p.resolve() for p in chain):
            raise ConfigError(f"{where}: the bases form a cycle: {' -> '.join(map(str, (*chain, base)))}")
        if not base.is_file():
            raise ConfigError(f"{where}: {base}: config file not found" if not base.exists()
                              else f"{where}: {base}: not a file")
        if count[0] >= MAX_BASE_FILES:
            raise ConfigError(f"{where}: more than {MAX_BASE_FILES} config files with the bases of bases")
        merged, merged_written = _merge(merged, merged_written, *_read_with_bases(base, chain, count))
    return _merge(merged, merged_written, raw, written)


def _merge(
    below: dict[str, Any], below_written: _Written, above: dict[str, Any], above_written: _Written
) -> tuple[dict[str, Any], _Written]:
    """`above` merged over `below`, and where each key of the result was written."""
    merged = _merged(copy.deepcopy(below), above)
    written: _Written = {}
    stack: list[tuple[Key, Any]] = [((), merged)]
    while stack:  # each key's place: the upper file's if it wrote the key, else the lower one's
        key, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            sub = key + (k,)
            place = above_written.get(sub) or below_written.get(sub)
            if place is not None:
                written[sub] = place
            stack.append((sub, v))
    return merged, written


def _merged(below: dict[str, Any], above: dict[str, Any]) -> dict[str, Any]:
    for k, value in above.items():
        old = below.get(k)
        if isinstance(value, dict) and isinstance(old, dict) and not _other_component(old, value):
            below[k] = _merged(old, value)
        else:
            below[k] = copy.deepcopy(value)
    return below


def _other_component(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Both name a component, and not the same one: `new` replaces `old` instead of merging."""
    return "name" in old and "name" in new and old["name"] != new["name"]
