"""A sweep file read as a YAML document that knows the line of every key, for errors that point at it.

Reading refuses what is not a sweep file before any validation: missing or unreadable files, files
over ``MAX_FILE_BYTES``, text that is not UTF-8, malformed YAML, values nested deeper than ``MAX_DEPTH``,
numbers longer than ``MAX_NUMBER_CHARS``, lists or mappings used as keys, duplicate keys, and documents
that expand to more than ``MAX_YAML_NODES`` values (alias bombs). Depth and numbers are checked on the
parser's event stream, before anything is built from it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from gridsearch.errors import UserError
from gridsearch.spec.params import coerce_type

MAX_FILE_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
"""Guards against huge files and alias bombs (a few anchors expanding to billions of values)."""
MAX_DEPTH = 20
"""The deepest nesting of lists and mappings a sweep file may have (its own need at most 6)."""
MAX_NUMBER_CHARS = 100
"""The longest number a sweep file may write (Python refuses to read integers of over 4,300 digits)."""
NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML has it (a 1 MB file in well under a second), else PyYAML's own."""


class _Loader(_Parser):  # type: ignore[misc, valid-type]
    """YAML's safe loader; a value its constructors cannot make (``!!int zz``, a date in month 13) is a YAML
    error at its line, not a Python exception."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this {kind}: {exc}", node.start_mark
            ) from None


Location = tuple[str | int, ...]
"""Where a value is in the document: its keys and list indices from the top, e.g. ("grid", 0, "lr")."""


class Document:
    """A parsed sweep file: its ``data``, its ``text`` and the line of every key and list item."""

    def __init__(self, path: Path, data: Any, text: str, lines: dict[Location, int]):
        self.path = path
        self.data = data
        self.text = text
        self.lines = lines

    def fail(self, at: Location, message: str) -> UserError:
        """The error for the value at ``at``: ``<file>:<line>: <dotted key>: <message>``."""
        line = next((self.lines[at[:n]] for n in range(len(at), -1, -1) if at[:n] in self.lines), None)
        where = f"{self.path}:{line}" if line else str(self.path)
        return UserError(f"{where}: {dotted(at)}: {message}")

    def scalar(self, mapping: dict, key: str, expected: type, default: Any = None, at: Location = ()) -> Any:
        """``mapping[key]`` (at ``at``) as ``expected``, or ``default`` if absent."""
        if key not in mapping:
            return default
        try:
            return coerce_type(mapping[key], expected)
        except ValueError as exc:
            raise self.fail((*at, key), str(exc)) from None


def read_document(path: Path, max_items: int | None = None) -> Document:
    """The sweep file at ``path``, parsed; :class:`UserError` if it cannot be read as one, or if it has a list
    of more than ``max_items`` values (a grid that long has more trials than ``--max-trials``)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such sweep file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read sweep file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{path}: sweep file is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines: dict[Location, int] = {}
    try:
        _check_events(text, path, max_items)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            _index_lines(node, (), lines, path, [0])
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: malformed YAML: {problem}") from None
    return Document(path, data, text, lines)


def _check_events(text: str, path: Path, max_items: int | None) -> None:
    """Refuse values nested deeper than ``MAX_DEPTH``, numbers longer than ``MAX_NUMBER_CHARS`` and lists
    of more than ``max_items`` values, reading the parser's events only: nothing is built from them yet
    (building a deep document would exhaust Python's stack, a long one take seconds)."""
    resolver = yaml.resolver.Resolver()
    items: list[int | None] = []  # per open collection: a list's values so far (None: a mapping)
    for event in yaml.parse(text, Loader=_Parser):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.NodeEvent) and items and items[-1] is not None:
            items[-1] += 1
            if max_items is not None and items[-1] > max_items:
                raise UserError(
                    f"{path}:{line}: a list of more than {max_items:,} values, more than --max-trials "
                    f"{max_items:,} allows; raise --max-trials if you mean it"
                )
        if isinstance(event, yaml.CollectionStartEvent):
            items.append(0 if isinstance(event, yaml.SequenceStartEvent) else None)
            if len(items) > MAX_DEPTH:
                raise UserError(f"{path}:{line}: lists and mappings nested more than {MAX_DEPTH} deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            items.pop()
        elif isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_NUMBER_CHARS:
            tag = event.tag
            if tag in (None, "!"):
                tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
            if tag in NUMBER_TAGS:
                raise UserError(
                    f"{path}:{line}: a number of {len(event.value):,} characters (at most {MAX_NUMBER_CHARS})"
                )


def _index_lines(node: yaml.Node | None, at: Location, lines: dict, path: Path, count: list[int]) -> None:
    """Record the line of ``node`` and everything under it, refusing duplicate keys and alias bombs."""
    count[0] += 1
    if count[0] > MAX_YAML_NODES:
        raise UserError(
            f"{path}: the YAML expands to more than {MAX_YAML_NODES:,} values (too large, or an alias bomb)"
        )
    if node is None:
        return
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise UserError(
                    f"{path}:{key_node.start_mark.line + 1}: {dotted(at)}: a key must be a name, "
                    "not a list or a mapping"
                )
            key = key_node.value
            if key in seen:
                raise UserError(f"{path}:{key_node.start_mark.line + 1}: {dotted((*at, key))}: duplicate key")
            seen.add(key)
            lines[(*at, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*at, key), lines, path, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*at, index), lines, path, count)


def dotted(at: Location) -> str:
    """``at`` as errors show it: ``grid[0].lr``."""
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def suggest(name: str, known: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, or ''."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
