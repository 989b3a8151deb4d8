"""The audit's passes over the data, feeding the method, the statistics and the checks.

0. **Statistics**, only for a method that needs them before its first row (a data-derived
   baseline, SmoothGrad's noise scale; :mod:`sensaudit.baselines`): a pre-pass measuring the
   feature means, standard deviations and (for a median baseline) medians.
1. **Read** (the data's one read): every chunk's feature moments, each model's attributions
   (the configured method), their sums and each check's per-chunk state; the chunk's compact
   per-row results go to a :class:`~sensaudit.spill.Spill`.
2. **Rank**: feature stds are now exact, so each model's sensitivity table is ranked (with the
   rows of ``audit.groups``).
3. **Replay** the spill: per-row contributions (attribution x std), examples.csv rows, the
   strongest examples, the per-row work of checks that need the model and the final
   statistics (``Check.replays``: an attack, a finite step), and whatever else a caller
   (``compare``) needs per row.
4. **Judge**: the checks finish on the ranked table and what they gathered.

Everything here is a sum that merges (:mod:`sensaudit.stats`), so another engine can run the
read pass over partitions and merge the partial :class:`ReadPass` results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from .baselines import (
    FeatureSummary,
    Reference,
    baseline_labels,
    baseline_vector,
    check_baseline,
    describe_baseline,
    needs_data,
)
from .checks import (
    Check,
    CheckResult,
    ModelContext,
    Notice,
    Ranking,
    ReplayChunk,
    build_checks,
)
from .config import AuditSettings, ModelConfig
from .engine import Model, as_output_matrix, check_row_independence
from .errors import ConfigError, DataError, ModelError, first_line
from .example_candidates import ExampleCandidates
from .examples import ExampleDrivers
from .groups import add_group_rows, proxy_features
from .inputs.models import LoadedModel
from .inputs.tables import Chunk, Table
from .methods import METHODS, AttributionMethod, Attributions
from .results import AuditResult, sensitivity_table
from .row_stats import FeatureRange
from .spill import Spill, SpilledChunk
from .stats import AttributionSums, FeatureMoments, finite_rows
from .transforms import transformed

# progress(stage, rows_done, rows_total): stage "statistics" (the pre-pass some methods need),
# "audit" (the read pass: attributions) or "examples" (the replay: per-row contributions);
# rows_total is None while unknown.
Progress = Callable[[str, int, "int | None"], None]
ExampleSink = Callable[[pa.Table], None]
Chunks = Callable[[], Iterator[Chunk]]
# on_chunk(chunk, [attributions per model]) sees every chunk of the read pass.
ChunkHook = Callable[[Chunk, list[Attributions]], None]
# The baseline as it stands after a chunk of the read pass (float64 [features]), given the
# statistics read so far: what the example candidates are ranked against.
ProvisionalBaseline = Callable[[FeatureSummary], torch.Tensor]


@dataclass
class PreparedModel:
    """A scorer wrapped to return only the audited outputs, with their names."""

    loaded: LoadedModel
    module: Model
    outputs: list[str]
    output_index: int | None = None  # the output of loaded.module that model.output selects


@dataclass
class ModelPass:
    """One model's partial results from the read pass."""

    prepared: PreparedModel
    sums: AttributionSums
    checks: list[Check]
    # Moments of the inputs as the model sees them, kept only when its dtype is narrower than
    # the data's (float64 CSV values into a float32 model): see precision_warnings.
    seen: FeatureMoments | None = None
    # The report's example rows chosen during the read (when no replay of every row follows).
    candidates: ExampleCandidates | None = None


@dataclass
class ReadPass:
    moments: FeatureMoments
    dropped: int
    models: list[ModelPass]
    spill: Spill
    ranges: FeatureRange | None = None  # per-feature min..max, for checks that replay
    summary: FeatureSummary | None = None  # the read's feature statistics (moments, medians)
    # False when the spill was dropped for passing its row limit (see read_pass).
    spilled: bool = True


