"""After the read pass: the per-row work that needs the final statistics.

- :func:`replay`: the spill's chunks again (or :func:`recomputed` ones), for examples.csv, the
  report's examples and the checks that replay rows with the final stds and ranking;
- :func:`settle_examples`: the report's examples from the read's candidates
  (:mod:`sensaudit.pipeline.example_candidates`), or from a second pass when those cannot be
  certified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from sensaudit.checks.base import ModelContext, Ranking, ReplayChunk
from sensaudit.core.errors import ModelError
from sensaudit.inputs.table_layout import Table
from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.groups import proxy_features
from sensaudit.pipeline.model_ready import attribute_chunk
from sensaudit.pipeline.pass_state import Chunks, ExampleSink, ModelPass, Progress, ReadPass
from sensaudit.pipeline.spill import SpilledChunk
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import finite_rows
from sensaudit.stats.row_stats import FeatureRange


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
            for i, ((scores, values), model_drivers) in enumerate(zip(chunk.results, drivers,
                                                                      strict=True)):
                if chunk.x is None:  # the read pass spills every chunk's x
                    raise RuntimeError("the spill holds no feature values")
                rows_table = model_drivers.add(
                    chunk.rows, chunk.ids, chunk.labels, scores, values,
                    finite_rows(scores, values), chunk.x,
                    table=example_sink is not None and i == 0)
                if rows_table is not None and example_sink is not None:
                    example_sink(rows_table)
            # No contexts: no check replays. Otherwise one per model, paired strictly.
            for model_pass, context, (scores, values) in (zip(read.models, contexts,
                                                              chunk.results, strict=True)
                                                          if contexts else ()):
                replay_checks(model_pass, context, chunk, scores, values)
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
            attributions = attribute_chunk(method, model_pass.prepared, x, chunk.rows)
            results.append((attributions.scores, attributions.values))
        yield SpilledChunk(rows=chunk.rows, ids=chunk.ids, labels=chunk.labels,
                           results=results, x=chunk.x)


def settle_examples(read: ReadPass, drivers: list[ExampleDrivers], chunks: Chunks,
                     method: AttributionMethod, progress: Progress,
                     fresh: Callable[[], list[ExampleDrivers]],
                     scale: torch.Tensor | None) -> list[ExampleDrivers]:
    """The report's example rows from the read pass's candidates; when their selection
    cannot be certified exact, from a second pass over the data instead."""
    certified = [mp.candidates.settle(d, scale) if mp.candidates is not None else False
                 for mp, d in zip(read.models, drivers, strict=True)]
    if all(certified):
        return drivers
    drivers = fresh()
    replay(read, drivers, progress=progress, source=recomputed(read, chunks, method))
    return drivers
