"""The Ray engine's driver: the audit's passes over work units, merged into the local engine's
results.

1. **Probe** (here): the models are loaded on the driver, on the CPU, with the same loader and
   trust rules, and probed on the data's first rows, so a bad model or config fails before any
   worker starts.
2. **Statistics** (workers, no model): each unit's feature moments, ranges, missing values and,
   for a median baseline, the median sample; merged here. The feature means, stds and the
   baseline are then final, and the method is prepared as the local engine prepares it.
3. **Audit** (workers, each holding the models): the local read pass over each unit
   (attributions, sums, every check's update) fused with what the local engine does in its
   replay and needs only the final statistics: examples rows and drivers, and ``compare``'s
   paired bootstrap and per-row agreement. Partial results merge here in unit order; examples
   rows stream to the report folder as each unit's arrive.
4. **Rank** (here) with the pipeline's own functions.
5. **Replay** (workers), only when a check replays rows with the model and the final ranking
   (robustness, expect, linearity, ...): the unit's attributions again, then the pipeline's
   replay step; merged here.
6. **Judge** (here): the checks finish, the results are assembled as the local engine does.

Every accumulator merges exactly on any partition of the rows, and rows are numbered by their
place in the data (:mod:`sensaudit.inputs.dataset`), so the result is the local engine's to
floating-point rounding whatever the number of workers or units.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import torch

from sensaudit.checks import build_checks
from sensaudit.config.load import Config
from sensaudit.core.errors import DataError
from sensaudit.engines.ray.cluster import pool_size, ray_session, require_ray, worker_pool
from sensaudit.engines.ray.job import (
    AuditPlan,
    Job,
    MethodInputs,
    ReplayPlan,
    StatisticsPlan,
    UnitAudit,
    UnitReplay,
    UnitStatistics,
)
from sensaudit.engines.ray.schedule import run_units
from sensaudit.inputs import tables
from sensaudit.inputs.dataset import work_units
from sensaudit.inputs.models import LoadedModel, load_model
from sensaudit.inputs.table_chunks import Chunk, MissingValues
from sensaudit.inputs.table_layout import Table
from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.baselines import FeatureSummary, Reference, baseline_vector, check_baseline
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
from sensaudit.pipeline.model_ready import prepare_model
from sensaudit.pipeline.pass_state import ExampleSink, ModelPass, Progress, ReadPass
from sensaudit.pipeline.passes import check_rows, check_same_outputs, make_method, needs_prepass
from sensaudit.pipeline.replay import example_drivers
from sensaudit.pipeline.spill import Spill
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import AuditSettings, DataConfig, ModelConfig
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    BootstrapMoments,
    BootstrapSensitivity,
    FeatureMoments,
    PoissonBootstrap,
)
from sensaudit.stats.row_stats import FeatureRange

PROBE_ROWS = 8  # as pipeline.prepare_model probes
_plans = itertools.count(1)


@dataclass
class _Compared:
    """``compare``'s accumulators, merged over the units."""

    boot_moments: BootstrapMoments
    boots: list[BootstrapSensitivity]
    agreement: AgreementAccumulator | None = None


@dataclass
class _Merged:
    """The partial results merged so far (driver side)."""

    passes: list[ModelPass]
    drivers: list[ExampleDrivers] = field(default_factory=list)
    compared: _Compared | None = None


def audit_on_ray(config: Config, data: DataConfig, table: Table, *, progress: Progress,
                 example_sink: ExampleSink | None, notes: list[str],
                 trust_model_code: bool | None) -> AuditResult:
    """``api.audit`` on the Ray engine: the same result, computed by a pool of actors."""
    if config.model is None:
        raise ValueError("audit_on_ray needs config.model")
    results, _ = _run(config, (config.model,), data, table, progress=progress,
                      example_sink=example_sink, notes=notes, compare=False,
                      trust=trust_model_code)
    return results[0]