def make_method(settings: AuditSettings, source: object) -> AttributionMethod:
    cls = METHODS.get(settings.method)
    if cls is None:
        raise ConfigError(f"{source}: audit.method must be one of {', '.join(METHODS)} "
                          f"(got '{settings.method}')")
    return cls.from_settings(settings)


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
        summary.update(chunk.rows, chunk.x)
        progress("statistics", summary.moments.count + dropped, table.row_count)
    _check_rows(summary.moments, table)
    return summary.reference(_checked_std(summary.moments.std, table))


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
    False). ``provisional``: choose
    the report's example rows during the read (:mod:`sensaudit.example_candidates`), ranked
    against this baseline.
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
            summary.update(chunk.rows, chunk.x)
            ranges.update(chunk.x)
            if not passes:
                passes = [_start(m, chunk.x, table, settings, model_cfg, source,
                                 per_unit=method.per_unit if provisional else None)
                          for m in models]
                _check_same_outputs(passes)
            baseline = provisional(summary) if provisional is not None else None
            results = []
            for model_pass in passes:
                loaded = model_pass.prepared.loaded
                x = chunk.x.to(loaded.device, loaded.dtype)
                if x.dtype != chunk.x.dtype and _narrower(x.dtype, chunk.x.dtype):
                    model_pass.seen = model_pass.seen or FeatureMoments(x.shape[1])
                    model_pass.seen.update(x)
                attributions = _attribute(method, model_pass.prepared, x, chunk.rows)
                finite = finite_rows(attributions.scores, attributions.values)
                model_pass.sums.update(chunk.rows, chunk.ids, attributions.scores,
                                       attributions.values, finite)
                for check in model_pass.checks:
                    check.update_labelled(chunk.rows, x, attributions, chunk.labels)
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
        _check_rows(moments, table)
    except DataError:
        spill.close()
        raise
    return ReadPass(moments=moments, dropped=dropped, models=passes, spill=spill,
                    summary=summary, ranges=ranges, spilled=spilled)


def _check_rows(moments: FeatureMoments, table: Table) -> None:
    if moments.count < 2:
        raise DataError(f"{table.path}: {moments.count} usable row(s); an audit needs at least 2 "
                        "to measure how much each feature varies")


def feature_std(read: ReadPass, table: Table) -> torch.Tensor:
    """The features' standard deviations over every row read, checked usable."""
    std = read.moments.std
    if not bool((std > 0).any()):
        # No verdict on nothing: with no feature varying, every share would be 0 and every
        # feature rank alike, and a proxy limit would pass for lack of evidence.
        raise DataError(f"{table.path}: every feature is constant over the "
                        f"{read.moments.count:,} rows read, so no feature can be ranked by how "
                        "much it moves the score; audit rows where the features vary")
    return _checked_std(std, table)


def _checked_std(std: torch.Tensor, table: Table) -> torch.Tensor:
    # Values near float64's limit (1e154 and up) overflow the variance, and an infinite std
    # would make every share NaN.
    overflow = (~torch.isfinite(std)).nonzero().flatten().tolist()
    if overflow:
        raise DataError(f"{table.path}: column '{table.features[overflow[0]]}' has values too "
                        "large to measure how much it varies (its variance overflows); rescale "
                        "it")
    return std


def finish_model(model_pass: ModelPass, table: Table, std: torch.Tensor,
                 method: AttributionMethod) -> tuple[pd.DataFrame, list[CheckResult]]:
    """Rank one model's merged sums and let its checks judge them."""
    return judge_model(model_pass, rank_model(model_pass, table, std, method), std)


def rank_model(model_pass: ModelPass, table: Table, std: torch.Tensor,
               method: AttributionMethod, settings: AuditSettings | None = None) -> Ranking:
    """One model's merged sums as the ranked sensitivity table (with ``settings.groups``)."""
    sums, loaded = model_pass.sums, model_pass.prepared.loaded
    if sums.rows == 0 and sums.nonfinite_rows:
        # Even under audit.allow_nonfinite, 0 rows audited leaves nothing to rank.
        ids = ", ".join(map(str, sums.nonfinite_ids[:5]))
        raise ModelError(f"{loaded.path}: the model gave non-finite scores or gradients on all "
                         f"{sums.nonfinite_rows:,} rows (first ids: {ids}), so there is nothing "
                         "to rank")
    if sums.rows and not bool((sums.sum_abs > 0).any()):
        raise ModelError(f"{loaded.path}: every gradient is exactly zero on all {sums.rows:,} rows:"
                         " the score does not respond to any feature (a step function, rounding,"
                         " or a constant output?), so there is nothing to rank")
    features, outputs = list(table.features), model_pass.prepared.outputs
    ranked = sensitivity_table(sums, features, outputs, std, per_unit=method.per_unit)
    for output, group in ranked.groupby("output", sort=False):
        if not bool((group["scaled_sensitivity"] > 0).any()):
            raise ModelError(f"{loaded.path}: output '{output}' responds only to features that "
                             "do not vary in the data (every share is 0), so nothing can be "
                             "ranked; audit rows where those features vary")
    if settings is not None and settings.groups:
        ranked = add_group_rows(ranked, settings.groups)
    return Ranking(table=ranked, features=features, outputs=outputs,
                   per_unit=method.per_unit)


