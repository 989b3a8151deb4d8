"""After the read pass, on the local engine: the plan's rows step over the rows it kept.

- :func:`replay`: the spill's chunks again (or :func:`recomputed` ones) through
  :func:`~sensaudit.pipeline.steps.rows_step`: the per-row file, the report's examples, the
  checks that replay rows with the final stds and ranking, compare's agreement;
- :func:`settle_examples`: the report's examples from the read's candidates
  (:mod:`sensaudit.pipeline.example_candidates`), or from a second pass when those cannot be
  certified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.pass_state import Chunks, ExampleSink, Progress, ReadPass
from sensaudit.pipeline.spill import SpilledChunk
from sensaudit.pipeline.steps import RowWork, attributed, rows_step


def replay(read: ReadPass, work: RowWork, *, progress: Progress,
           example_sink: ExampleSink | None = None,
           source: Iterable[SpilledChunk] | None = None) -> None:
    """The rows step (:func:`~sensaudit.pipeline.steps.rows_step`) over every row kept:
    examples for each model, the checks that replay, compare's agreement, as ``work`` says.

    ``example_sink`` receives the first model's examples rows. ``source``: the per-row
    results to replay, the spill by default (:func:`recomputed` when there is none).
    """
    done = 0
    work.examples_table = example_sink is not None
    try:
        for chunk in read.spill if source is None else source:
            rows_table = rows_step(read.models, chunk, work)
            if rows_table is not None and example_sink is not None:
                example_sink(rows_table)
            done += len(chunk.rows)
            progress("examples", done, read.moments.count)
    finally:
        read.spill.close()


def recomputed(read: ReadPass, chunks: Chunks, method: AttributionMethod
               ) -> Iterator[SpilledChunk]:
    """The read pass's per-row results computed again from the data (a second read), for
    when none were spilled but a pass over every row turns out to be needed."""
    for chunk in chunks():
        if len(chunk.x):
            yield attributed(method, read.models, chunk)


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
    replay(read, RowWork(drivers=drivers), progress=progress,
           source=recomputed(read, chunks, method))
    return drivers
