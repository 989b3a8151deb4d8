"""The YAML schema of the ``audit:`` keys of the checks beyond the gradient ranking: each key
checked with the file and the dotted key first, so a message names where to look, then built
into its settings class (:mod:`sensaudit.settings.checks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sensaudit.config.validate import _Validator
from sensaudit.core.errors import ConfigError
from sensaudit.core.values import is_finite_number
from sensaudit.settings.checks import (
    BOUNDS,
    DIRECTIONS,
    GROUP_KINDS,
    MAX_STEPS,
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    RobustnessSettings,
)

CHECK_KEYS = ("threshold", "groups", "expect", "robustness", "linearity", "layer_health")


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
        "robustness": _robustness(v, a["robustness"]) if "robustness" in a else None,
        "linearity": _linearity(v, a["linearity"]) if "linearity" in a else None,
        "layer_health": _layer_health(v, a["layer_health"]) if "layer_health" in a else None,
    }


def _options(v: _Validator, raw: Any, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    # `robustness:` with nothing after it asks for the check with its defaults.
    m = v.mapping(raw if raw is not None else {}, key)
    v.keys(m, key, optional=allowed)
    return m


def _positive(v: _Validator, value: Any, key: str) -> float:
    if not is_finite_number(value) or not value > 0:
        v.fail(key, "a number > 0", value)
    return float(value)


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


def _robustness(v: _Validator, raw: Any) -> RobustnessSettings:
    key = "audit.robustness"
    r = _options(v, raw, key, ("epsilon", "steps", "bounds", "immutable", "max_shift"))
    max_shift = r.get("max_shift")
    if max_shift is not None and (not is_finite_number(max_shift) or max_shift < 0):
        v.fail(f"{key}.max_shift", "a number >= 0 or null", max_shift)
    immutable = r.get("immutable")
    return RobustnessSettings(
        epsilon=_positive(v, r.get("epsilon", 0.1), f"{key}.epsilon"),
        steps=v.integer(r.get("steps", 10), f"{key}.steps", minimum=1, maximum=MAX_STEPS),
        bounds=v.choice(r.get("bounds", "observed"), f"{key}.bounds", BOUNDS),
        immutable=v.names(immutable, f"{key}.immutable") if immutable is not None else (),
        max_shift=None if max_shift is None else float(max_shift),
    )


def _linearity(v: _Validator, raw: Any) -> LinearitySettings:
    key = "audit.linearity"
    m = _options(v, raw, key, ("step", "tolerance", "max_off_rate", "gate"))
    tolerance = v.fraction(m.get("tolerance", 0.1), f"{key}.tolerance")
    if tolerance == 0:
        v.fail(f"{key}.tolerance", "a number in (0, 1]", m.get("tolerance"))
    return LinearitySettings(
        step=_positive(v, m.get("step", 0.1), f"{key}.step"),
        tolerance=tolerance,
        max_off_rate=v.fraction(m.get("max_off_rate", 0.05), f"{key}.max_off_rate"),
        gate=v.boolean(m.get("gate", False), f"{key}.gate"),
    )


def _layer_health(v: _Validator, raw: Any) -> LayerHealthSettings:
    key = "audit.layer_health"
    m = _options(v, raw, key, ("max_ratio", "gate"))
    max_ratio = m.get("max_ratio", 1000.0)
    if not is_finite_number(max_ratio) or not max_ratio > 1:
        v.fail(f"{key}.max_ratio", "a number > 1", max_ratio)
    return LayerHealthSettings(max_ratio=float(max_ratio),
                               gate=v.boolean(m.get("gate", False), f"{key}.gate"))