def judge_model(model_pass: ModelPass, ranking: Ranking, std: torch.Tensor
                ) -> tuple[pd.DataFrame, list[CheckResult]]:
    """Let one model's checks judge its ranking; mark the table's rows whose gate failed."""
    ranked = ranking.table
    results = [check.finish(ranking) for check in model_pass.checks]
    if model_pass.seen is not None:
        results.append(precision_warnings(ranking.features, std, model_pass.seen.std,
                                          model_pass.prepared.loaded.dtype))
    failed = {(g.output, g.subject) for r in results for g in r.failed}
    ranked["flagged"] = [(o, f) in failed for o, f in zip(ranked["output"], ranked["feature"])]
    return ranked, results


def example_drivers(model_pass: ModelPass, table: Table, baseline: torch.Tensor,
                    settings: AuditSettings, method: AttributionMethod,
                    std: torch.Tensor | None = None) -> ExampleDrivers:
    return ExampleDrivers(table.features, model_pass.prepared.outputs, top_k=settings.top_k,
                          proxies=proxy_features([p.feature for p in settings.proxies],
                                                 settings.groups),
                          keep=settings.examples_in_report, baseline=baseline,
                          per_unit=method.per_unit,
                          scale=std if method.per_unit else None)


def replay(read: ReadPass, drivers: list[ExampleDrivers], *, progress: Progress,
           example_sink: ExampleSink | None = None,
           on_chunk: Callable[[SpilledChunk], None] | None = None,
           contexts: list[ModelContext] | None = None,
           source: Iterable[SpilledChunk] | None = None) -> None:
    """Per-row work that needed the final stds: examples for each model, the checks that
    replay (given each model's ``contexts``), then ``on_chunk``.

    ``example_sink`` receives the first model's examples rows. ``source``: the per-row
    results to replay, the spill by default (:func:`recomputed` when there is none).
    """
    done = 0
    contexts = contexts or []
    try:
        for chunk in read.spill if source is None else source:
            for i, ((scores, values), model_drivers) in enumerate(zip(chunk.results, drivers)):
                if chunk.x is None:  # the read pass spills every chunk's x
                    raise RuntimeError("the spill holds no feature values")
                rows_table = model_drivers.add(
                    chunk.rows, chunk.ids, chunk.labels, scores, values,
                    finite_rows(scores, values), chunk.x,
                    table=example_sink is not None and i == 0)
                if rows_table is not None and example_sink is not None:
                    example_sink(rows_table)
            for model_pass, context, (scores, values) in zip(read.models, contexts,
                                                              chunk.results):
                _replay_checks(model_pass, context, chunk, scores, values)
            if on_chunk is not None:
                on_chunk(chunk)
            done += len(chunk.rows)
            progress("examples", done, read.moments.count)
    finally:
        read.spill.close()


def model_context(model_pass: ModelPass, read: ReadPass, std: torch.Tensor,
                  ranking: Ranking) -> ModelContext:
    """What the checks that replay know of one model once the read and its ranking are
    final."""
    prepared = model_pass.prepared
    ranges = read.ranges or FeatureRange(len(ranking.features))
    return ModelContext(model=prepared.module, module=prepared.loaded.module,
                        output_index=prepared.output_index, std=std,
                        minimum=ranges.minimum, maximum=ranges.maximum,
                        features=ranking.features, outputs=prepared.outputs,
                        path=str(prepared.loaded.path), table=ranking.table)


def _replay_checks(model_pass: ModelPass, context: ModelContext, chunk: SpilledChunk,
                   scores: torch.Tensor, values: torch.Tensor) -> None:
    replaying = [check for check in model_pass.checks if check.replays]
    if not replaying or chunk.x is None:
        return
    loaded = model_pass.prepared.loaded
    part = ReplayChunk(rows=chunk.rows, ids=chunk.ids, x=chunk.x.to(loaded.device, loaded.dtype),
                       scores=scores, values=values, finite=finite_rows(scores, values))
    for check in replaying:
        try:
            check.replay(part, context)
        except ModelError as exc:  # the engine knows no files: name the model here
            raise ModelError(f"{context.path}: {exc}") from None


