"""The type checks every config value passes through: :class:`_Validator`.

Each check raises a one-line ConfigError naming the file, the dotted key, what was expected and
what was found, so the section parsers (:mod:`sensaudit.config.sections`,
:mod:`sensaudit.settings.checks`) state only which key holds what.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from sensaudit.core.errors import ConfigError, brief, describe, did_you_mean
from sensaudit.core.values import is_finite_number


class _Validator:
    """Type checks that raise one-line ConfigErrors naming the file and the dotted key."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, expected: str, found: Any) -> NoReturn:
        raise ConfigError(f"{self.source}: {key} must be {expected} (got {describe(found)})")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            if key == "":
                raise ConfigError(f"{self.source}: the config must be a mapping with sections "
                                  f"model, data, audit, compare, report (got {describe(value)})")
            self.fail(key, "a mapping", value)
        for k in value:
            if not isinstance(k, str):
                self.fail(f"{key}.{brief(k)}" if key else brief(k), "a text key", k)
        return value

    def keys(self, m: Mapping[str, Any], key: str, *, required: tuple[str, ...] = (),
             optional: tuple[str, ...] = (), renamed: Mapping[str, str] | None = None) -> None:
        """``renamed``: old key -> its new name, which the error suggests (an old name is too
        unlike the new one for did_you_mean to find it)."""
        allowed = required + optional
        where = f" in {key}" if key else ""
        for k in m:
            if k not in allowed:
                hint = (f"; did you mean '{renamed[k]}'?" if renamed and k in renamed
                        else did_you_mean(k, allowed))
                raise ConfigError(f"{self.source}: unknown key '{k}'{where}{hint} "
                                  f"(allowed: {', '.join(allowed)})")
        for k in required:
            if k not in m:
                dotted = f"{key}.{k}" if key else k
                raise ConfigError(f"{self.source}: missing required key '{dotted}'")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "a non-empty string", value)
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(key, "a non-empty list of names", value)
        names = tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.source}: {key} lists '{dupes[0]}' more than once")
        return names

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def integer(self, value: Any, key: str, *, minimum: int, maximum: int | None = None,
                maximum_text: str | None = None) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum
                and (maximum is None or value <= maximum)):
            self.fail(key, f"an integer >= {minimum}" if maximum is None else
                      f"an integer from {minimum} to {maximum_text or maximum}", value)
        return value

    def fraction(self, value: Any, key: str) -> float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and 0 <= value <= 1)
        if not ok:
            self.fail(key, "a number in [0, 1]", value)
        return float(value)

    def finite(self, value: Any, key: str) -> float:
        if not is_finite_number(value):
            self.fail(key, "a finite number", value)
        return float(value)

    def positive(self, value: Any, key: str) -> float:
        if not (is_finite_number(value) and value > 0):
            self.fail(key, "a finite number > 0", value)
        return float(value)

    def number(self, value: Any, key: str, low: float, high: float) -> float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and low <= value <= high)
        if not ok:
            self.fail(key, f"a number from {low:g} to {high:g}", value)
        return float(value)

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:  # allowed holds only text
            self.fail(key, "one of " + ", ".join(allowed), value)
        return value

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text).expanduser()
        # normpath: 'configs/../reports' reads better as 'reports' in every message and report.
        return Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))

    def class_path(self, value: Any, key: str, class_file: Path | None = None) -> str:
        text = self.string(value, key)
        if class_file is None:
            module, _, name = text.partition(":")
            if not module or not name:
                self.fail(key, "'package.module:ClassName'", value)
            return text
        module, colon, name = text.rpartition(":")
        if not name.isidentifier() or (colon and module != class_file.stem):
            self.fail(key, f"the name of a class in model.class_file ('ClassName' or "
                           f"'{class_file.stem}:ClassName')", value)
        return text
