"""How an extension declares its options: a frozen dataclass whose fields say their limits.

A method, a check or a report format declares the keys it reads as one frozen dataclass next
to its code, each field made with :func:`option`::

    @dataclass(frozen=True)
    class ShareCeilingOptions:
        max_share: float = option(0.5, number(low=0, low_open=True, high=1),
                                  "the largest share one feature may hold")

From that one declaration come the config's parsing (:func:`parse_options`: unknown keys
refused with a did-you-mean, each value checked against its limit, the message naming the
dotted key), the same checks on an instance built in Python (:func:`check_declared`, from the
class's ``__post_init__``), and the rows of the configuration key table in the docs
(:func:`declared`). Nothing else lists an extension's keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sensaudit.core.errors import ConfigError, brief, describe, did_you_mean
from sensaudit.core.values import is_finite_number, is_int

_META = "sensaudit.option"


@dataclass(frozen=True)
class Limit:
    """The values an option takes. ``type`` names it in the key table; ``expected`` completes
    "<key> must be ..." in messages and fills the table's limit column; ``accepts`` tests a
    value; ``convert`` turns an accepted config value into the stored one (int -> float)."""

    type: str
    expected: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda value: value

    def parse(self, value: Any, key: str) -> Any:
        """The config's value at ``key``, checked and converted; a ConfigError otherwise."""
        if not self.accepts(value):
            raise _bad(key, self.expected, value)
        return self.convert(value)


def _bad(key: str, expected: str, found: object) -> ConfigError:
    return ConfigError(f"{key} must be {expected} (got {describe(found)})")


def integer(minimum: int, maximum: int | None = None, *, maximum_text: str | None = None
            ) -> Limit:
    """An integer (never a bool) from ``minimum`` up, to ``maximum`` if given;
    ``maximum_text`` writes a large maximum readably (``2**64 - 1``)."""
    expected = (f"an integer >= {minimum}" if maximum is None
                else f"an integer from {minimum} to {maximum_text or maximum}")
    return Limit("integer", expected, lambda value: is_int(value) and value >= minimum
                 and (maximum is None or value <= maximum))


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, expected: str | None = None) -> Limit:
    """A finite number (never a bool) within ``low`` .. ``high`` (either end optional, open
    or closed), stored as a float. ``expected`` replaces the generated wording."""
    if expected is None:
        if low is not None and high is not None:
            expected = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                        f"{')' if high_open else ']'}")
        elif low is not None:
            expected = f"a number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            expected = f"a number {'<' if high_open else '<='} {high:g}"
        else:
            expected = "a finite number"

    def accepts(value: Any) -> bool:
        if not is_finite_number(value):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        return high is None or (value < high if high_open else value <= high)

    return Limit("number", expected, accepts, float)


def boolean() -> Limit:
    return Limit("boolean", "true or false", lambda value: isinstance(value, bool))


def choice(*values: str) -> Limit:
    return Limit("choice", "one of " + ", ".join(values), lambda value: value in values)


