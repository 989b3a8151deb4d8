"""The audit's work on one chunk of rows, the same on every engine.

An engine hands these functions the chunks of its partition of the rows (every chunk in the local
process, one work unit's on a Ray worker); what they fill are mergeable partial results
(:mod:`sensaudit.pipeline.plan` says which pass runs which step and how the partials merge):

- :func:`start_model`: probe one model on the first rows and start its accumulators;
- :func:`read_step`: every model's attributions of a chunk, their sums, every check's update,
  the example candidates and compare's paired bootstrap (:class:`Compared`);
- :func:`rows_step`: the per-row work that needs the final feature statistics: each model's
  example rows (and the first model's rows for the per-row file), the checks that replay rows
  with the final ranking, and compare's per-row agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from sensaudit.checks import build_checks
from sensaudit.checks.base import ModelContext, Ranking, ReplayChunk
from sensaudit.core.errors import ModelError
from sensaudit.inputs.models import LoadedModel
from sensaudit.inputs.table_chunks import Chunk
from sensaudit.inputs.table_layout import Table
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.pipeline.compare import add_agreement, add_bootstrap, check_bootstrap_size
from sensaudit.pipeline.example_candidates import ExampleCandidates
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.groups import proxy_features
from sensaudit.pipeline.model_ready import PreparedModel, attribute_chunk, narrower, prepare_model
from sensaudit.pipeline.pass_state import ChunkState, Compared, ModelPass
from sensaudit.pipeline.spill import SpilledChunk
from sensaudit.settings.sections import AuditSettings, ModelConfig
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    FeatureMoments,
    finite_rows,
)
from sensaudit.stats.row_stats import FeatureRange


def start_model(loaded: LoadedModel, x: torch.Tensor, table: Table, settings: AuditSettings,
                model_cfg: ModelConfig | None, source: object, *,
                per_unit: bool | None = None) -> ModelPass:
    """Probe one model on the rows ``x`` and start its accumulators; ``per_unit`` given: also
    choose the example candidates during the read, for a method of that kind."""
    prepared = prepare_model(loaded, x.to(loaded.device, loaded.dtype), model_cfg, source,
                             table)
    return model_pass(prepared, table, settings, source, per_unit=per_unit)


def model_pass(prepared: PreparedModel, table: Table, settings: AuditSettings, source: object,
               *, per_unit: bool | None = None) -> ModelPass:
    """A probed model's empty accumulators: sums, checks and (``per_unit`` given) example
    candidates."""
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


def check_same_outputs(passes: Sequence[ModelPass]) -> None:
    if len({len(p.prepared.outputs) for p in passes}) > 1:
        first, second = passes[0].prepared, passes[1].prepared
        raise ModelError(f"{first.loaded.path} returns {len(first.outputs)} output(s) but "
                         f"{second.loaded.path} returns {len(second.outputs)}; compare needs "
                         "the same outputs (select one with model.output)")


def example_drivers(model_pass: ModelPass, table: Table, baseline: torch.Tensor,
                    settings: AuditSettings, method: AttributionMethod,
                    std: torch.Tensor | None = None) -> ExampleDrivers:
    """One model's example rows, measured from the final ``baseline`` (and ``std``)."""
    return ExampleDrivers(table.features, model_pass.prepared.outputs, top_k=settings.top_k,
                          proxies=proxy_features([p.feature for p in settings.proxies],
                                                 settings.groups),
                          keep=settings.examples_in_report, baseline=baseline,
                          per_unit=method.per_unit,
                          scale=std if method.per_unit else None)


