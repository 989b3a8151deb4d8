"""What counts as a number in settings: YAML and Python give bools that are ints, and floats
that are not finite; neither is a valid limit, count or threshold."""

from __future__ import annotations

import math


def is_finite_number(value: object) -> bool:
    """An int or float (not a bool) that is finite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
