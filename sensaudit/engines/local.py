"""The local engine: the audit plan (:mod:`sensaudit.pipeline.plan`) run in this process, over
one partition, every chunk of the data in order.

It reads the data once when it can: the statistics pass runs only when the method needs its
figures before the first row, otherwise the read pass measures them as it goes. A row's
contribution is measured from the baseline, final only once every row is read, so the per-row
work of the rows pass takes one of two paths:

- **Nothing reads every row again** (no check replays, no compare, no per-row file of every
  row): the report's example rows are chosen during the read against the baseline as it stands
  (:mod:`sensaudit.pipeline.example_candidates`) and settled against the final one; no per-row
  result is kept (and, when a choice cannot be certified exact, a second pass chooses again).
- **Something does**: each chunk's compact per-row results go to a
  :class:`~sensaudit.pipeline.spill.Spill` during the read and are replayed through the plan's
  rows step (:mod:`sensaudit.pipeline.replay`).

The per-row file's rows (:class:`~sensaudit.pipeline.example_rows.ExampleRows`) are kept only
as far as ``report.examples`` asks.
"""

from __future__ import annotations

from sensaudit.inputs.models import LoadedModel
from sensaudit.inputs.table_layout import Table
from sensaudit.pipeline.baselines import FeatureSummary, Reference, baseline_vector, needs_data
from sensaudit.pipeline.compare import ModelPair
from sensaudit.pipeline.example_rows import ExampleRows
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.pass_state import Chunks, ModelPass, Progress, ProvisionalBaseline, ReadPass
from sensaudit.pipeline.plan import (
    Final,
    MethodInputs,
    Outcome,
    Plan,
    RowsDone,
    Statistics,
    audit_plan,
    check_rows,
    comparison,
    run,
)
from sensaudit.pipeline.replay import replay, settle_examples
from sensaudit.pipeline.spill import Spill
from sensaudit.pipeline.steps import (
    RowWork,
    check_same_outputs,
    example_drivers,
    model_context,
    read_step,
    start_model,
)
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import AuditSettings, CompareSettings, ModelConfig
from sensaudit.stats.label_correlation import LabelTies
from sensaudit.stats.row_stats import FeatureRange


def audit_local(models: list[LoadedModel], chunks: Chunks, plan: Plan, *, progress: Progress,
                examples: ExampleRows | None = None) -> Outcome:
    """The plan over ``chunks`` (every call a fresh iterator over the same rows) in this
    process; ``examples``: the per-row file's rows, as report.examples asks."""
    return run(plan, LocalEngine(models, chunks, progress=progress, examples=examples))


def compare_local(models: list[LoadedModel], chunks: Chunks, table: Table,
                  settings: AuditSettings, cmp: CompareSettings, *,
                  model_cfg: ModelConfig | None, source: object, progress: Progress,
                  notes: list[str] | None = None, replicas: tuple[int, int] = (0, 0),
                  inputs: ModelPair = (None, None),
                  training: LabelTies | None = None) -> ComparisonResult:
    """Audit the old and new model (then ``replicas`` retrained copies of each) on the same
    chunks, one read of the data, and measure how their sensitivities moved
    (:func:`~sensaudit.pipeline.plan.comparison`). ``inputs``: old's and new's own columns
    when they take different ones (:mod:`sensaudit.pipeline.compare`)."""
    plan = audit_plan(settings, table, source, model_cfg=model_cfg, compare=cmp,
                      notes=notes or (), training=training)
    return comparison(plan, audit_local(models, chunks, plan, progress=progress), replicas,
                      inputs=inputs)


