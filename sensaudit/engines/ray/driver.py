"""The Ray engine's driver: the audit plan (:mod:`sensaudit.pipeline.plan`) run over work units,
each pass's partial results merged here with the plan's merges.

The models are first loaded on the driver, on the CPU, with the same loader and trust rules, and
probed on the data's first rows, so a bad model or config fails before any worker starts. Then
:func:`~sensaudit.pipeline.plan.run` drives :class:`RayEngine`'s passes:

- **statistics** (workers, no model): each unit's :class:`~sensaudit.pipeline.plan.Statistics`
  and missing values. They always run first here: the engine keeps no per-row results, so its
  read does the per-row work at once and needs the final statistics;
- **read** (workers, each holding the models): each unit through the plan's read step and, with
  the final statistics known, its rows step (example rows, compare's agreement); the example
  rows of the per-row file stream to the report folder as each unit's arrive;
- **rows** (workers), only when a check replays rows with the model and the final ranking: the
  unit's attributions again, then the plan's rows step.

Every accumulator merges exactly on any partition of the rows, and rows are numbered by their
place in the data (:mod:`sensaudit.inputs.dataset`), so the result is the local engine's to
floating-point rounding whatever the number of workers or units.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any, cast

import torch

from sensaudit.config.load import Config
from sensaudit.core.errors import DataError
from sensaudit.engines.ray.cluster import pool_size, ray_session, require_ray, worker_pool
from sensaudit.engines.ray.job import (
    Job,
    ReadTask,
    ReplayTask,
    StatisticsTask,
    UnitRead,
    UnitReplay,
    UnitStatistics,
)
from sensaudit.engines.ray.schedule import run_units
from sensaudit.inputs import tables
from sensaudit.inputs.dataset import work_units
from sensaudit.inputs.models import load_model, narrowest_dtype
from sensaudit.inputs.table_chunks import Chunk, MissingValues
from sensaudit.inputs.table_layout import Table
from sensaudit.pipeline.baselines import Reference, baseline_vector
from sensaudit.pipeline.compare import ModelPair
from sensaudit.pipeline.example_rows import ExampleRows
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.pass_state import ExampleSink, ModelPass, Progress, ReadPass
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
    merge_checks,
    merge_drivers,
    merge_models,
    run,
)
from sensaudit.pipeline.spill import Spill
from sensaudit.pipeline.steps import check_same_outputs, example_drivers, start_model
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import DataConfig, ModelConfig
from sensaudit.stats.accumulators import FeatureMoments
from sensaudit.stats.label_correlation import LabelTies
from sensaudit.stats.row_stats import FeatureRange

PROBE_ROWS = 8  # as pipeline.model_ready.prepare_model probes
_tokens = itertools.count(1)


def audit_on_ray(config: Config, data: DataConfig, table: Table, *, progress: Progress,
                 examples: ExampleRows | None, notes: list[str],
                 trust_model_code: bool | None,
                 training: LabelTies | None = None) -> AuditResult:
    """``api.audit`` on the Ray engine: the same result, computed by a pool of actors."""
    if config.model is None:
        raise ValueError("audit_on_ray needs config.model")
    plan = audit_plan(config.audit, table, config.source, model_cfg=config.model, notes=notes,
                      training=training)
    # The workers stream every row's per-row file rows; an all-or-none limit holds them back
    # until the rows are known to be at most that many.
    streaming = examples.streaming(table.row_count) if examples is not None else None
    outcome = _run(config, plan, (config.model,), data, progress=progress,
                   sink=streaming.sink if streaming is not None else None,
                   trust=trust_model_code)
    result = outcome.results[0]
    if streaming is None or streaming.done():
        return result
    return replace(result, examples_streamed=False)


def compare_on_ray(config: Config, models: Sequence[ModelConfig], data: DataConfig,
                   table: Table, *, progress: Progress, notes: list[str],
                   replicas: tuple[int, int], trust_model_code: bool | None,
                   inputs: ModelPair = (None, None),
                   training: LabelTies | None = None) -> ComparisonResult:
    """``api.compare_models`` on the Ray engine: every model in the same actors, on the same
    units; the bootstrap weights are a function of (seed, replicate, row number).
    ``inputs``: old's and new's own columns when they take different ones
    (:mod:`sensaudit.pipeline.compare`)."""
    plan = audit_plan(config.audit, table, config.source, model_cfg=config.model,
                      compare=config.compare, notes=notes, training=training)
    outcome = _run(config, plan, tuple(models), data, progress=progress, sink=None,
                   trust=trust_model_code)
    return comparison(plan, outcome, replicas, inputs=inputs)


def _run(config: Config, plan: Plan, model_cfgs: tuple[ModelConfig, ...], data: DataConfig,
         *, progress: Progress, sink: ExampleSink | None, trust: bool | None) -> Outcome:
    require_ray(config.source)  # before any model is loaded: say how to install it first
    job, passes = prepare_job(config, plan, model_cfgs, data, trust=trust)
    with ray_session(config.ray, plan.source) as ray:
        size = pool_size(ray, config.ray, len(job.units), plan.source)
        with worker_pool(ray, config.ray, job, size) as actors:

            def units(call: str, task: object, each: Callable[[int, Any], None]) -> None:
                run_units(ray, actors, call, task, len(job.units), each)

            engine = RayEngine(job, passes, units, progress=progress, sink=sink, workers=size)
            return run(plan, engine)


def prepare_job(config: Config, plan: Plan, model_cfgs: tuple[ModelConfig, ...],
                data: DataConfig, *, trust: bool | None) -> tuple[Job, list[ModelPass]]:
    """The models loaded and probed on the driver (a bad model or config fails before any
    worker starts), the data's work units, and the job every worker is given."""
    # The driver's copies are for probing and for the results' names and paths; the workers
    # load their own, on their own devices.
    loaded = [load_model(cfg, trust_model_code=trust, device=torch.device("cpu"))
              for cfg in model_cfgs]
    read_dtype = narrowest_dtype(loaded)
    probe = _probe(plan.table, data, read_dtype)
    passes = [start_model(model, probe, plan.table, plan.settings, plan.model_cfg, plan.source)
              for model in loaded]
    check_same_outputs(passes)
    units = work_units(data.path, config.ray.rows_per_batch)
    job = Job(models=model_cfgs, trust_model_code=trust, plan=plan, data=data,
              units=tuple(units), read_dtype=read_dtype, probe=probe,
              threads=max(1, int(config.ray.cpus_per_worker)), cwd=os.getcwd())
    return job, passes