def audit_result(model_pass: ModelPass, ranked: pd.DataFrame, checks: list[CheckResult],
                 drivers: ExampleDrivers, read: ReadPass, table: Table,
                 settings: AuditSettings, method: AttributionMethod,
                 notes: list[str], method_details: dict | None = None, *,
                 examples_streamed: bool = True) -> AuditResult:
    sums, prepared = model_pass.sums, model_pass.prepared
    # The report shows the examples of the outputs with a failed gate first.
    failed = {gate.output for check in checks for gate in check.failed}
    outputs = sorted(prepared.outputs, key=lambda o: o not in failed)
    return AuditResult(
        table=ranked, checks=checks, examples=drivers.best_first(outputs),
        features=list(table.features), outputs=prepared.outputs, rows=sums.rows,
        rows_dropped=read.dropped, nonfinite_rows=sums.nonfinite_rows,
        nonfinite_ids=sums.nonfinite_ids, nonfinite_allowed=settings.allow_nonfinite,
        model_path=str(prepared.loaded.path), model_format=prepared.loaded.format,
        data_path=str(table.path), proxies=[p.feature for p in settings.proxies],
        mean_scores={o: float(s) for o, s in zip(prepared.outputs,
                                                 sums.score_sum / max(sums.rows, 1))},
        method=method.name, notes=notes, contributions=drivers.contributions(),
        method_details=method_details or {}, examples_streamed=examples_streamed)


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
    if replay_all:
        replay(read, drivers, progress=progress, example_sink=example_sink,
               on_chunk=on_replay(read, std) if on_replay else None,
               contexts=[model_context(mp, read, std, r)
                         for mp, r in zip(read.models, rankings)])
    else:
        if example_sink is not None and streamed:
            # The rows kept for the per-row file (the first sink_limit or more); the report's
            # examples come from the candidates below, chosen over every row.
            replay(read, fresh(), progress=progress, example_sink=example_sink)
        read.spill.close()
        drivers = _settle_examples(read, drivers, chunks, method, progress, fresh,
                                   std if method.per_unit else None)
    finished = [judge_model(mp, ranking, std) for mp, ranking in zip(read.models, rankings)]
    notes = [*(notes or []), *_skipped_note(table)]
    results = [audit_result(mp, ranked, checks, d, read, table, settings, method, notes,
                            details, examples_streamed=streamed)
               for mp, (ranked, checks), d in zip(read.models, finished, drivers)]
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


def _settle_examples(read: ReadPass, drivers: list[ExampleDrivers], chunks: Chunks,
                     method: AttributionMethod, progress: Progress,
                     fresh: Callable[[], list[ExampleDrivers]],
                     scale: torch.Tensor | None) -> list[ExampleDrivers]:
    """The report's example rows from the read pass's candidates; when their selection
    cannot be certified exact, from a second pass over the data instead."""
    certified = [mp.candidates.settle(d, scale) if mp.candidates is not None else False
                 for mp, d in zip(read.models, drivers)]
    if all(certified):
        return drivers
    drivers = fresh()
    replay(read, drivers, progress=progress, source=recomputed(read, chunks, method))
    return drivers


def method_details(method: AttributionMethod, settings: AuditSettings, baseline: torch.Tensor,
                   reference: Reference, features: tuple[str, ...]) -> dict:
    """What summary.json and report.md say about the method: its name, what it measures,
    its units, the baseline (with the words each feature's baseline is called) and its
    parameters."""
    return {"name": method.name, "measures": method.description, "per_unit": method.per_unit,
            "baseline": describe_baseline(settings.baseline, baseline, features, reference),
            "baseline_labels": dict(zip(features, baseline_labels(settings.baseline,
                                                                   features))),
            "parameters": method.parameters()}


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


def recomputed(read: ReadPass, chunks: Chunks, method: AttributionMethod
               ) -> Iterator[SpilledChunk]:
    """The read pass's per-row results computed again from the data (a second read), for
    when none were spilled but a pass over every row turns out to be needed."""
    for chunk in chunks():
        if not len(chunk.x):
            continue
        results = []
        for model_pass in read.models:
            loaded = model_pass.prepared.loaded
            x = chunk.x.to(loaded.device, loaded.dtype)
            attributions = _attribute(method, model_pass.prepared, x, chunk.rows)
            results.append((attributions.scores, attributions.values))
        yield SpilledChunk(rows=chunk.rows, ids=chunk.ids, labels=chunk.labels,
                           results=results, x=chunk.x)


def _attribute(method: AttributionMethod, prepared: PreparedModel, x: torch.Tensor,
               rows: np.ndarray) -> Attributions:
    # The engine knows no files: its errors (no gradient path, ...) get the model's path here.
    try:
        return method.attribute_rows(prepared.module, x, rows)
    except ModelError as exc:
        raise ModelError(f"{prepared.loaded.path}: {exc}") from None
    except Exception as exc:
        # The model's own code raising (only on larger batches, only with gradients enabled)
        # is a property of the input model, not a sensaudit bug; --debug shows the chain.
        raise ModelError(f"{prepared.loaded.path}: the model raised while computing "
                         f"attributions on a batch of {x.shape[0]:,} rows with gradients "
                         f"enabled ({type(exc).__name__}: {first_line(exc)}); a scorer must "
                         "accept any batch size and support autograd") from exc