def compare_on_ray(config: Config, models: Sequence[ModelConfig], data: DataConfig,
                   table: Table, *, progress: Progress, notes: list[str],
                   replicas: tuple[int, int], trust_model_code: bool | None,
                   inputs: ModelPair = (None, None)) -> ComparisonResult:
    """``api.compare_models`` on the Ray engine: every model in the same actors, on the same
    units; the bootstrap weights are a function of (seed, replicate, row number).
    ``inputs``: see :func:`~sensaudit.pipeline.compare.compare_on_rows`."""
    results, compared = _run(config, tuple(models), data, table, progress=progress,
                             example_sink=None, notes=notes, compare=True,
                             trust=trust_model_code)
    if compared is None or compared.agreement is None:
        raise RuntimeError("the compare accumulators were not merged")
    method = make_method(config.audit, config.source)
    return comparison_result(results, compared.boot_moments, compared.boots, compared.agreement,
                             config.audit, config.compare, replicas=replicas,
                             per_unit=method.per_unit, inputs=inputs)


def _run(config: Config, model_cfgs: tuple[ModelConfig, ...], data: DataConfig, table: Table,
         *, progress: Progress, example_sink: ExampleSink | None, notes: list[str],
         compare: bool, trust: bool | None
         ) -> tuple[list[AuditResult], _Compared | None]:
    require_ray(config.source)  # before any model is loaded: say how to install it first
    settings, source = config.audit, config.source
    method = make_method(settings, source)
    build_checks(settings, source)  # option errors before any data is read
    check_baseline(settings.baseline, table.features, source)
    # The driver's copies are for probing and for the results' names and paths; the workers
    # load their own, on their own devices.
    loaded = [load_model(cfg, trust_model_code=trust, device=torch.device("cpu"))
              for cfg in model_cfgs]
    read_dtype = _narrowest(loaded)
    probe = _probe(table, data, read_dtype)
    passes = []
    for model in loaded:
        prepared = prepare_model(model, probe.to(model.dtype), config.model, source, table)
        passes.append(ModelPass(prepared=prepared,
                                sums=AttributionSums(len(prepared.outputs), len(table.features)),
                                checks=build_checks(settings, source)))
    check_same_outputs(passes)
    units = work_units(data.path, config.ray.rows_per_batch)
    job = Job(models=model_cfgs, trust_model_code=trust,
              prepare_cfg=config.model, data=data, table=table, units=tuple(units),
              settings=settings, source=source, read_dtype=read_dtype, probe=probe,
              threads=max(1, int(config.ray.cpus_per_worker)), cwd=os.getcwd())
    merged = _Merged(passes=passes)
    with ray_session(config.ray, source) as ray:
        size = pool_size(ray, config.ray, len(units), source)
        with worker_pool(ray, config.ray, job, size) as actors:
            read = _statistics(ray, actors, job, merged, progress)
            std = feature_std(read, table)
            if read.summary is None:
                raise RuntimeError("the statistics pass measured no feature statistics")
            reference = read.summary.reference(std)
            baseline = baseline_vector(settings.baseline, reference, table.features)
            inputs = _method_inputs(method, settings, reference, table.features)
            merged.drivers = [example_drivers(mp, table, baseline, settings, method, std)
                              for mp in passes]
            if compare:
                bootstrap = PoissonBootstrap(config.compare.bootstrap_samples, config.compare.seed)
                merged.compared = _Compared(BootstrapMoments(bootstrap, len(table.features)),
                                            [BootstrapSensitivity(bootstrap) for _ in passes[:2]])
            per_row = (example_sink is not None or settings.examples_in_report > 0 or compare
                       or any(check.replays for check in passes[0].checks))
            plan = AuditPlan(token=next(_plans), method=inputs, std=std, baseline=baseline,
                             per_row=per_row, examples_table=example_sink is not None,
                             compare=config.compare if compare else None)
            _audit(ray, actors, plan, job, merged, progress, example_sink)
            rankings = [rank_model(mp, table, std, method, settings) for mp in passes]
            if any(check.replays for mp in passes for check in mp.checks):
                replay = ReplayPlan(token=next(_plans), method=inputs, std=std,
                                    ranges=read.ranges or FeatureRange(len(table.features)),
                                    rankings=tuple(r.table for r in rankings))
                _replay(ray, actors, replay, job, merged, progress)
    details = method_details(method, settings, baseline, reference, table.features)
    integer_max = read.summary.integer_max if read.summary is not None else None
    finished = [judge_model(mp, ranking, std, integer_max)
                for mp, ranking in zip(passes, rankings, strict=True)]
    notes = [*notes, *skipped_note(table),
             f"Computed on Ray: {len(units):,} work unit(s) over {size} worker(s)."]
    results = [audit_result(mp, ranked, checks, drivers, read, table, settings, method, notes,
                            details)
               for mp, (ranked, checks), drivers in zip(passes, finished, merged.drivers,
                                                        strict=True)]
    return results, merged.compared


