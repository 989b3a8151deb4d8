"""The ``audit:`` keys several checks share: the decision threshold, feature groups and
monotonicity expectations (lists and mappings of records, checked with the file and the dotted
key, then built into :mod:`sensaudit.settings.checks`' classes). A check's own options are
parsed from its declaration instead (:func:`sensaudit.config.sections.extension_options`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sensaudit.config.validate import _Validator
from sensaudit.core.errors import ConfigError
from sensaudit.core.values import is_finite_number
from sensaudit.settings.checks import (
    DIRECTIONS,
    GROUP_KINDS,
    Expectation,
    FeatureGroup,
)

SHARED_KEYS = ("threshold", "groups", "expect")


def parse_check_keys(v: _Validator, a: Mapping[str, Any]) -> dict[str, Any]:
    """The AuditSettings fields these keys fill, from the ``audit`` mapping ``a``."""
    threshold = a.get("threshold")
    if threshold is not None and not is_finite_number(threshold):
        v.fail("audit.threshold", "a number (the decision threshold on the score) or null",
               threshold)
    return {
        "threshold": None if threshold is None else float(threshold),
        "groups": _groups(v, a.get("groups")),
        "expect": _expectations(v, a.get("expect")),
    }


def _groups(v: _Validator, raw: Any) -> tuple[FeatureGroup, ...]:
    groups = v.mapping(raw if raw is not None else {}, "audit.groups")
    built = []
    for name, spec in groups.items():
        key = f"audit.groups.{name}"
        v.string(name, key)
        if isinstance(spec, Mapping):
            v.keys(spec, key, required=("columns",), optional=("kind",))
            kind = v.choice(spec.get("kind", "plain"), f"{key}.kind", GROUP_KINDS)
            columns = v.names(spec["columns"], f"{key}.columns")
            where = f"{key}.columns"
        elif isinstance(spec, list):
            kind, columns, where = "plain", v.names(spec, key), key
        else:
            v.fail(key, "a list of feature names or {kind, columns}", spec)
        if len(columns) < 2:
            v.fail(where, "a list of at least 2 feature names", list(columns))
        built.append(FeatureGroup(name=name, columns=columns, kind=kind))
    return tuple(built)


def _expectations(v: _Validator, raw: Any) -> tuple[Expectation, ...]:
    items = [] if raw is None else raw
    if not isinstance(items, list):
        v.fail("audit.expect", "a list of {feature, direction, max_violation_rate}", items)
    built = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"audit.expect[{i}]"
        e = v.mapping(item, key)
        v.keys(e, key, required=("feature", "direction"), optional=("max_violation_rate",))
        feature = v.string(e["feature"], f"{key}.feature")
        if feature in seen:
            raise ConfigError(f"{v.source}: {key}.feature '{feature}' has an expectation "
                              "already")
        seen.add(feature)
        built.append(Expectation(
            feature=feature,
            direction=v.choice(e["direction"], f"{key}.direction", DIRECTIONS),
            max_violation_rate=v.fraction(e.get("max_violation_rate", 0.0),
                                          f"{key}.max_violation_rate")))
    return tuple(built)
