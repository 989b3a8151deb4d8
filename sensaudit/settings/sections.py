"""The frozen settings objects a config parses into, and the limits of its schema.

Each settings class checks its own values when built in Python (``audit_frame``, a notebook),
where a bad value would otherwise surface as a confusing crash; the YAML section parsers
(:mod:`sensaudit.config.sections`) check the same values first, with the file and the dotted
key. :class:`~sensaudit.config.load.Config`, the whole file, stays in :mod:`sensaudit.config.load`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensaudit.core.errors import ConfigError, describe
from sensaudit.core.values import is_finite_number, is_int
from sensaudit.settings.checks import (
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    ProtectedSettings,
    RobustnessSettings,
)
from sensaudit.settings.options import check_declared, integer, number, option

DEVICES = ("auto", "cpu", "cuda")
REPORT_FORMATS = ("csv", "markdown", "json")
ON_MISSING = ("error", "drop")
# model.transform: applied to the model's whole output row, before model.output selects one
# (softmax needs every logit of the row; sigmoid is per output, so the order is moot for it).
TRANSFORMS = ("none", "sigmoid", "softmax")
# report.examples: which per-row rows examples.csv / examples.parquet hold (or a row limit).
# auto: every row up to AUTO_EXAMPLE_ROWS audited rows, beyond that the rows report.md lists
# (a multi-gigabyte CSV of every row is rarely what a large audit wants, and writing it is
# most of such an audit's cost; `all` still asks for it).
EXAMPLES = ("auto", "all", "top", "none")
AUTO_EXAMPLE_ROWS = 100_000
# Bootstrap memory grows with the replicate count: [samples, features] moments and
# [samples, outputs, features] sums, all float64, and each chunk's [samples, chunk rows]
# weights. A few thousand replicates settle a 95% interval; beyond 100000 only memory grows.
MAX_BOOTSTRAP_SAMPLES = 100_000
# The bootstrap hashes the seed as a uint64 (compare.PoissonBootstrap).
MAX_SEED = 2**64 - 1
# audit.baseline: a kind, or a mapping feature -> value (sensaudit.pipeline.baselines).
BASELINE_KINDS = ("mean", "zero", "median")


@dataclass(frozen=True)
class ModelConfig:
    path: Path
    # For state_dict checkpoints: "pkg.module:Class", imported from installed packages; or,
    # with class_file, "Class" (or "stem:Class") defined in that one .py file.
    class_path: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The file is trusted like code you run: whole pickled modules are unpickled and the .pt2
    # and TorchScript checks are skipped.
    trust_model_code: bool = False
    output: int | str | None = None  # select one output by index or by name
    output_names: tuple[str, ...] | None = None
    device: str = "auto"
    features: tuple[str, ...] | None = None  # the model's input columns, in its order
    class_file: Path | None = None
    transform: str = "none"  # TRANSFORMS: audit probabilities instead of logits
    # Set by compare, never by YAML: where in the audited columns this model's inputs are (in
    # its order), when two models take different columns and both read their union.
    columns: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DataConfig:
    path: Path
    features: tuple[str, ...] | None = None  # None: every numeric column but label and id
    label: str | None = None
    id: str | None = None
    on_missing: str = "error"
    chunk_rows: int = 100_000
    # Where ``features`` came from, for messages: data.features, model.features, the model file.
    features_key: str = "data.features"
    # Columns read beside the features for the checks that ask (audit.protected), never
    # features themselves, each with the key that named it for messages.
    extra: tuple[tuple[str, str], ...] = ()
    # The rows the model was trained on (the same columns), for the suspects check's test of
    # whether a feature's tie to the label holds on the audited rows; None: not given.
    train: Path | None = None


@dataclass(frozen=True)
class ProxyLimit:
    """A feature that must not drive the score, with the limits it must stay under."""

    feature: str
    max_share: float | None = None
    max_rank: int | None = None  # flagged when its rank is this or better (rank 1 = top)
    reason: str | None = None

    def __post_init__(self) -> None:
        # The YAML path checks these with file and key; this guards ProxyLimit built in Python.
        if self.max_share is None and self.max_rank is None:
            raise ConfigError(f"ProxyLimit('{self.feature}') needs a limit: max_share, "
                              "max_rank or both")
        if self.max_share is not None and not 0 <= self.max_share <= 1:
            raise ConfigError(f"ProxyLimit('{self.feature}'): max_share must be a number in "
                              f"[0, 1] (got {describe(self.max_share)})")
        if self.max_rank is not None and self.max_rank < 1:
            raise ConfigError(f"ProxyLimit('{self.feature}'): max_rank must be an integer >= 1 "
                              f"(got {describe(self.max_rank)})")


# audit.misscored: which rule says a row was scored wrong (needs data.label).
MISSCORED_RULES = ("abs_error_above", "top_error_quantile", "threshold")


@dataclass(frozen=True)
class MisscoredRule:
    """A row is misscored when |score - label| > value (``abs_error_above``), when its
    |score - label| is among the top ``value`` fraction of rows (``top_error_quantile``), or
    when score and label fall on different sides of ``value`` (``threshold``). For a 0/1 label
    the error is in the label's units: on sigmoid(score) when the scores are logits, and a
    label's side of the threshold is its class (checks/evidence.py)."""

    kind: str = "top_error_quantile"
    value: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in MISSCORED_RULES:
            raise ConfigError(f"MisscoredRule: kind must be one of {', '.join(MISSCORED_RULES)} "
                              f"(got {describe(self.kind)})")
        ok = isinstance(self.value, (int, float)) and not isinstance(self.value, bool) and (
            math.isfinite(self.value))
        if ok and self.kind == "top_error_quantile":
            ok = 0 < self.value < 1
        elif ok and self.kind == "abs_error_above":
            ok = self.value >= 0
        if not ok:
            raise ConfigError(f"MisscoredRule: {self.kind} must be {RULE_RANGE[self.kind]} "
                              f"(got {describe(self.value)})")


