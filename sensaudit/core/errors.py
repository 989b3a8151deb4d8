"""Errors a user can act on.

Every error sensaudit raises on purpose derives from :class:`SensauditError`; the CLI maps each
to an exit code and prints its one-line message. Anything else escaping is a bug and keeps its
traceback.

    SensauditError            exit 2: bad input, nothing was audited
    ├── ConfigError           the YAML config: syntax, unknown keys, wrong types or values
    ├── DataError             the CSV/Parquet extract: missing columns, text, NaN/inf, empty
    ├── ModelLoadError        the model file: unreadable, corrupt, unsafe pickle, wrong class
    ├── ModelError            the loaded model misbehaves: wrong shape, no gradient path, mixes rows
    └── ReportError           the report directory cannot be written

A failed *gate* is not an error: the audit ran and its result says ``passed: false`` (exit 1).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable, Mapping
from typing import Any


class SensauditError(Exception):
    """Base class: bad input that stops an audit before a result exists (exit code 2)."""

    exit_code = 2


class ConfigError(SensauditError):
    """The config file is unreadable, malformed, or has a wrong key or value."""


class DataError(SensauditError):
    """The data extract is unreadable or does not fit the config."""


class ModelLoadError(SensauditError):
    """The model file cannot be loaded safely."""


class ModelError(SensauditError):
    """The loaded model cannot be audited (shape, dtype, gradient path, row mixing)."""


class ReportError(SensauditError):
    """The reports cannot be written."""


# describe() quotes values from the user's files in one-line messages. A YAML alias bomb or a
# Python object sharing one list a billion times is small in memory but astronomically large
# to render, so the rendering itself is bounded, not just its output: at most _ITEMS items per
# container, _DEPTH containers deep, _TEXT characters per string, _INT_BITS bits per integer
# (Python refuses to print integers over 4300 digits at all).
_TEXT = 60
_ITEMS = 4
_DEPTH = 2
_INT_BITS = 256


def describe(value: object) -> str:
    """Render a found value for messages: ``'1.5', a str``, the shape attrs' validators use.

    The work is bounded whatever the value: containers show their first few items only.
    """
    kind = type(value).__name__
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{brief(value)}, {article} {kind}"


def brief(value: object) -> str:
    """``repr(value)`` cut to 60 characters, computed in bounded time (see describe)."""
    text = _bounded_repr(value, _DEPTH)
    return text if len(text) <= _TEXT else text[: _TEXT - 3] + "..."


def _bounded_repr(value: object, depth: int) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= _INT_BITS else f"<an integer of {bits} bits>"
    if isinstance(value, (str, bytes)):
        # One character past the limit: the caller's cut then shows the "..." it needs.
        return repr(value[: _TEXT + 1])
    if isinstance(value, Mapping):
        return _items("{", "}", value.items(), len(value), depth, pairs=True)
    if isinstance(value, list):
        return _items("[", "]", value, len(value), depth)
    if isinstance(value, tuple):
        if len(value) == 1:
            return "(" + _bounded_repr(value[0], depth - 1) + ",)"
        return _items("(", ")", value, len(value), depth)
    if isinstance(value, (set, frozenset)):
        if not value:
            return f"{type(value).__name__}()"
        return _items("{", "}", value, len(value), depth)
    # Anything else was built in Python (YAML gives only the types above): its own repr, cut.
    return repr(value)


def _items(open_: str, close: str, items: Iterable[Any], size: int, depth: int, *,
           pairs: bool = False) -> str:
    if size == 0:
        return open_ + close
    if depth <= 0:
        return open_ + "..." + close
    shown = []
    for item in itertools.islice(items, _ITEMS):
        if pairs:
            key, val = item
            shown.append(f"{_bounded_repr(key, depth - 1)}: {_bounded_repr(val, depth - 1)}")
        else:
            shown.append(_bounded_repr(item, depth - 1))
    more = ", ..." if size > _ITEMS else ""
    return open_ + ", ".join(shown) + more + close


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line error messages."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("The following operation failed in the TorchScript"):
        # TorchScript puts its traceback first and the actual error on the last line.
        return lines[-1][:200]
    return lines[0][:200] if lines else type(exc).__name__