def prepare_model(loaded: LoadedModel, x: torch.Tensor, model_cfg: ModelConfig | None,
                  source: object, table: Table | None = None) -> PreparedModel:
    """Probe the model on a few rows: it must accept the features, return float scores per
    row, and score rows independently. Then select ``model.output`` if the config asks."""
    probe = x[: min(8, x.shape[0])]
    try:
        with torch.no_grad():
            y = loaded.module(probe)
    except Exception as exc:  # the model's own code may raise anything on a bad input
        left_out = ""
        if table is not None and table.skipped:
            left_out = (f"; the data's text column(s) {', '.join(table.skipped[:5])} are not "
                        "features unless data.features or model.features lists them")
        raise ModelError(f"{loaded.path}: the model failed on a batch of {x.shape[1]} features "
                         f"({first_line(exc)}); does its input width match the data's "
                         f"features?{left_out}") from None
    try:
        n_outputs = as_output_matrix(y, probe.shape[0]).shape[1]
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    names = list(model_cfg.output_names) if model_cfg and model_cfg.output_names else None
    if names is not None and len(names) != n_outputs:
        raise ConfigError(f"{source}: model.output_names lists {len(names)} names but the "
                          f"model returns {n_outputs} output(s)")
    names = names or (["score"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)])
    module: Model = transformed(loaded.module, model_cfg.transform if model_cfg else "none",
                                n_outputs, source)
    selected = model_cfg.output if model_cfg else None
    if selected is not None:
        if isinstance(selected, str):
            if selected not in names:
                raise ConfigError(f"{source}: model.output '{selected}' is not one of "
                                  f"model.output_names ({', '.join(names)})")
            index = names.index(selected)
        else:
            index = selected
            if index >= n_outputs:
                raise ConfigError(f"{source}: model.output must be below {n_outputs} "
                                  f"(the model's output count) (got {index})")
        inner = module
        module = lambda inp: inner(inp).reshape(inp.shape[0], -1)[:, index : index + 1]  # noqa: E731
        names = [names[index]]
        selected = index
    try:
        check_row_independence(module, x)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    return PreparedModel(loaded=loaded, module=module, outputs=names,
                         output_index=selected if isinstance(selected, int) else None)


def precision_warnings(features: list[str], data_std: torch.Tensor, seen_std: torch.Tensor,
                       dtype: torch.dtype) -> CheckResult:
    """Warn where the model's dtype cannot hold a feature's spread: values such as 1e6 plus
    millimetre noise vary in the data but are (nearly) constant once rounded to float32, so the
    audit's figures (computed on the data's std) describe a variation the model never saw."""
    result = CheckResult("input_precision")
    name = str(dtype).replace("torch.", "")
    lost = (data_std > 0) & ((seen_std - data_std).abs() > 0.01 * data_std)
    for j in lost.nonzero().flatten().tolist():
        result.warnings.append(Notice(check="input_precision", subject=features[j],
                                      output="", details={"std": float(data_std[j]),
                                                          f"std_in_{name}": float(seen_std[j])}))
        result.findings.append(
            f"**{features[j]}** varies with std {data_std[j]:.4g} in the data but "
            f"{seen_std[j]:.4g} once rounded to the model's {name} inputs: its values are too "
            "large for their spread at that precision, so the model sees it (nearly) constant "
            "and its figures here describe a variation the model never saw. Centre or rescale "
            "the column before training and auditing.")
    return result


def _narrower(a: torch.dtype, b: torch.dtype) -> bool:
    return a.is_floating_point and b.is_floating_point and torch.finfo(a).eps > torch.finfo(b).eps


def _skipped_note(table: Table) -> list[str]:
    if not table.skipped:
        return []
    return [f"Columns left out of the features as text: {', '.join(table.skipped)} (list "
            "them in data.features or model.features if the model takes them)."]


def _check_same_outputs(passes: list[ModelPass]) -> None:
    if len({len(p.prepared.outputs) for p in passes}) > 1:
        first, second = passes[0].prepared, passes[1].prepared
        raise ModelError(f"{first.loaded.path} returns {len(first.outputs)} output(s) but "
                         f"{second.loaded.path} returns {len(second.outputs)}; compare needs "
                         "the same outputs (select one with model.output)")
