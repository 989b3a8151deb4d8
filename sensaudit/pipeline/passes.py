"""The audit's passes over the data, feeding the method, the statistics and the checks.

0. **Statistics**, only for a method that needs them before its first row (a data-derived
   baseline, SmoothGrad's noise scale; :mod:`sensaudit.pipeline.baselines`): a pre-pass measuring
   the feature means, standard deviations and (for a median baseline) medians.
1. **Read** (the data's one read): every chunk's feature moments, each model
   (:mod:`sensaudit.pipeline.model_ready`) and its attributions (the configured method), their sums,
   each check's per-chunk state and the candidates for the report's example rows
   (:mod:`sensaudit.pipeline.example_candidates`). Only when something reads every row again
   (examples.csv, compare's per-row agreement, a check that replays) do the chunk's compact
   per-row results go to a :class:`~sensaudit.pipeline.spill.Spill`.
2. **Rank**: feature stds are now exact, so each model's sensitivity table is ranked (with the
   rows of ``audit.groups``; :mod:`sensaudit.pipeline.judging`).
3. **Replay** (:mod:`sensaudit.pipeline.replay`) the spill, when there is one: per-row
   contributions, examples.csv rows, the per-row work of checks that need the model and the final
   statistics (``Check.replays``: an attack, a finite step), and whatever else a caller
   (``compare``) needs per row.
   Otherwise the example candidates are settled against the final baseline (and, when their
   choice cannot be certified exact, chosen again in a second pass over the data).
4. **Judge**: the checks finish on the ranked table and what they gathered.

Everything here is a sum that merges (:mod:`sensaudit.stats.accumulators`), so another engine can
run the read pass over partitions and merge the partial :class:`ReadPass` results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sensaudit.checks import build_checks
from sensaudit.core.errors import ConfigError, DataError, ModelError
from sensaudit.inputs.models import LoadedModel
from sensaudit.inputs.table_chunks import Chunk
from sensaudit.inputs.table_layout import Table
from sensaudit.methods import METHODS
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.pipeline.baselines import (
    FeatureSummary,
    Reference,
    baseline_vector,
    check_baseline,
    needs_data,
)
from sensaudit.pipeline.example_candidates import ExampleCandidates
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.groups import proxy_features
from sensaudit.pipeline.judging import (
    audit_result,
    checked_std,
    feature_std,
    judge_model,
    method_details,
    rank_model,
    skipped_note,
)
from sensaudit.pipeline.model_ready import PreparedModel, attribute_chunk, narrower, prepare_model
from sensaudit.pipeline.pass_state import (
    ChunkHook,
    Chunks,
    ChunkState,
    ExampleSink,
    ModelPass,
    Progress,
    ProvisionalBaseline,
    ReadPass,
)
from sensaudit.pipeline.replay import example_drivers, model_context, replay, settle_examples
from sensaudit.pipeline.spill import Spill, SpilledChunk
from sensaudit.results.audit_result import AuditResult
from sensaudit.settings.sections import AuditSettings, ModelConfig
from sensaudit.stats.accumulators import AttributionSums, FeatureMoments, finite_rows
from sensaudit.stats.row_stats import FeatureRange


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


def statistics_pass(chunks: Chunks, table: Table, settings: AuditSettings, *,
                    progress: Progress) -> Reference:
    """The pre-pass: exact means and stds, and medians when the baseline is the median."""
    summary = FeatureSummary(len(table.features), median=settings.baseline == "median")
    dropped = 0
    for chunk in chunks():
        dropped += chunk.dropped
        summary.update(chunk.rows, chunk.x, exact=chunk.exact, integer_max=chunk.integer_max)
        progress("statistics", summary.moments.count + dropped, table.row_count)
    check_rows(summary.moments, table)
    return summary.reference(checked_std(summary.moments.std, table))


def read_pass(models: list[LoadedModel], chunks: Chunks, table: Table, settings: AuditSettings,
              method: AttributionMethod, *, model_cfg: ModelConfig | None, source: object,
              progress: Progress, on_chunk: ChunkHook | None = None,
              keep_rows: bool = True, medians: bool = False, spill_limit: int | None = None,
              spill_all_or_none: bool = False,
              provisional: ProvisionalBaseline | None = None) -> ReadPass:
    """The one read of the data: moments, every model's attributions, sums and checks;
    ``medians``: also the median sample (a median baseline without a pre-pass).

    Models are probed on the first chunk (input width, output shape, row independence).
    ``keep_rows`` False: nothing needs per-row results afterwards, so none are spilled;
    ``spill_limit``: per-row results are kept for the first rows only, at least this many
    (whole chunks); with ``spill_all_or_none``, for every row while the rows read are at most
    this many, and beyond that for none (the spill is dropped and ``ReadPass.spilled`` is
    False). ``provisional``: choose the report's example rows during the read
    (:mod:`sensaudit.pipeline.example_candidates`), ranked against this baseline.
    """
    summary = FeatureSummary(len(table.features), median=medians)
    moments = summary.moments
    ranges = FeatureRange(len(table.features))
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
                passes = [_start(m, chunk.x, table, settings, model_cfg, source,
                                 per_unit=method.per_unit if provisional else None)
                          for m in models]
                check_same_outputs(passes)
            baseline = provisional(summary) if provisional is not None else None
            results = []
            for model_pass in passes:
                attributions, finite = read_chunk(method, model_pass.prepared, model_pass,
                                                  chunk)
                if model_pass.candidates is not None and baseline is not None:
                    model_pass.candidates.update(chunk.rows, chunk.ids, chunk.labels,
                                                 attributions.scores, attributions.values,
                                                 finite, chunk.x, baseline)
                results.append(attributions)
            if on_chunk is not None:
                on_chunk(chunk, results)
            if spilled and spill_limit is not None and moments.count > spill_limit \
                    and spill_all_or_none:
                spill.close()  # past the limit: the rows are not wanted one by one after all
                spilled = False
            if spilled and (spill_limit is None or spill_rows < spill_limit):
                spill.append(chunk.rows, chunk.ids, chunk.labels,
                             [(a.scores, a.values) for a in results], x=chunk.x)
                spill_rows += len(chunk.rows)
            progress("audit", moments.count + dropped, table.row_count)
    except BaseException:
        spill.close()
        raise
    try:
        check_rows(moments, table)
    except DataError:
        spill.close()
        raise
    return ReadPass(moments=moments, dropped=dropped, models=passes, spill=spill,
                    summary=summary, ranges=ranges, spilled=spilled)


def read_chunk(method: AttributionMethod, prepared: PreparedModel, state: ChunkState,
               chunk: Chunk) -> tuple[Attributions, torch.Tensor]:
    """One model's work on one chunk of the read: its attributions, their sums, every
    check's update, and the inputs' moments as the model sees them when its dtype is
    narrower than the data's. Returns the attributions and the rows' finite mask."""
    loaded = prepared.loaded
    x = chunk.x.to(loaded.device, loaded.dtype)
    if x.dtype != chunk.x.dtype and narrower(x.dtype, chunk.x.dtype):
        state.seen = state.seen or FeatureMoments(x.shape[1])
        state.seen.update(x)
    attributions = attribute_chunk(method, prepared, x, chunk.rows)
    finite = finite_rows(attributions.scores, attributions.values)
    state.sums.update(chunk.rows, chunk.ids, attributions.scores, attributions.values, finite)
    for check in state.checks:
        check.update(chunk.rows, x, attributions, chunk.labels)
    return attributions, finite


def check_rows(moments: FeatureMoments, table: Table) -> None:
    if moments.count < 2:
        raise DataError(f"{table.path}: {moments.count} usable row(s); an audit needs at least 2 "
                        "to measure how much each feature varies")


def audit_models(models: list[LoadedModel], chunks: Chunks, table: Table,
                 settings: AuditSettings, *, model_cfg: ModelConfig | None, source: object,
                 progress: Progress, example_sink: ExampleSink | None = None,
                 on_chunk: ChunkHook | None = None,
                 on_replay: Callable[[ReadPass, torch.Tensor],
                                     Callable[[SpilledChunk], None]] | None = None,
                 notes: list[str] | None = None, sink_limit: int | None = None,
                 sink_all_or_none: bool = False
                 ) -> tuple[list[AuditResult], ReadPass, torch.Tensor]:
    """Read, finish and replay for one or more models on the same rows. ``notes`` are the
    caller's context for the reports (how the input columns were matched).

    ``sink_limit``: ``example_sink`` is given at least the first this many rows (and may stop
    taking them there), and with ``sink_all_or_none`` every row when at most this many are
    audited and none beyond (the results then say ``examples_streamed`` False)."""
    method = make_method(settings, source)
    checks = build_checks(settings, source)  # option errors before any data is read
    check_baseline(settings.baseline, table.features, source)
    reference = None
    if needs_prepass(method, settings, table.features):
        reference = statistics_pass(chunks, table, settings, progress=progress)
    if method.needs:  # without a pre-pass, a baseline that needs no data (zero, all given)
        method.prepare(baseline_vector(settings.baseline, reference, table.features),
                       reference.std if reference is not None
                       else torch.full((len(table.features),), float("nan"),
                                       dtype=torch.float64))
    # Per-row results are kept only for what reads every row after the pass: examples.csv,
    # compare's per-row agreement, and checks that replay the rows. The report's example rows
    # are otherwise chosen during the read (example_candidates), with no spill at all.
    replay_all = (on_replay is not None or any(check.replays for check in checks)
                  or (example_sink is not None and sink_limit is None))
    keep_rows = replay_all or example_sink is not None
    read = read_pass(models, chunks, table, settings, method, model_cfg=model_cfg,
                     source=source, progress=progress, on_chunk=on_chunk, keep_rows=keep_rows,
                     medians=reference is None and settings.baseline == "median",
                     spill_limit=None if replay_all else sink_limit,
                     spill_all_or_none=sink_all_or_none,
                     provisional=None if replay_all else _provisional(settings, reference,
                                                                      table.features))
    try:
        std = feature_std(read, table)
        if reference is None:
            if read.summary is None:  # read_pass always measures one; a guard for the types
                raise RuntimeError("the read pass measured no feature statistics")
            reference = read.summary.reference(std)
        baseline = baseline_vector(settings.baseline, reference, table.features)
        details = method_details(method, settings, baseline, reference, table.features)
        rankings = [rank_model(mp, table, std, method, settings) for mp in read.models]
        drivers = [example_drivers(mp, table, baseline, settings, method, std)
                   for mp in read.models]
    except BaseException:
        read.spill.close()
        raise

    def fresh() -> list[ExampleDrivers]:
        return [example_drivers(mp, table, baseline, settings, method, std)
                for mp in read.models]

    streamed = example_sink is None or read.spilled or not sink_all_or_none
    if replay_all and sink_all_or_none and sink_limit is not None \
            and read.moments.count > sink_limit:
        # Replayed for the checks or compare, but more rows than the sink takes one by one.
        example_sink, streamed = None, example_sink is None
    if replay_all:
        replay(read, drivers, progress=progress, example_sink=example_sink,
               on_chunk=on_replay(read, std) if on_replay else None,
               contexts=[model_context(mp, read, std, r)
                         for mp, r in zip(read.models, rankings, strict=True)])
    else:
        if example_sink is not None and streamed:
            # The rows kept for the per-row file (the first sink_limit or more); the report's
            # examples come from the candidates below, chosen over every row.
            replay(read, fresh(), progress=progress, example_sink=example_sink)
        read.spill.close()
        drivers = settle_examples(read, drivers, chunks, method, progress, fresh,
                                   std if method.per_unit else None)
    integer_max = read.summary.integer_max if read.summary is not None else None
    finished = [judge_model(mp, ranking, std, integer_max)
                for mp, ranking in zip(read.models, rankings, strict=True)]
    notes = [*(notes or []), *skipped_note(table)]
    results = [audit_result(mp, ranked, checks, d, read, table, settings, method, notes,
                            details, examples_streamed=streamed)
               for mp, (ranked, checks), d in zip(read.models, finished, drivers, strict=True)]
    return results, read, std


def _provisional(settings: AuditSettings, reference: Reference | None,
                 features: tuple[str, ...]) -> ProvisionalBaseline:
    """The baseline the example candidates are ranked against during the read: the final one
    when it is already known (a pre-pass, or a baseline that needs no data), else the one the
    rows read so far give (their means, their medians)."""
    if reference is not None or not needs_data(settings.baseline, features):
        known = baseline_vector(settings.baseline, reference, features)
        return lambda summary: known
    return lambda summary: baseline_vector(settings.baseline,
                                           summary.reference(summary.moments.std), features)


def _start(loaded: LoadedModel, x: torch.Tensor, table: Table, settings: AuditSettings,
           model_cfg: ModelConfig | None, source: object, *,
           per_unit: bool | None = None) -> ModelPass:
    """Probe one model and start its accumulators; ``per_unit`` given: also choose the
    example candidates during the read, for a method of that kind."""
    prepared = prepare_model(loaded, x.to(loaded.device, loaded.dtype), model_cfg, source,
                             table)
    candidates = None
    if per_unit is not None:
        proxies = proxy_features([p.feature for p in settings.proxies], settings.groups)
        candidates = ExampleCandidates(
            len(prepared.outputs), [table.features.index(p) for p in proxies
                                    if p in table.features],
            keep=settings.examples_in_report, per_unit=per_unit)
    return ModelPass(prepared=prepared,
                     sums=AttributionSums(len(prepared.outputs), len(table.features)),
                     checks=build_checks(settings, source), candidates=candidates)


def check_same_outputs(passes: list[ModelPass]) -> None:
    if len({len(p.prepared.outputs) for p in passes}) > 1:
        first, second = passes[0].prepared, passes[1].prepared
        raise ModelError(f"{first.loaded.path} returns {len(first.outputs)} output(s) but "
                         f"{second.loaded.path} returns {len(second.outputs)}; compare needs "
                         "the same outputs (select one with model.output)")
