"""The check protocol: accumulate per chunk, merge, finish into a result with gates.

A check is one file in this folder and one line in :data:`sensaudit.checks.CHECKS`. The
pipeline builds every registered check from the audit settings (a check that is not configured
returns None), feeds it each chunk's rows, attributions and labels (``update``), merges partial
checks from other workers (``merge``: required of every check that accumulates, checked when
its class is defined), and finally hands it the ranked sensitivity table. Its
:class:`CheckResult` carries everything the report writers render, so a new check needs no
edits in them:

- gates: pass/fail tests against a limit (a failed gate fails the audit, exit 1);
- warnings: things worth a look that do not fail the audit;
- findings (problems, listed first) and notes (context, listed after every check's findings);
- tables: extra CSV files to write, by file name;
- summary: entries for summary.json, by top-level key (``robustness``: [...]);
- report_tables: small titled tables for report.md; sections: titled markdown
  sections for report.md (title -> lines), for results that are more than a table.

A check that needs the model or the final feature statistics per row (an attack, a finite
step) sets ``replays = True``: once every row is read and the stds are exact, the pipeline
replays the spill and hands it each chunk again (:class:`ReplayChunk`) with the prepared
model (:class:`ModelContext`); its ``finish`` then runs after the replay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from sensaudit.core.errors import ConfigError, describe
from sensaudit.core.jacobian import Model
from sensaudit.methods.base import Attributions
from sensaudit.settings.options import build_options
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.label_correlation import LabelTies


@dataclass
class Gate:
    """One pass/fail test: ``subject`` (a feature, usually) of ``output`` against ``limit``.

    ``details`` are the figures behind it, in the order summary.json lists them.
    """

    check: str
    subject: str
    output: str
    passed: bool
    limit: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Notice:
    """A warning: worth a look, but not a failed gate."""

    check: str
    subject: str
    output: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    check: str
    gates: list[Gate] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    report_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    sections: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> list[Gate]:
        return [gate for gate in self.gates if not gate.passed]


@dataclass
class Ranking:
    """What checks see when they finish: the ranked sensitivity table and its axes."""

    table: pd.DataFrame  # results.SENSITIVITY_COLUMNS, one row per (output, feature)
    features: list[str]
    outputs: list[str]
    # The attributions are per unit of the feature (gradients: scaled by the feature's std
    # into the shares) or already in score units (methods/base.py).
    per_unit: bool = True
    # The prepared model (x -> the audited outputs) and its device, for checks that probe it
    # on rows they kept during the read (proxy_limits); None where no model is at hand.
    model: Model | None = None
    device: torch.device | None = None
    dtype: torch.dtype | None = None  # the model's input dtype, the one x reaches it in
    # Each feature's correlation with the label over the training rows (data.train), for the
    # suspects check's test of whether that tie holds on the audited rows; None without them.
    training: LabelTies | None = None


@dataclass
class ModelContext:
    """What replaying checks know of the model, once the feature statistics are final."""

    model: Model  # x [rows, features] -> the audited outputs [rows, outputs]
    module: object  # the model as loaded (module tree, exported graph, ...), to look inside
    output_index: int | None  # the output model.output selected from module's, if any
    std: torch.Tensor  # float64 [features], over every row read
    minimum: torch.Tensor  # float64 [features], over every row read
    maximum: torch.Tensor  # float64 [features]
    features: list[str]
    outputs: list[str]
    path: str  # the model file, for messages
    table: pd.DataFrame  # the ranked sensitivity table (results.SENSITIVITY_COLUMNS)


@dataclass
class ReplayChunk:
    """One chunk of the replay: the rows' inputs and what the read pass found for them."""

    rows: np.ndarray  # int64 [rows] row numbers
    ids: pa.Array | np.ndarray  # [rows]
    x: torch.Tensor  # [rows, features] on the model's device, in its dtype
    scores: torch.Tensor  # [rows, outputs] (CPU, model dtype)
    values: torch.Tensor  # [rows, outputs, features] attributions (CPU, model dtype)
    finite: torch.Tensor  # bool [rows]: the rows the statistics use


# The hooks that see rows chunk by chunk. A check that overrides one holds state built from
# the rows its engine worker read; on the Ray engine only a merge brings it to the driver.
PER_CHUNK_HOOKS = ("update", "update_columns", "replay")