RULE_RANGE = {"abs_error_above": "a number >= 0",
               "top_error_quantile": "a number strictly between 0 and 1",
               "threshold": "a finite number"}


@dataclass(frozen=True)
class AuditSettings:
    proxies: tuple[ProxyLimit, ...] = ()
    dominance_warning: float = 0.5  # warn when an undeclared feature holds more share than this
    top_k: int = 3  # top drivers listed per example
    examples_in_report: int = 10
    batch_size: int | None = None  # None: chosen from the model's size
    allow_nonfinite: bool = False
    method: str = "gradient"  # an attribution method named in sensaudit.methods.METHODS
    # The reference point of per-row explanations: mean, zero, median or {feature: value}
    # (features not named take their mean).
    baseline: str | Mapping[str, float] = "mean"
    # The method's own options (audit.samples: 10 -> {"samples": 10}), as the method declares
    # them (its ``Options`` class); it checks them when it is built. Left out: its defaults.
    method_options: Mapping[str, Any] = field(default_factory=dict)
    # Options of checks registered without a key of their own, by check name
    # (docs/extending.md): each check validates its own options.
    checks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The checks beyond the gradient ranking (sensaudit.settings.checks; None: not asked for).
    threshold: float | None = None  # decision threshold on the score
    groups: tuple[FeatureGroup, ...] = ()
    expect: tuple[Expectation, ...] = ()
    robustness: RobustnessSettings | None = None
    linearity: LinearitySettings | None = None
    layer_health: LayerHealthSettings | None = None
    protected: ProtectedSettings | None = None
    # The suspected-proxies check (checks/suspects.py): its rule for misscored rows (None: the
    # default rule), and whether a suspect fails the audit (None: those whose tie to the label
    # fell from the training rows fail it, those the audited rows alone suspect warn).
    misscored: MisscoredRule | None = None
    fail_on_suspects: bool | None = None

    def __post_init__(self) -> None:
        # The YAML path checks these with file and key; this guards settings built in Python
        # (audit_frame), where a bad value would otherwise surface as a confusing crash.
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"AuditSettings: {key} must be {expected} "
                               f"(got {describe(getattr(self, key))})")

        if not is_int(self.top_k) or self.top_k < 1:
            raise bad("top_k", "an integer >= 1")
        if not is_int(self.examples_in_report) or self.examples_in_report < 0:
            raise bad("examples_in_report", "an integer >= 0")
        if self.batch_size is not None and (not is_int(self.batch_size) or self.batch_size < 1):
            raise bad("batch_size", "an integer >= 1 or None")
        if not (isinstance(self.dominance_warning, (int, float))
                and not isinstance(self.dominance_warning, bool)
                and 0 <= self.dominance_warning <= 1):
            raise bad("dominance_warning", "a number in [0, 1]")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and not isinstance(self.threshold, bool)
                                               and math.isfinite(self.threshold)):
            raise bad("threshold", "a finite number or None")
        if not _baseline_ok(self.baseline):
            raise bad("baseline", BASELINE_EXPECTED)


BASELINE_EXPECTED = "one of mean, zero, median, or a mapping feature -> number"


def _baseline_ok(value: object) -> bool:
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(k, str) and is_finite_number(v)
                                   for k, v in value.items())
    return value in BASELINE_KINDS


@dataclass(frozen=True)
class CompareSettings:
    """``compare:``, declared as the extensions declare their options
    (:mod:`sensaudit.settings.options`): the config parses it and the key table lists it from
    these fields."""

    max_proxy_share_increase: float | None = option(
        None, number(0, 1), "fail when a declared proxy's share grows by more than this")
    # 1000: with 200 the 95% interval's tails rest on 5 replicates each, and it covered only
    # 93-94% in simulations (tests/test_compare_noise.py).
    bootstrap_samples: int = option(
        1000, integer(0, MAX_BOOTSTRAP_SAMPLES),
        "Poisson bootstrap replicates over rows, for the changes' intervals (0: none)")
    confidence: float = option(
        0.95, number(0, 1, low_open=True, high_open=True,
                     expected="a number strictly between 0 and 1"),
        "the intervals' confidence")
    seed: int = option(0, integer(0, MAX_SEED, maximum_text="2**64 - 1"),
                       "the bootstrap's seed: the same rows and seed give the same report")
    top_k: int = option(3, integer(1), "top drivers listed per example row")
    min_change: float = option(
        2.0, number(0, 100, expected="a number from 0 to 100"),
        "share points: a smaller change is never marked, whatever its noise")

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(frozen=True)
class ReportConfig:
    dir: Path
    formats: tuple[str, ...] = REPORT_FORMATS
    examples: str | int = "auto"  # EXAMPLES, or at most this many rows (the first audited)
    # By format, the options it declares (report.<format>: {...}; its writer's Options).
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
