"""Strict YAML for configs: PyYAML's SafeLoader minus what lets a config say one thing and do
another, or cost far more to read than its size.

- A duplicate key is an error. PyYAML keeps the last one, so a ``max_share: 1.0`` under a
  ``max_share: 0.15`` silently loosened a gate, and a second ``audit:`` block dropped the first
  one's proxies.
- Anchors, aliases and merge keys are refused. A config has no need for them, and ten nested
  aliases in 1 KB (a "billion laughs") expand into gigabytes once anything walks the value.
- Nesting depth and integer size are bounded, so that neither ends as a RecursionError or a
  ValueError (exit 3, "a bug") instead of a message naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sensaudit.core.errors import ConfigError, brief

MAX_DEPTH = 50  # a sensaudit config nests 4 levels deep; 50 is far from both it and recursion
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHOWN = 40  # characters of a key or anchor name quoted in a message


class _Refused(yaml.YAMLError):
    """Valid YAML that a sensaudit config does not accept; ``str()`` is the message."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing anchors, aliases and deep nesting while it composes the document
    (before any value is built), and scalars its constructors cannot build."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # types-PyYAML leaves Parser.peek_event unannotated (yaml-stubs/parser.pyi), so the
        # event is Any here; PyYAML gives it a start_mark, and an anchor where it can have one.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"YAML aliases (*{_cut(event.anchor or '')}) are not allowed in a "
                           f"sensaudit config; write the value out (line {line})")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"YAML anchors (&{_cut(event.anchor or '')}) are not allowed in a "
                           f"sensaudit config (line {line})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"the config nests more than {MAX_DEPTH} levels deep "
                               f"(line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError):
            # PyYAML's scalar constructors raise these on values their pattern let through
            # ("2024-13-45" as a date, "!!bool maybe"): bad input, not a bug.
            mark = node.start_mark
            kind = str(node.tag).rsplit(":", 1)[-1]
            shown = f"'{_cut(node.value)}'" if isinstance(node, ScalarNode) else "the value"
            raise _Refused(f"cannot read {shown} as a YAML {kind} (line {mark.line + 1}, "
                           f"column {mark.column + 1})") from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python converts at most 4300 decimal digits to an integer
            mark = node.start_mark
            raise _Refused(f"the integer at line {mark.line + 1}, column {mark.column + 1} "
                           "is too large") from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def load_yaml(text: str, source: str | Path) -> Any:
    """Parse one YAML document strictly; every refusal is a one-line ConfigError naming
    ``source`` and the line."""
    try:
        # PyYAML's reader refuses NUL and other control characters (even in a comment) as
        # soon as it is built, with a ReaderError that has no line: say which line here.
        loader = StrictLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(f"{source}: invalid YAML at line {line}: the control character "
                          f"U+{code:04X} is not allowed in YAML, even in a comment; remove "
                          "it") from None
    try:
        node = loader.get_single_node()
        if node is None:  # an empty file
            return None
        _check_keys(loader, node, "")
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def _check_keys(loader: StrictLoader, node: Node, path: str) -> None:
    """Refuse duplicate and merge keys anywhere in the composed tree; ``path`` is the dotted
    key of ``node`` (``audit.proxies[0]``), "" at the top."""
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(loader, item, f"{path}[{i}]")
        return
    if not isinstance(node, MappingNode):
        return
    where = f" in {path}" if path else ""
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            raise _Refused(f"YAML merge keys (<<) are not allowed in a sensaudit config "
                           f"(line {line})")
        child = f"{path}.?" if path else "?"
        if isinstance(key_node, ScalarNode):
            # The built key, as the dict would hold it: 'a' and "a" are one key, so are 1 and 1.0.
            key = loader.construct_object(key_node)
            if key in first_line:
                lines = (f"twice at line {line}" if first_line[key] == line
                         else f"at lines {first_line[key]} and {line}")
                raise _Refused(f"duplicate key {_quote(key)}{where} {lines}")
            first_line[key] = line
            name = _cut(key) if isinstance(key, str) else brief(key)
            child = f"{path}.{name}" if path else name
        _check_keys(loader, value_node, child)


def _quote(key: object) -> str:
    return f"'{_cut(key)}'" if isinstance(key, str) else brief(key)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