# units(call, task, each): run the workers' ``call`` on every unit with ``task`` and hand each
# unit's result to ``each(unit, result)`` in unit order (schedule.run_units on the pool).
Units = Callable[[str, object, Callable[[int, Any], None]], None]


class RayEngine:
    """The plan's passes over the job's work units, on a pool of actors; partials merge here
    in unit order."""

    statistics_first = True  # no per-row results are kept: the read does the per-row work

    def __init__(self, job: Job, passes: list[ModelPass], units: Units, *,
                 progress: Progress, sink: ExampleSink | None, workers: int):
        self.job, self.passes, self._units = job, passes, units
        self.progress, self.sink, self.workers = progress, sink, workers
        self.drivers: list[ExampleDrivers] = []
        self.inputs: MethodInputs | None = None

    def statistics(self, plan: Plan) -> Statistics:
        job = self.job
        merged = plan.statistics(ranges=True)
        missing = MissingValues(plan.table.features)

        def each(_: int, part: UnitStatistics) -> None:
            merged.merge(part.statistics)
            if part.missing is not None:
                missing.merge(part.missing)
            self.progress("statistics", merged.rows_read, plan.table.row_count)

        self._units("statistics", StatisticsTask(), each)
        if all(unit.row_groups is not None for unit in job.units):  # a CSV checks its own
            if not merged.rows_read:
                raise DataError(f"{job.data.path}: the data has a header but no rows")
            missing.check(job.data)
        return merged

    def read(self, plan: Plan, inputs: MethodInputs, statistics: Statistics | None,
             reference: Reference | None) -> ReadPass:
        if statistics is None or reference is None:
            raise RuntimeError("the Ray engine reads the statistics first")
        table, settings = plan.table, plan.settings
        std = reference.std
        baseline = baseline_vector(settings.baseline, reference, table.features)
        self.inputs = inputs
        self.drivers = [example_drivers(mp, table, baseline, settings, plan.method, std)
                        for mp in self.passes]
        compared = plan.new_compared()
        per_row = (self.sink is not None or settings.examples_in_report > 0
                   or compared is not None or plan.replays)
        task = ReadTask(token=next(_tokens), method=inputs, std=std, baseline=baseline,
                        per_row=per_row, examples_table=self.sink is not None)
        done = 0

        def each(_: int, part: UnitRead) -> None:
            nonlocal done
            merge_models(self.passes, part.models, len(table.features))
            merge_drivers(self.drivers, [theirs.drivers for theirs in part.models])
            if compared is not None and part.compared is not None:
                compared.merge(part.compared)
            if self.sink is not None and part.examples is not None:
                self.sink(part.examples)
            done += part.rows_read
            self.progress("audit", done, table.row_count)

        self._units("audit", task, each)
        return ReadPass(moments=statistics.summary.moments, dropped=statistics.dropped,
                        models=self.passes, spill=Spill(), ranges=statistics.ranges,
                        summary=statistics.summary, compared=compared)

    def rows(self, plan: Plan, read: ReadPass, final: Final) -> RowsDone:
        """The example rows and compare's agreement were done in the read; what is left are
        the checks that replay rows with the final ranking."""
        if plan.replays and self.inputs is not None:
            task = ReplayTask(token=next(_tokens), method=self.inputs, std=final.std,
                              ranges=read.ranges or FeatureRange(len(plan.table.features)),
                              rankings=tuple(r.table for r in final.rankings))
            done = 0

            def each(_: int, part: UnitReplay) -> None:
                nonlocal done
                for mp, theirs in zip(self.passes, part.checks, strict=True):
                    merge_checks([c for c in mp.checks if c.replays], theirs)
                done += part.rows_read
                self.progress("replay", done, plan.table.row_count)

            self._units("replay", task, each)
        return RowsDone(self.drivers)

    def notes(self) -> list[str]:
        return [f"Computed on Ray: {len(self.job.units):,} work unit(s) over {self.workers} "
                "worker(s)."]


def _probe(table: Table, data: DataConfig, dtype: torch.dtype) -> torch.Tensor:
    """The data's first usable rows, float [<= PROBE_ROWS, features], as read for ``dtype``."""
    chunks = cast(Generator[Chunk, None, None],
                  tables.iter_chunks(table, replace(data, chunk_rows=PROBE_ROWS), dtype))
    with contextlib.closing(chunks):  # a generator: closing it closes the file
        for chunk in chunks:
            if len(chunk.x):
                return chunk.x
    check_rows(FeatureMoments(len(table.features)), table)  # no usable row: its error
    raise RuntimeError("unreachable: no usable rows passed the row count check")