class LocalEngine:
    """The plan's passes over one partition: every chunk ``chunks()`` yields."""

    statistics_first = False  # the read keeps per-row results while something needs them

    def __init__(self, models: list[LoadedModel], chunks: Chunks, *, progress: Progress,
                 examples: ExampleRows | None = None):
        self.models, self.chunks, self.progress = models, chunks, progress
        self.sink = examples.sink() if examples is not None else None
        # sink_limit: the sink is given at least the first this many rows (and may stop
        # taking them there), and with all_or_none every row when at most this many are
        # audited and none beyond (the results then say examples_streamed False).
        self.sink_limit = examples.limit if examples is not None else None
        self.all_or_none = examples is not None and examples.all_or_none
        self.replay_all = False

    def statistics(self, plan: Plan) -> Statistics:
        """The pre-pass: exact means and stds, and medians when the baseline is the median."""
        statistics = plan.statistics(ranges=False)
        for chunk in self.chunks():
            statistics.update(chunk)
            self.progress("statistics", statistics.rows_read, plan.table.row_count)
        return statistics

    def read(self, plan: Plan, inputs: MethodInputs, statistics: Statistics | None,
             reference: Reference | None) -> ReadPass:
        # Per-row results are kept only for what reads every row after the pass: the
        # per-row file, compare's agreement, and checks that replay the rows. The report's
        # example rows are otherwise chosen during the read (example_candidates).
        self.replay_all = (plan.compare is not None or plan.replays
                           or (self.sink is not None and self.sink_limit is None))
        return read_pass(
            self.models, self.chunks, plan, progress=self.progress,
            keep_rows=self.replay_all or self.sink is not None,
            medians=statistics is None and plan.settings.baseline == "median",
            spill_limit=None if self.replay_all else self.sink_limit,
            spill_all_or_none=self.all_or_none,
            provisional=None if self.replay_all else _provisional(plan, reference))

    def rows(self, plan: Plan, read: ReadPass, final: Final) -> RowsDone:
        table, settings, method, std = plan.table, plan.settings, plan.method, final.std

        def fresh() -> list[ExampleDrivers]:
            return [example_drivers(mp, table, final.baseline, settings, method, std)
                    for mp in read.models]

        try:
            drivers = fresh()
        except BaseException:
            read.spill.close()
            raise
        sink = self.sink
        streamed = sink is None or read.spilled or not self.all_or_none
        if self.replay_all and self.all_or_none and self.sink_limit is not None \
                and read.moments.count > self.sink_limit:
            # Replayed for the checks or compare, but more rows than the sink takes one by one.
            sink, streamed = None, sink is None
        if self.replay_all:
            contexts = ([model_context(mp, read.ranges, std, r)
                         for mp, r in zip(read.models, final.rankings, strict=True)]
                        if plan.replays else [])
            replay(read, RowWork(drivers=drivers, contexts=contexts, compared=read.compared,
                                 std=std, per_unit=method.per_unit),
                   progress=self.progress, example_sink=sink)
            return RowsDone(drivers, streamed)
        if sink is not None and streamed:
            # The rows kept for the per-row file (the first sink_limit or more); the report's
            # examples come from the candidates, chosen over every row.
            replay(read, RowWork(drivers=fresh()), progress=self.progress, example_sink=sink)
        read.spill.close()
        drivers = settle_examples(read, drivers, self.chunks, method, self.progress, fresh,
                                  std if method.per_unit else None)
        return RowsDone(drivers, streamed)

    def notes(self) -> list[str]:
        return []


def read_pass(models: list[LoadedModel], chunks: Chunks, plan: Plan, *, progress: Progress,
              keep_rows: bool = True, medians: bool = False, spill_limit: int | None = None,
              spill_all_or_none: bool = False,
              provisional: ProvisionalBaseline | None = None) -> ReadPass:
    """The one read of the data: moments, every model's attributions, sums and checks
    (:func:`~sensaudit.pipeline.steps.read_step`); ``medians``: also the median sample (a
    median baseline without a pre-pass).

    Models are probed on the first chunk (input width, output shape, row independence).
    ``keep_rows`` False: nothing needs per-row results afterwards, so none are spilled;
    ``spill_limit``: per-row results are kept for the first rows only, at least this many
    (whole chunks); with ``spill_all_or_none``, for every row while the rows read are at most
    this many, and beyond that for none (the spill is dropped and ``ReadPass.spilled`` is
    False). ``provisional``: choose the report's example rows during the read
    (:mod:`sensaudit.pipeline.example_candidates`), ranked against this baseline.
    """
    table, settings, method = plan.table, plan.settings, plan.method
    summary = FeatureSummary(len(table.features), median=medians)
    moments = summary.moments
    ranges = FeatureRange(len(table.features))
    compared = plan.new_compared()
    spill = Spill()
    spilled = keep_rows
    spill_rows = 0
    passes: list[ModelPass] = []
    dropped = 0
    try:
        for chunk in chunks():
            dropped += chunk.dropped
            if not len(chunk.x):
                continue
            summary.update(chunk.rows, chunk.x, exact=chunk.exact,
                           integer_max=chunk.integer_max)
            ranges.update(chunk.x)
            if not passes:
                passes = [start_model(m, chunk.x, table, settings, plan.model_cfg, plan.source,
                                      per_unit=method.per_unit if provisional else None)
                          for m in models]
                check_same_outputs(passes)
            baseline = provisional(summary) if provisional is not None else None
            results = read_step(method, passes, chunk, candidates_baseline=baseline,
                                compared=compared, table=table, source=plan.source)
            if spilled and spill_limit is not None and moments.count > spill_limit \
                    and spill_all_or_none:
                spill.close()  # past the limit: the rows are not wanted one by one after all
                spilled = False
            if spilled and (spill_limit is None or spill_rows < spill_limit):
                spill.append(chunk.rows, chunk.ids, chunk.labels,
                             [(a.scores, a.values) for a in results], x=chunk.x)
                spill_rows += len(chunk.rows)
            progress("audit", moments.count + dropped, table.row_count)
        check_rows(moments, table)
    except BaseException:
        spill.close()
        raise
    return ReadPass(moments=moments, dropped=dropped, models=passes, spill=spill,
                    summary=summary, ranges=ranges, spilled=spilled, compared=compared)


def _provisional(plan: Plan, reference: Reference | None) -> ProvisionalBaseline:
    """The baseline the example candidates are ranked against during the read: the final one
    when it is already known (a pre-pass, or a baseline that needs no data), else the one the
    rows read so far give (their means, their medians)."""
    spec, features = plan.settings.baseline, plan.table.features
    if reference is not None or not needs_data(spec, features):
        known = baseline_vector(spec, reference, features)
        return lambda summary: known
    return lambda summary: baseline_vector(spec, summary.reference(summary.moments.std),
                                           features)
