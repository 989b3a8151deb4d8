"""The audit as one plan: which method and checks, which passes run, what each feeds the next,
how the partial results of a pass merge, and what is judged at the end. Both engines execute it
(:mod:`sensaudit.engines.local`, :mod:`sensaudit.engines.ray`); neither repeats its sequence.

:func:`audit_plan` checks the settings against the data's features and fixes the method and the
checks before any row is read. :func:`run` is the sequence, for one model and for compare's
several, on any :class:`Engine`:

0. **Statistics** (:class:`Statistics`): feature moments, ranges and (for a median baseline)
   the median sample. Run first when the method needs them before its first row (a baseline
   measured from the data, SmoothGrad's noise scale), or when the engine cannot keep per-row
   results until the read is over (Ray: its read pass then does the per-row work at once).
1. **Read**: every chunk through :func:`~sensaudit.pipeline.steps.read_step` (each model's
   attributions, their sums, every check's update, the example candidates, compare's bootstrap);
   partials merge with :func:`merge_models` and :meth:`~.pass_state.Compared.merge`.
2. **Rank**: the feature stds are exact, so each model's sensitivity table is ranked
   (:mod:`sensaudit.pipeline.judging`).
3. **Rows**: the per-row work that needs the final statistics and ranking
   (:func:`~sensaudit.pipeline.steps.rows_step`: example rows, checks that replay rows, compare's
   agreement), over the rows the engine kept or computed again; its partials merge as the read's.
4. **Judge**: the checks finish on the ranked table; the results are assembled.

Example rows for a per-row file (``report.examples``) are asked for with
:class:`~sensaudit.pipeline.example_rows.ExampleRows`, the one interface the report writers use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from sensaudit.checks import build_checks
from sensaudit.checks.base import Check, Ranking
from sensaudit.core.errors import ConfigError, DataError
from sensaudit.inputs.table_chunks import Chunk
from sensaudit.inputs.table_layout import Table
from sensaudit.methods import METHODS
from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.baselines import (
    FeatureSummary,
    Reference,
    baseline_vector,
    check_baseline,
    needs_data,
)
from sensaudit.pipeline.compare import ModelPair, comparison_result
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.judging import (
    audit_result,
    feature_std,
    judge_model,
    method_details,
    rank_model,
    skipped_note,
)
from sensaudit.pipeline.pass_state import ChunkState, Compared, ReadPass
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import AuditSettings, CompareSettings, ModelConfig
from sensaudit.stats.accumulators import FeatureMoments
from sensaudit.stats.label_correlation import LabelTies
from sensaudit.stats.row_stats import FeatureRange


@dataclass(frozen=True)
class Plan:
    """One audit (or compare's several, on the same rows), fixed before any row is read."""

    settings: AuditSettings
    table: Table
    source: object  # the config file, for messages
    model_cfg: ModelConfig | None  # model.output, output_names, transform (model_ready)
    method: AttributionMethod
    # The method needs feature statistics before its first row: a pass of their own.
    prepass: bool
    # Some check replays rows with the model, the final stds and the ranking (Check.replays).
    replays: bool
    compare: CompareSettings | None = None  # compare's paired bootstrap and agreement
    notes: tuple[str, ...] = ()  # the caller's context for the reports (how inputs matched)
    # Each feature's correlation with the label over the training rows (data.train), read
    # before the audit (inputs/training_rows.py); the suspects check tests it against the
    # audited rows'.
    training: LabelTies | None = None

    def new_compared(self) -> Compared | None:
        """Compare's empty partials, for one partition of the rows."""
        if self.compare is None:
            return None
        return Compared.start(self.compare, len(self.table.features),
                              self.settings.examples_in_report)

    def statistics(self, *, ranges: bool) -> Statistics:
        """The statistics pass's empty partial; ``ranges``: also each feature's min..max."""
        n = len(self.table.features)
        return Statistics(summary=FeatureSummary(n, median=self.settings.baseline == "median"),
                          ranges=FeatureRange(n) if ranges else None)


def audit_plan(settings: AuditSettings, table: Table, source: object, *,
               model_cfg: ModelConfig | None, compare: CompareSettings | None = None,
               notes: Sequence[str] = (), training: LabelTies | None = None) -> Plan:
    """The plan for these settings and data; option errors are raised here, before any row
    is read."""
    method = make_method(settings, source)
    checks = build_checks(settings, source)
    check_baseline(settings.baseline, table.features, source)
    return Plan(settings=settings, table=table, source=source, model_cfg=model_cfg,
                method=method, prepass=needs_prepass(method, settings, table.features),
                replays=any(check.replays for check in checks), compare=compare,
                notes=tuple(notes), training=training)


def make_method(settings: AuditSettings, source: object) -> AttributionMethod:
    cls = METHODS.get(settings.method)
    if cls is None:
        raise ConfigError(f"{source}: audit.method must be one of {', '.join(METHODS)} "
                          f"(got '{settings.method}')")
    try:  # its options, checked against its declaration (settings built in Python)
        return cls.from_settings(settings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def needs_prepass(method: AttributionMethod, settings: AuditSettings,
                  features: tuple[str, ...]) -> bool:
    """Whether the method needs feature statistics before its first row: its noise scale,
    or a baseline measured from the data."""
    return "std" in method.needs or ("baseline" in method.needs
                                     and needs_data(settings.baseline, features))


# --- partial results and their merges ------------------------------------------------------------


@dataclass
class Statistics:
    """The statistics pass over some rows; merges into the single pass's figures."""

    summary: FeatureSummary
    ranges: FeatureRange | None
    dropped: int = 0
    rows_read: int = 0  # rows kept or dropped

    def update(self, chunk: Chunk) -> None:
        self.dropped += chunk.dropped
        self.rows_read += len(chunk.rows) + chunk.dropped
        self.summary.update(chunk.rows, chunk.x, exact=chunk.exact,
                            integer_max=chunk.integer_max)
        if self.ranges is not None:
            self.ranges.update(chunk.x)

    def merge(self, other: Statistics) -> None:
        self.summary.merge(other.summary)
        if self.ranges is not None and other.ranges is not None:
            self.ranges.merge(other.ranges)
        self.dropped += other.dropped
        self.rows_read += other.rows_read


def merge_models(into: Sequence[ChunkState], parts: Sequence[ChunkState],
                 features: int) -> None:
    """Each model's read partials into the merged ones: sums, the checks that accumulate and
    the inputs' moments as a narrower model sees them."""
    for mine, theirs in zip(into, parts, strict=True):
        mine.sums.merge(theirs.sums)
        merge_checks(mine.checks, theirs.checks)
        if theirs.seen is not None:
            mine.seen = mine.seen or FeatureMoments(features)
            mine.seen.merge(theirs.seen)


def merge_checks(into: Sequence[Check], parts: Sequence[Check]) -> None:
    """Checks of the same registry order, pairwise; one that reads only the ranking has
    nothing to merge."""
    for mine, theirs in zip(into, parts, strict=True):
        if mine.accumulates:
            mine.merge(theirs)


def merge_drivers(into: Sequence[ExampleDrivers], parts: Sequence[ExampleDrivers]) -> None:
    for mine, theirs in zip(into, parts, strict=True):
        mine.merge(theirs)


# --- the sequence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodInputs:
    """What the method is prepared with before its first row, on every engine: the baseline
    and stds measured by the statistics pass when the method needs them so, else a baseline
    that needs no data (zero, all given)."""

    baseline: torch.Tensor | None  # float64 [features]; None: the method needs nothing
    std: torch.Tensor | None

    @classmethod
    def of(cls, plan: Plan, reference: Reference | None) -> MethodInputs:
        method, features = plan.method, plan.table.features
        if not method.needs:
            return cls(baseline=None, std=None)
        if plan.prepass and reference is not None:
            return cls(baseline=baseline_vector(plan.settings.baseline, reference, features),
                       std=reference.std)
        return cls(baseline=baseline_vector(plan.settings.baseline, None, features),
                   std=torch.full((len(features),), float("nan"), dtype=torch.float64))

    def prepare(self, method: AttributionMethod) -> None:
        if self.baseline is not None and self.std is not None:
            method.prepare(self.baseline, self.std)


@dataclass(frozen=True)
class Final:
    """What the rows pass needs once the read is merged: the exact stds, the statistics, the
    baseline and each model's ranking."""

    std: torch.Tensor
    reference: Reference
    baseline: torch.Tensor
    rankings: list[Ranking]


@dataclass(frozen=True)
class RowsDone:
    """The rows pass's result: each model's example rows, and whether the per-row file got
    the rows it asked for (False: the rows report.md lists instead)."""

    drivers: list[ExampleDrivers]
    streamed: bool = True


class Engine(Protocol):
    """Where the plan's passes run: over which partitions of the rows, and how the partials
    come back to be merged with the plan's merges."""

    # True: the statistics pass runs first whatever the method (the engine keeps no per-row
    # results, so its read does the per-row work and needs the final statistics).
    statistics_first: bool

    def statistics(self, plan: Plan) -> Statistics:
        """The statistics pass, merged; the rows checked (at least 2 usable)."""
        ...

    def read(self, plan: Plan, inputs: MethodInputs, statistics: Statistics | None,
             reference: Reference | None) -> ReadPass:
        """The read pass, merged, with the models probed; ``statistics`` and their
        ``reference`` when they ran first."""
        ...

    def rows(self, plan: Plan, read: ReadPass, final: Final) -> RowsDone:
        """The rows pass (its per-row work), merged; closes the read's spill."""
        ...

    def notes(self) -> list[str]:
        """What the report says of where it ran."""
        ...


@dataclass
class Outcome:
    """Every model's result (old, new, then compare's replicas) and compare's partials."""

    results: list[AuditResult]
    compared: Compared | None


def run(plan: Plan, engine: Engine) -> Outcome:
    """The audit's sequence on ``engine``: statistics, read, rank, rows, judge."""
    table, settings, method = plan.table, plan.settings, plan.method
    statistics = reference = None
    if plan.prepass or engine.statistics_first:
        statistics = engine.statistics(plan)
        check_rows(statistics.summary.moments, table)
        reference = statistics.summary.reference(feature_std(statistics.summary.moments,
                                                             table))
    inputs = MethodInputs.of(plan, reference)
    inputs.prepare(method)
    read = engine.read(plan, inputs, statistics, reference)
    try:
        std = feature_std(read.moments, table)
        if reference is None:
            if read.summary is None:  # the read measures one without a pre-pass
                raise RuntimeError("the read pass measured no feature statistics")
            reference = read.summary.reference(std)
        baseline = baseline_vector(settings.baseline, reference, table.features)
        rankings = [rank_model(mp, table, std, method, settings, plan.training)
                    for mp in read.models]
    except BaseException:
        read.spill.close()
        raise
    done = engine.rows(plan, read, Final(std=std, reference=reference, baseline=baseline,
                                         rankings=rankings))
    integer_max = read.summary.integer_max if read.summary is not None else None
    finished = [judge_model(mp, ranking, std, integer_max)
                for mp, ranking in zip(read.models, rankings, strict=True)]
    details = method_details(method, settings, baseline, reference, table.features)
    notes = [*plan.notes, *skipped_note(table), *engine.notes()]
    results = [audit_result(mp, ranked, checks, drivers, read, table, settings, method, notes,
                            details, examples_streamed=done.streamed)
               for mp, (ranked, checks), drivers in zip(read.models, finished, done.drivers,
                                                        strict=True)]
    return Outcome(results=results, compared=read.compared)


def comparison(plan: Plan, outcome: Outcome, replicas: tuple[int, int], *,
               inputs: ModelPair = (None, None)) -> ComparisonResult:
    """Compare's result from the plan's outcome: old, new, ``replicas`` retrained copies of
    each (:func:`~sensaudit.pipeline.compare.comparison_result`); ``inputs``: old's and new's
    own columns when they take different ones."""
    compared = outcome.compared
    if plan.compare is None or compared is None or compared.agreement is None:
        raise RuntimeError("the plan compared no models")
    return comparison_result(outcome.results, compared.bootstrap, compared.agreement,
                             plan.settings, plan.compare,
                             replicas=replicas, per_unit=plan.method.per_unit, inputs=inputs)


def check_rows(moments: FeatureMoments, table: Table) -> None:
    if moments.count < 2:
        raise DataError(f"{table.path}: {moments.count} usable row(s); an audit needs at least 2 "
                        "to measure how much each feature varies")
