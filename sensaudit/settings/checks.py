"""The settings of the checks beyond the gradient ranking, one class per ``audit:`` key.

Each class checks its own values when built in Python; the YAML parsers
(:mod:`sensaudit.config.check_sections`) check them first with the file and the dotted key, so
a message names where to look.

- ``audit.threshold``: the decision threshold on the score (robustness: rows pushed across it).
- ``audit.groups``: features counted together (``{length: [copy_length, word_count]}``), or
  one-hot columns of one categorical (``{kind: one_hot, columns: [...]}``).
- ``audit.expect``: monotonicity expectations, each a gate.
- ``audit.robustness``: the adversarial shift within an L-infinity budget, gated.
- ``audit.linearity``: how well the gradient predicts a finite step (warnings).
- ``audit.layer_health``: the score's Jacobian with respect to each layer (warnings).
"""

from __future__ import annotations

from dataclasses import dataclass

from sensaudit.core.errors import ConfigError, describe
from sensaudit.core.values import is_finite_number

GROUP_KINDS = ("plain", "one_hot")
DIRECTIONS = ("increasing", "decreasing")
BOUNDS = ("observed", "none")
# Each projected-gradient step is a forward and a backward pass per row, output and direction;
# past a few hundred steps the attack has long converged and only the cost grows.
MAX_STEPS = 1000


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
        if not is_finite_number(self.max_violation_rate) or not 0 <= self.max_violation_rate <= 1:
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
        if not is_finite_number(self.epsilon) or not self.epsilon > 0:
            raise _bad(owner, "epsilon", "a number > 0", self.epsilon)
        if (not isinstance(self.steps, int) or isinstance(self.steps, bool)
                or not 1 <= self.steps <= MAX_STEPS):
            raise _bad(owner, "steps", f"an integer from 1 to {MAX_STEPS}", self.steps)
        if self.bounds not in BOUNDS:
            raise _bad(owner, "bounds", "one of " + ", ".join(BOUNDS), self.bounds)
        if self.max_shift is not None and (not is_finite_number(self.max_shift)
                                           or self.max_shift < 0):
            raise _bad(owner, "max_shift", "a number >= 0 or None", self.max_shift)


@dataclass(frozen=True)
class LinearitySettings:
    """Per feature, does the gradient predict the score change of a step of ``step`` feature
    standard deviations (each way)? A row is off when the two differ by more than
    ``tolerance`` of the larger; more than ``max_off_rate`` of rows off warns (fails with
    ``gate``) when the mismatch is also material: a one-std move mispredicted, on average, by
    more than ``tolerance`` of the score's std (checks/linearity.py)."""

    step: float = 0.1
    tolerance: float = 0.1
    max_off_rate: float = 0.05
    gate: bool = False

    def __post_init__(self) -> None:
        owner = "LinearitySettings"
        if not is_finite_number(self.step) or not self.step > 0:
            raise _bad(owner, "step", "a number > 0", self.step)
        if not is_finite_number(self.tolerance) or not 0 < self.tolerance <= 1:
            raise _bad(owner, "tolerance", "a number in (0, 1]", self.tolerance)
        if not is_finite_number(self.max_off_rate) or not 0 <= self.max_off_rate <= 1:
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
        if not is_finite_number(self.max_ratio) or not self.max_ratio > 1:
            raise _bad(owner, "max_ratio", "a number > 1", self.max_ratio)
        if not isinstance(self.gate, bool):
            raise _bad(owner, "gate", "true or false", self.gate)
