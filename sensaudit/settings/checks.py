"""The settings of the checks beyond the gradient ranking, one class per ``audit:`` key.

Each class checks its own values when built in Python. The options of the checks with a key of
their own (robustness, linearity, layer_health) are declared with
:func:`~sensaudit.settings.options.option`, and the config parses them from that declaration;
``groups`` and ``expect`` are lists of records, parsed in :mod:`sensaudit.config.check_sections`.

- ``audit.threshold``: the decision threshold on the score (robustness: rows pushed across it).
- ``audit.groups``: features counted together (``{length: [copy_length, word_count]}``), or
  one-hot columns of one categorical (``{kind: one_hot, columns: [...]}``).
- ``audit.expect``: monotonicity expectations, each a gate.
- ``audit.robustness``: the adversarial shift within an L-infinity budget, gated.
- ``audit.linearity``: how well the gradient predicts a finite step (warnings).
- ``audit.layer_health``: the score's Jacobian with respect to each layer (warnings).
- ``audit.protected``: inputs, groups and a linear combination of inputs that stand in for a
  protected column of the data (gated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sensaudit.core.errors import ConfigError, describe
from sensaudit.core.values import is_finite_number
from sensaudit.settings.options import (
    boolean,
    check_declared,
    choice,
    integer,
    names,
    number,
    option,
    reasons,
)

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
    """``audit.robustness``: the largest score change a projected-gradient attack reaches per
    row within ``epsilon`` feature standard deviations (L-infinity), in both directions."""

    epsilon: float = option(0.1, number(low=0, low_open=True),
                            "the attack's budget per feature, in feature standard deviations")
    steps: int = option(10, integer(1, MAX_STEPS),
                        "projected-gradient steps per row, output and direction")
    bounds: str = option("observed", choice(*BOUNDS),
                         "observed: each feature stays within the data's min..max")
    immutable: tuple[str, ...] = option((), names(),
                                        "features (or groups) the attack may not change")
    max_shift: float | None = option(None, number(low=0),
                                     "fail when the 95th percentile of the rows' shifts is above")

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(frozen=True)
class LinearitySettings:
    """``audit.linearity``: per feature, does the gradient predict the score change of a step
    of ``step`` feature standard deviations (each way)? A row is off when the two differ by
    more than ``tolerance`` of the larger; more than ``max_off_rate`` of rows off warns
    (fails with ``gate``) when the mismatch is also material: a one-std move mispredicted, on
    average, by more than ``tolerance`` of the score's std (checks/linearity.py)."""

    step: float = option(0.1, number(low=0, low_open=True),
                         "the finite step, in feature standard deviations")
    tolerance: float = option(0.1, number(0, 1, low_open=True),
                              "a row is off when gradient and step differ by more (relative)")
    max_off_rate: float = option(0.05, number(0, 1),
                                 "warn when more than this fraction of rows is off")
    gate: bool = option(False, boolean(), "fail the audit instead of warning")

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(frozen=True)
class LayerHealthSettings:
    """``audit.layer_health``: the score's Jacobian with respect to each layer's activations:
    warn (fail with ``gate``) when its median norm changes by more than ``max_ratio`` from the
    first layer to the last (vanishing or exploding through depth)."""

    max_ratio: float = option(1000.0, number(low=1, low_open=True),
                              "warn when the median norm changes more, first to last layer")
    gate: bool = option(False, boolean(), "fail the audit instead of warning")

    def __post_init__(self) -> None:
        check_declared(self)


# The protected-proxies check keeps the inputs' covariance ([features]^2) to fit the best
# linear combination; past this many inputs that combination is not fit (inputs and groups are
# still judged).
MAX_COMBINED_FEATURES = 256


@dataclass(frozen=True)
class ProtectedSettings:
    """``audit.protected``: data columns (sex, age, ...) the model must not stand in for;
    they need not be model inputs. An input, a group (audit.groups) or the best linear
    combination of the inputs is a proxy when it is associated with a protected column beyond
    ``max_association`` and carries more than ``max_share`` of the sensitivity, both judged on
    the lower end of their intervals (checks/protected_proxies.py). A list alone
    (``audit.protected: [sex, age]``) names the columns, every other key at its default."""

    SHORTHAND: ClassVar[str] = "columns"

    columns: tuple[str, ...] = option((), names(), "the protected data columns (required)")
    max_association: float = option(
        0.3, number(0, 1, high_open=True, expected="a number from 0 up to (not including) 1"),
        "association (correlation) with a protected column over which a candidate is a proxy")
    max_share: float = option(
        0.1, number(0, 1, high_open=True, expected="a number from 0 up to (not including) 1"),
        "share of the sensitivity over which an associated candidate is a proxy")
    allow: tuple[tuple[str, str], ...] = option(
        (), reasons(), "inputs or groups allowed to stand in, each with its reason")
    confidence: float = option(0.95, number(0.5, 0.999, expected="a number from 0.5 to 0.999"),
                               "the intervals' confidence")
    bootstrap_samples: int = option(200, integer(0, 10_000),
                                    "Poisson bootstrap replicates of the shares' intervals")
    seed: int = option(0, integer(0, 2**63 - 1, maximum_text="2**63 - 1"),
                       "the bootstrap's seed")
    max_levels: int = option(20, integer(2, 1000),
                             "a text protected column with more levels is refused")

    def __post_init__(self) -> None:
        check_declared(self)
        if not self.columns:
            raise ConfigError("audit.protected.columns must be a non-empty list of names "
                              "(got none)")