class Check(ABC):
    name: ClassVar[str]
    # The check's own audit key (`audit.robustness`), if it has one: `audit.checks.<name>`
    # would then be a second, silently ignored place to configure it.
    config_key: ClassVar[str | None] = None
    # The check's options, a frozen dataclass declared with settings.options.option() beside
    # the check: the config parses, checks and documents `audit.checks.<name>` (or
    # `audit.<config_key>`) from it; :meth:`configured` builds it from the settings.
    Options: ClassVar[type | None] = None
    # True: the pipeline hands the check every chunk again in the replay (``replay``).
    replays: ClassVar[bool] = False
    # True: the verdict is about the model (a slope, an attack, a layer), so it must be the
    # same under every attribution method (tests/test_method_conformance.py holds each such
    # check to that); False: it judges the shares, which are what the chosen method measures.
    judges_the_model: ClassVar[bool] = False
    # Set per class at definition: True when it overrides a per-chunk hook, so it holds state
    # from rows and the engines merge its partials; False when it reads only the ranking.
    accumulates: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "update_labelled" in vars(cls):  # the old second hook would never be called now
            raise TypeError(f"{cls.__qualname__} defines update_labelled, which the pipeline no "
                            "longer calls: define update(self, rows, x, attributions, labels) "
                            "instead (labels is None when the audit has no data.label)")
        hooks = [hook for hook in PER_CHUNK_HOOKS if getattr(cls, hook) is not getattr(Check, hook)]
        cls.accumulates = bool(hooks)
        if not hooks:
            return
        # A missing merge is refused here, not at run time: the local engine never merges, so
        # the state a check gathers would vanish only on Ray (rows counted locally, 0 there).
        # An inherited merge counts only from a class that accumulates too, so it was written
        # for that class's own state.
        owner = next(base for base in cls.__mro__ if "merge" in vars(base))
        if owner is Check or not any(hook in vars(base) for base in owner.__mro__
                                     if base is not Check for hook in PER_CHUNK_HOOKS):
            raise TypeError(
                f"{cls.__qualname__} overrides {hooks[0]}() but defines no merge(): on the Ray "
                "engine each worker's partial check is merged into the driver's, and a check "
                "without merge() silently loses what those workers saw. Write "
                f"`def merge(self, other: Check) -> None` that folds other's state (the same "
                f"check over other rows) into self, as if {hooks[0]}() had seen them all")

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: AuditSettings) -> Check | None:
        """This check as the settings configure it, or None when it is not asked for."""

    @classmethod  # noqa: B027 - an optional hook
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        """The feature names this check's settings give (a group's columns, an expectation's
        feature), checked against the audited features once the table is open and before any
        row is read: a typo must stop the audit, not silently switch the check off. Raises a
        ConfigError naming the dotted key (the caller adds the file's name)."""

    @classmethod
    def data_columns(cls, settings: AuditSettings) -> tuple[tuple[str, str], ...]:
        """The data columns this check reads beside the features (a protected attribute), each
        with the dotted key naming it: the reader loads them into every chunk and hands them
        to :meth:`update_columns`. A column missing from the data stops the audit."""
        return ()

    @classmethod
    def configured(cls, settings: AuditSettings) -> Any:
        """This check's options from ``audit.checks.<name>`` (an instance of
        :attr:`Options`, defaults filled in), or None when the settings do not name the check.
        Checked against the declared limits here too: settings built in Python arrive
        unchecked."""
        raw = settings.checks.get(cls.name)
        if cls.name not in settings.checks:
            return None
        where = f"audit.checks.{cls.name}"
        if cls.Options is None:
            if raw:
                raise ConfigError(f"{where}: this check has no options (got {describe(raw)})")
            return None
        return build_options(cls.Options, raw, where, from_config=False)

    def update(self, rows: np.ndarray, x: torch.Tensor,  # noqa: B027 - optional hook
               attributions: Attributions, labels: np.ndarray | None) -> None:
        """One chunk: row numbers [rows], inputs [rows, features], their attributions, and the
        chunk's labels, float64 [rows] (NaN where a label is missing), or None when the audit
        has no ``data.label``. Checks that only read the final ranking leave this as it is;
        a check that overrides it must define :meth:`merge`."""

    def update_columns(self, rows: np.ndarray, x: torch.Tensor,  # noqa: B027
                       attributions: Attributions, columns: Mapping[str, np.ndarray]) -> None:
        """One chunk, for a check that reads :meth:`data_columns`: as :meth:`update`, with
        those columns' values by name (float64 [rows], NaN where missing, or an object array
        of text levels, None where missing), for the same rows. A check that overrides it must
        define :meth:`merge`."""

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:  # noqa: B027
        """One chunk again, after the read, with the model and final statistics (checks
        with ``replays = True``); a check that overrides it must define :meth:`merge`."""

    def merge(self, other: Check) -> None:
        """Fold in the same check run over other rows (another worker's partition). The
        engines merge only checks that accumulate (:attr:`accumulates`), and every one of
        those defines this (enforced at class definition), so reaching here is a bug."""
        raise NotImplementedError(f"{type(self).__qualname__} accumulates nothing per chunk: "
                                  "the engines do not merge it")

    @abstractmethod
    def finish(self, ranking: Ranking) -> CheckResult:
        """Judge the whole audit."""