def read_step(method: AttributionMethod, models: Sequence[ModelPass], chunk: Chunk, *,
              candidates_baseline: torch.Tensor | None = None, compared: Compared | None = None,
              table: Table, source: object) -> list[Attributions]:
    """Every model's work on one chunk of the read (:func:`read_chunk`), the example
    candidates ranked against ``candidates_baseline`` (the baseline as it stands), and
    compare's bootstrap. Returns each model's attributions."""
    results = []
    for model in models:
        attributions, finite = read_chunk(method, model.prepared, model, chunk)
        if model.candidates is not None and candidates_baseline is not None:
            model.candidates.update(chunk.rows, chunk.ids, chunk.labels, attributions.scores,
                                    attributions.values, finite, chunk.x, candidates_baseline)
        results.append(attributions)
    if compared is not None:
        # The outputs are known once a model ran: [samples, outputs, features] sums.
        check_bootstrap_size(compared.settings, len(table.features), source,
                             outputs=results[0].values.shape[1])
        add_bootstrap(compared.bootstrap, chunk.rows, chunk.x, results)
    return results


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
        if chunk.extra:
            check.update_columns(chunk.rows, x, attributions, chunk.extra)
    return attributions, finite


@dataclass
class RowWork:
    """What :func:`rows_step` does on each chunk; a field left empty is not done."""

    drivers: list[ExampleDrivers] = field(default_factory=list)  # one per model
    examples_table: bool = False  # the first model's rows for the per-row file
    contexts: list[ModelContext] = field(default_factory=list)  # one per model: checks replay
    compared: Compared | None = None
    std: torch.Tensor | None = None  # the final stds (compare's agreement, per unit methods)
    per_unit: bool = False


def rows_step(models: Sequence[ModelPass], chunk: SpilledChunk, work: RowWork) -> pa.Table | None:
    """The per-row work on one chunk of per-row results (scores and attributions on the CPU,
    as the spill keeps them). Returns the first model's rows for the per-row file when
    ``work.examples_table``."""
    rows_table = None
    # No drivers: no example rows (the checks' replay alone). Otherwise one per model.
    for i, ((scores, values), model_drivers) in enumerate(zip(chunk.results, work.drivers,
                                                              strict=True)
                                                          if work.drivers else ()):
        if chunk.x is None:  # the read pass spills every chunk's x
            raise RuntimeError("the spill holds no feature values")
        table = model_drivers.add(chunk.rows, chunk.ids, chunk.labels, scores, values,
                                  finite_rows(scores, values), chunk.x,
                                  table=work.examples_table and i == 0)
        if table is not None:
            rows_table = table
    # No contexts: no check replays. Otherwise one per model, paired strictly.
    for model, context, (scores, values) in (zip(models, work.contexts, chunk.results,
                                                 strict=True) if work.contexts else ()):
        replay_checks(model, context, chunk, scores, values)
    compared = work.compared
    if compared is not None:
        if work.std is None:
            raise RuntimeError("compare's agreement needs the final stds")
        if compared.agreement is None:
            compared.agreement = AgreementAccumulator(len(models[0].prepared.outputs),
                                                      keep=compared.keep)
        add_agreement(compared.agreement, chunk.rows, chunk.ids, chunk.results, work.std,
                      work.per_unit)
    return rows_table


def model_context(model_pass: ModelPass, ranges: FeatureRange | None, std: torch.Tensor,
                  ranking: Ranking) -> ModelContext:
    """What the checks that replay know of one model once the read and its ranking are
    final."""
    prepared = model_pass.prepared
    ranges = ranges or FeatureRange(len(ranking.features))
    return ModelContext(model=prepared.module, module=prepared.loaded.module,
                        output_index=prepared.output_index, std=std,
                        minimum=ranges.minimum, maximum=ranges.maximum,
                        features=ranking.features, outputs=prepared.outputs,
                        path=str(prepared.loaded.path), table=ranking.table)


def replay_checks(model_pass: ModelPass, context: ModelContext, chunk: SpilledChunk,
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


def attributed(method: AttributionMethod, models: Sequence[ModelPass], chunk: Chunk
               ) -> SpilledChunk:
    """A chunk's per-row results computed again (as the read computed them), on the CPU as the
    spill keeps them: for a pass over the rows that kept none."""
    results = []
    for model in models:
        loaded = model.prepared.loaded
        attributions = attribute_chunk(method, model.prepared,
                                       chunk.x.to(loaded.device, loaded.dtype), chunk.rows)
        results.append((attributions.scores.detach().cpu(), attributions.values.detach().cpu()))
    return SpilledChunk(rows=chunk.rows, ids=chunk.ids, labels=chunk.labels, results=results,
                        x=chunk.x)