def _statistics(ray: object, actors: list, job: Job, merged: _Merged,
                progress: Progress) -> ReadPass:
    """The pre-pass, merged: a ReadPass with the final moments, ranges and dropped rows."""
    n = len(job.table.features)
    summary = FeatureSummary(n, median=job.settings.baseline == "median")
    ranges = FeatureRange(n)
    missing = MissingValues(job.table.features)
    totals = {"dropped": 0, "rows": 0}

    def each(_: int, part: UnitStatistics) -> None:
        summary.merge(part.summary)
        ranges.merge(part.ranges)
        if part.missing is not None:
            missing.merge(part.missing)
        totals["dropped"] += part.dropped
        totals["rows"] += part.rows_read
        progress("statistics", totals["rows"], job.table.row_count)

    run_units(ray, actors, "statistics", StatisticsPlan(median=summary.sample is not None),
              len(job.units), each)
    if all(unit.row_groups is not None for unit in job.units):  # a CSV checks its own
        if not totals["rows"]:
            raise DataError(f"{job.data.path}: the data has a header but no rows")
        missing.check(job.data)
    check_rows(summary.moments, job.table)
    return ReadPass(moments=summary.moments, dropped=totals["dropped"], models=merged.passes,
                    spill=Spill(), ranges=ranges, summary=summary)


def _audit(ray: object, actors: list, plan: AuditPlan, job: Job, merged: _Merged,
           progress: Progress, example_sink: ExampleSink | None) -> None:
    n = len(job.table.features)
    done = 0

    def each(_: int, part: UnitAudit) -> None:
        nonlocal done
        for mp, drivers, theirs in zip(merged.passes, merged.drivers, part.models, strict=True):
            mp.sums.merge(theirs.sums)
            for mine, other in zip(mp.checks, theirs.checks, strict=True):
                if mine.accumulates:  # one that reads only the ranking has nothing to merge
                    mine.merge(other)
            if theirs.seen is not None:
                mp.seen = mp.seen or FeatureMoments(n)
                mp.seen.merge(theirs.seen)
            drivers.merge(theirs.drivers)
        compared = merged.compared
        if compared is not None and part.boot_moments is not None:
            compared.boot_moments.merge(part.boot_moments)
            for boot, other_boot in zip(compared.boots, part.boots, strict=True):
                boot.merge(other_boot)
            if part.agreement is not None:
                if compared.agreement is None:
                    compared.agreement = part.agreement
                else:
                    compared.agreement.merge(part.agreement)
        if example_sink is not None and part.examples is not None:
            example_sink(part.examples)
        done += part.rows_read
        progress("audit", done, job.table.row_count)

    run_units(ray, actors, "audit", plan, len(job.units), each)


def _replay(ray: object, actors: list, plan: ReplayPlan, job: Job, merged: _Merged,
            progress: Progress) -> None:
    done = 0

    def each(_: int, part: UnitReplay) -> None:
        nonlocal done
        for mp, theirs in zip(merged.passes, part.checks, strict=True):
            for mine, other in zip([c for c in mp.checks if c.replays], theirs, strict=True):
                mine.merge(other)
        done += part.rows_read
        progress("replay", done, job.table.row_count)

    run_units(ray, actors, "replay", plan, len(job.units), each)


def _method_inputs(method: AttributionMethod, settings: AuditSettings, reference: Reference,
                   features: tuple[str, ...]) -> MethodInputs:
    """What pipeline.audit_models prepares the method with: the baseline and stds measured
    from the data when the method needs them so, else a baseline that needs no data."""
    if not method.needs:
        return MethodInputs(baseline=None, std=None)
    if needs_prepass(method, settings, features):
        return MethodInputs(baseline=baseline_vector(settings.baseline, reference, features),
                            std=reference.std)
    return MethodInputs(baseline=baseline_vector(settings.baseline, None, features),
                        std=torch.full((len(features),), float("nan"), dtype=torch.float64))


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


def _narrowest(models: list[LoadedModel]) -> torch.dtype:
    """The dtype whose range every model's inputs must fit, as api.compare_models reads."""
    dtypes = [m.dtype for m in models]
    return min(dtypes, key=lambda d: torch.finfo(d).max if d.is_floating_point else 0.0)
