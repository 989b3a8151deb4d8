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
from collections.abc import Iterable


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


def describe(value: object) -> str:
    """Render a found value for messages: ``'1.5', a str``, the shape attrs' validators use."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = type(value).__name__
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{text}, {article} {kind}"


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