@dataclass(frozen=True)
class _Names(Limit):
    """A non-empty list of distinct non-empty names in the config, stored as a tuple; in
    Python a tuple of names (empty: none)."""

    def parse(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise _bad(key, "a non-empty list of names", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise _bad(f"{key}[{i}]", "a non-empty string", item)
        dupes = sorted({name for name in value if value.count(name) > 1})
        if dupes:
            raise ConfigError(f"{key} lists '{dupes[0]}' more than once")
        return tuple(value)


def names() -> Limit:
    return _Names("names", "a list of names", lambda value: isinstance(value, tuple) and all(
        isinstance(item, str) and item.strip() for item in value))


@dataclass(frozen=True)
class _Reasons(Limit):
    """A mapping of names to non-empty reasons in the config (``{feature: "why"}``), stored
    as a tuple of (name, reason) pairs; in Python such a tuple (empty: none)."""

    def parse(self, value: Any, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, Mapping):
            raise _bad(key, "a mapping of names to reasons", value)
        pairs = []
        for name, reason in value.items():
            if not isinstance(name, str) or not name.strip():
                raise _bad(f"{key}.{brief(name)}", "a non-empty name", name)
            if not isinstance(reason, str) or not reason.strip():
                raise _bad(f"{key}.{name}", "a reason (non-empty text saying why it is "
                           "allowed)", reason)
            pairs.append((name, reason.strip()))
        return tuple(pairs)


def reasons() -> Limit:
    return _Reasons("mapping", "a mapping of names to reasons", lambda value: (
        isinstance(value, tuple) and all(
            isinstance(pair, tuple) and len(pair) == 2
            and all(isinstance(item, str) and item.strip() for item in pair)
            for pair in value)))


@dataclass(frozen=True)
class Declared:
    """One declared option, as the key table and the parsers see it."""

    key: str
    limit: Limit
    default: Any
    meaning: str
    nullable: bool  # None (null in the config) is a value of its own: "not set"

    def expected(self, null: str) -> str:
        return f"{self.limit.expected} or {null}" if self.nullable else self.limit.expected


def option(default: Any, limit: Limit, meaning: str, *, nullable: bool = False) -> Any:
    """A field of an options dataclass: its default, its limit and one line of meaning (the
    key table's). ``nullable``: None is allowed too (``null`` in the config)."""
    if default is None:
        nullable = True
    return dataclasses.field(default=default, metadata={_META: (limit, meaning, nullable)})


def declared(cls: type) -> Iterator[Declared]:
    """The options a dataclass declares, in declaration order."""
    for f in dataclasses.fields(cls):
        if _META not in f.metadata:
            raise TypeError(f"{cls.__qualname__}.{f.name} is not declared with option(): "
                            "give it a limit and a meaning")
        limit, meaning, nullable = f.metadata[_META]
        yield Declared(f.name, limit, f.default, meaning, nullable)


def parse_options(cls: type, raw: Any, where: str, *, from_config: bool = True
                  ) -> dict[str, Any]:
    """The keys of ``raw`` (a mapping at the dotted key ``where``; None: empty) that ``cls``
    declares, each checked against its limit: a ConfigError, without the file's name (the
    caller adds it), for an unknown key (with a did-you-mean) or a bad value.

    ``from_config``: the values are as YAML gives them (lists, ints for floats), converted to
    the stored types; else they were built in Python (or parsed already) and only checked."""
    raw = {} if raw is None else raw
    shorthand = getattr(cls, "SHORTHAND", None)
    if shorthand is not None and isinstance(raw, list):  # `key: [a, b]` for {shorthand: [a, b]}
        raw = {shorthand: raw}
    if not isinstance(raw, Mapping):
        raise _bad(where, "a mapping" if shorthand is None else
                   f"a mapping, or a list of {shorthand}", raw)
    options = {d.key: d for d in declared(cls)}
    for key in raw:
        if not isinstance(key, str):
            raise _bad(f"{where}.{brief(key)}", "a text key", key)
        if key not in options:
            allowed = tuple(options)
            raise ConfigError(f"unknown key '{key}' in {where}{did_you_mean(key, allowed)} "
                              f"(allowed: {', '.join(allowed) or 'none'})")
    null = "null" if from_config else "None"
    values: dict[str, Any] = {}
    for key, d in options.items():
        if key not in raw:
            continue
        value, dotted = raw[key], f"{where}.{key}"
        if value is None and d.nullable:
            values[key] = None
        elif from_config and not d.nullable:
            values[key] = d.limit.parse(value, dotted)
        elif not d.limit.accepts(value):  # nullable options are scalars: accepts says it all
            raise _bad(dotted, d.expected(null), value)
        else:
            values[key] = d.limit.convert(value) if from_config else value
    return values


def build_options(cls: type, raw: Any, where: str, *, from_config: bool = True) -> Any:
    """``cls`` built from the mapping ``raw`` at ``where`` (see :func:`parse_options`); keys
    left out take their defaults."""
    return cls(**parse_options(cls, raw, where, from_config=from_config))


def check_declared(instance: Any) -> None:
    """An options instance built in Python keeps its declared limits, checked as the config
    checks them: a ConfigError naming the class and the field."""
    owner = type(instance).__name__
    for d in declared(type(instance)):
        value = getattr(instance, d.key)
        if value is None and d.nullable:
            continue
        if not d.limit.accepts(value):
            raise ConfigError(f"{owner}: {d.key} must be {d.expected('None')} "
                              f"(got {describe(value)})")


def default_text(value: Any) -> str:
    """A default as the key table shows it: as it would be written in the config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
