"""The ``audit:`` keys of the checks beyond the gradient ranking: their settings and YAML schema.

Kept beside :mod:`sensaudit.config` (its audit section parser, in
:mod:`sensaudit.config_sections`, calls the parsers here) so that file stays the map of the whole
schema. Each settings class checks its own values when built in Python; the YAML
parsers check them with the file and the dotted key first, so a message names where to look.

- ``audit.threshold``: the decision threshold on the score (robustness: rows pushed across it).
- ``audit.groups``: features counted together (``{length: [copy_length, word_count]}``), or
  one-hot columns of one categorical (``{kind: one_hot, columns: [...]}``).
- ``audit.expect``: monotonicity expectations, each a gate.
- ``audit.robustness``: the adversarial shift within an L-infinity budget, gated.
- ``audit.linearity``: how well the gradient predicts a finite step (warnings).
- ``audit.layer_health``: the score's Jacobian with respect to each layer (warnings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, describe

if TYPE_CHECKING:
    from .config_validate import _Validator

GROUP_KINDS = ("plain", "one_hot")
DIRECTIONS = ("increasing", "decreasing")
BOUNDS = ("observed", "none")
# Each projected-gradient step is a forward and a backward pass per row, output and direction;
# past a few hundred steps the attack has long converged and only the cost grows.
MAX_STEPS = 1000


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _bad(owner: str, key: str, expected: str, found: object) -> ConfigError:
    return ConfigError(f"{owner}: {key} must be {expected} (got {describe(found)})")


@dataclass(frozen=True)
class FeatureGroup:
    """Features whose sensitivity counts together: their shares add up to the group's.

    ``kind`` "one_hot": the columns encode one categorical, one column per level; the audit
    also reports the mean score change of switching each row to each level.
    """

    name: str
    columns: tuple[str, ...]
    kind: str = "plain"

    def __post_init__(self) -> None:
        owner = f"FeatureGroup('{self.name}')"
        if len(self.columns) < 2 or len(set(self.columns)) != len(self.columns):
            raise _bad(owner, "columns", "at least 2 distinct feature names", self.columns)
        if self.kind not in GROUP_KINDS:
            raise _bad(owner, "kind", "one of " + ", ".join(GROUP_KINDS), self.kind)


@dataclass(frozen=True)
class Expectation:
    """The score must move ``direction`` with ``feature``: a row whose gradient has the wrong
    sign violates it, and more than ``max_violation_rate`` of rows fails the audit."""

    feature: str
    direction: str
    max_violation_rate: float = 0.0

    def __post_init__(self) -> None:
        owner = f"Expectation('{self.feature}')"
        if self.direction not in DIRECTIONS:
            raise _bad(owner, "direction", "one of " + ", ".join(DIRECTIONS), self.direction)
        if not _number(self.max_violation_rate) or not 0 <= self.max_violation_rate <= 1:
            raise _bad(owner, "max_violation_rate", "a number in [0, 1]",
                       self.max_violation_rate)

    @property
    def sign(self) -> int:
        return 1 if self.direction == "increasing" else -1


@dataclass(frozen=True)
class RobustnessSettings:
    """The largest score change a projected-gradient attack reaches per row within ``epsilon``
    feature standard deviations (L-infinity), in both directions."""

    epsilon: float = 0.1
    steps: int = 10
    bounds: str = "observed"  # observed: each feature stays within the data's min..max
    immutable: tuple[str, ...] = ()  # features (or groups) the attack may not change
    max_shift: float | None = None  # gate on the 95th percentile of the rows' shifts

    def __post_init__(self) -> None:
        owner = "RobustnessSettings"
        if not _number(self.epsilon) or not self.epsilon > 0:
            raise _bad(owner, "epsilon", "a number > 0", self.epsilon)
        if (not isinstance(self.steps, int) or isinstance(self.steps, bool)
                or not 1 <= self.steps <= MAX_STEPS):
            raise _bad(owner, "steps", f"an integer from 1 to {MAX_STEPS}", self.steps)
        if self.bounds not in BOUNDS:
            raise _bad(owner, "bounds", "one of " + ", ".join(BOUNDS), self.bounds)
        if self.max_shift is not None and (not _number(self.max_shift) or self.max_shift < 0):
            raise _bad(owner, "max_shift", "a number >= 0 or None", self.max_shift)


@dataclass(frozen=True)
class LinearitySettings:
    """Per feature, does the gradient predict the score change of a step of ``step`` feature
    standard deviations (each way)? A row is off when the two differ by more than
    ``tolerance`` of the larger; more than ``max_off_rate`` of rows off warns (fails with
    ``gate``)."""

    step: float = 0.1
    tolerance: float = 0.1
    max_off_rate: float = 0.05
    gate: bool = False

    def __post_init__(self) -> None:
        owner = "LinearitySettings"
        if not _number(self.step) or not self.step > 0:
            raise _bad(owner, "step", "a number > 0", self.step)
        if not _number(self.tolerance) or not 0 < self.tolerance <= 1:
            raise _bad(owner, "tolerance", "a number in (0, 1]", self.tolerance)
        if not _number(self.max_off_rate) or not 0 <= self.max_off_rate <= 1:
            raise _bad(owner, "max_off_rate", "a number in [0, 1]", self.max_off_rate)
        if not isinstance(self.gate, bool):
            raise _bad(owner, "gate", "true or false", self.gate)


@dataclass(frozen=True)
class LayerHealthSettings:
    """The score's Jacobian with respect to each layer's activations: warn (fail with
    ``gate``) when its median norm changes by more than ``max_ratio`` from the first layer
    to the last (vanishing or exploding through depth)."""

    max_ratio: float = 1000.0
    gate: bool = False

    def __post_init__(self) -> None:
        owner = "LayerHealthSettings"
        if not _number(self.max_ratio) or not self.max_ratio > 1:
            raise _bad(owner, "max_ratio", "a number > 1", self.max_ratio)
        if not isinstance(self.gate, bool):
            raise _bad(owner, "gate", "true or false", self.gate)


CHECK_KEYS = ("threshold", "groups", "expect", "robustness", "linearity", "layer_health")


def parse_check_keys(v: _Validator, a: Mapping[str, Any]) -> dict[str, Any]:
    """The AuditSettings fields these keys fill, from the ``audit`` mapping ``a``."""
    threshold = a.get("threshold")
    if threshold is not None and not _number(threshold):
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
    if not _number(value) or not value > 0:
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
    if max_shift is not None and (not _number(max_shift) or max_shift < 0):
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
    if not _number(max_ratio) or not max_ratio > 1:
        v.fail(f"{key}.max_ratio", "a number > 1", max_ratio)
    return LayerHealthSettings(max_ratio=float(max_ratio),
                               gate=v.boolean(m.get("gate", False), f"{key}.gate"))
