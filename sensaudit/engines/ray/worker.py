"""The Ray actor: loads each model once, then works through the units the driver hands it.

A worker runs the same code as the local engine on its rows: the chunk reader of
:mod:`sensaudit.inputs.tables` (the same validation, the same row numbers), the loader of
:mod:`sensaudit.inputs.models` (the same safety checks and trust flags: the worker is given the
model's path, never a model object), :func:`sensaudit.pipeline.passes.prepare_model` on the same
probe rows as the driver, and the pipeline's attribution and replay steps. What it returns per unit
are mergeable partial results (:mod:`.job`).

Bad input met here (a text cell, a model that raises) is returned as a :class:`~.job.Failure`,
which the driver raises as it is: exit code 2 and the same one-line message as locally.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator

import pyarrow as pa
import torch

from sensaudit._version import __version__
from sensaudit.checks import build_checks
from sensaudit.checks.base import Ranking
from sensaudit.core.errors import SensauditError
from sensaudit.engines.ray.job import (
    AuditPlan,
    Failure,
    Job,
    MethodInputs,
    ModelPartial,
    ReplayPlan,
    StatisticsPlan,
    UnitAudit,
    UnitReplay,
    UnitStatistics,
    WorkerInfo,
)
from sensaudit.inputs import tables
from sensaudit.inputs.models import LoadedModel, load_model
from sensaudit.inputs.table_chunks import Chunk, MissingValues
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.pipeline.baselines import FeatureSummary
from sensaudit.pipeline.compare import add_agreement, add_bootstrap, check_bootstrap_size
from sensaudit.pipeline.model_ready import PreparedModel, attribute_chunk, prepare_model
from sensaudit.pipeline.pass_state import ModelPass, ReadPass
from sensaudit.pipeline.passes import make_method, read_chunk
from sensaudit.pipeline.replay import example_drivers, model_context, replay_checks
from sensaudit.pipeline.spill import Spill, SpilledChunk
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    BootstrapMoments,
    BootstrapSensitivity,
    FeatureMoments,
    PoissonBootstrap,
    finite_rows,
)
from sensaudit.stats.row_stats import FeatureRange


class AuditWorker:
    """One actor of the pool. Its models are loaded on its first call (and again if Ray
    restarts it after a failure), each unit is a pure function of the unit and the plan, so a
    unit retried elsewhere gives the same partial result."""

    def __init__(self, job: Job):
        self.job = job
        self.models: list[PreparedModel] | None = None
        self._method: tuple[int, AttributionMethod] | None = None
        torch.set_num_threads(max(1, job.threads))
        # Paths relative to the driver's folder (the config's, as given) then name the same
        # files here, and messages name them as the local engine does. An actor is a process
        # of its own, so this changes nothing else. Where that folder does not exist, paths
        # must be absolute (README: every node sees the files at the same paths).
        with contextlib.suppress(OSError):
            os.chdir(job.cwd)

    def info(self) -> bytes:
        """Load the models (errors come back as a Failure) and say what runs here."""
        return self._guard(lambda: WorkerInfo(
            version=__version__, torch=torch.__version__,
            device=str(self._prepared()[0].loaded.device), pid=os.getpid()))

    def statistics(self, index: int, plan: StatisticsPlan) -> bytes:
        """A :class:`~.job.UnitStatistics` (pickled, see :func:`_guard`)."""
        return self._guard(lambda: self._statistics(index, plan))

    def audit(self, index: int, plan: AuditPlan) -> bytes:
        """A :class:`~.job.UnitAudit` (pickled)."""
        return self._guard(lambda: self._audit(index, plan))

    def replay(self, index: int, plan: ReplayPlan) -> bytes:
        """A :class:`~.job.UnitReplay` (pickled)."""
        return self._guard(lambda: self._replay(index, plan))

    @staticmethod
    def _guard(work: Callable[[], object]) -> bytes:
        """The result, or the bad-input error met, pickled: Ray would hand numpy arrays back
        as read-only views of its object store, and the driver's merges add into the first
        partial's arrays in place (:func:`unpack` makes them the driver's own)."""
        try:
            result = work()
        except SensauditError as exc:
            result = Failure(exc)
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)

    # --- the passes --------------------------------------------------------------------------

    def _statistics(self, index: int, plan: StatisticsPlan) -> UnitStatistics:
        """Feature moments, ranges and the median sample of one unit; no model involved."""
        n = len(self.job.table.features)
        summary = FeatureSummary(n, median=plan.median)
        ranges = FeatureRange(n)
        dropped = rows_read = 0
        chunks, missing = self._chunks(index)
        for chunk in chunks:
            dropped += chunk.dropped
            rows_read += len(chunk.rows) + chunk.dropped
            summary.update(chunk.rows, chunk.x, exact=chunk.exact,
                           integer_max=chunk.integer_max)
            ranges.update(chunk.x)
        return UnitStatistics(summary=summary, ranges=ranges, dropped=dropped,
                              rows_read=rows_read, missing=missing)

    def _audit(self, index: int, plan: AuditPlan) -> UnitAudit:
        """The read pass of pipeline.read_pass over one unit, with the replay's examples and
        compare's agreement done at once (the statistics they need are already final)."""
        job, prepared = self.job, self._prepared()
        method = self._prepared_method(plan.token, plan.method)
        passes = [self._model_pass(p) for p in prepared]
        parts = [ModelPartial(sums=mp.sums, checks=mp.checks,
                              drivers=example_drivers(mp, job.table, plan.baseline, job.settings,
                                                      method, plan.std))
                 for mp in passes]
        unit = UnitAudit(models=parts, rows_read=0)
        if plan.compare is not None:
            check_bootstrap_size(plan.compare, len(job.table.features), job.source,
                                 outputs=len(prepared[0].outputs))
            bootstrap = PoissonBootstrap(plan.compare.bootstrap_samples, plan.compare.seed)
            unit.boot_moments = BootstrapMoments(bootstrap, len(job.table.features))
            unit.boots = [BootstrapSensitivity(bootstrap) for _ in prepared[:2]]
            unit.agreement = AgreementAccumulator(len(prepared[0].outputs),
                                                  keep=job.settings.examples_in_report)
        examples: list[pa.Table] = []
        chunks, _ = self._chunks(index)
        for chunk in chunks:
            unit.rows_read += len(chunk.rows) + chunk.dropped
            if not len(chunk.x):
                continue
            results = [self._read_chunk(method, mp, part, chunk)
                       for mp, part in zip(passes, parts, strict=True)]
            if unit.boot_moments is not None:
                add_bootstrap(unit.boot_moments, unit.boots, chunk.rows, chunk.x, results)
            if not plan.per_row:
                continue
            # As the spill hands them to the replay: on the CPU, in the model's dtype.
            on_cpu = [(a.scores.detach().cpu(), a.values.detach().cpu()) for a in results]
            for i, (part, (scores, values)) in enumerate(zip(parts, on_cpu, strict=True)):
                rows_table = part.drivers.add(
                    chunk.rows, chunk.ids, chunk.labels, scores, values,
                    finite_rows(scores, values), chunk.x, table=plan.examples_table and i == 0)
                if rows_table is not None:
                    examples.append(rows_table)
            if unit.agreement is not None:
                add_agreement(unit.agreement, chunk.rows, chunk.ids, on_cpu, plan.std,
                              method.per_unit)
        if examples:
            unit.examples = pa.concat_tables(examples, promote_options="permissive")
        return unit

    def _read_chunk(self, method: AttributionMethod, model_pass: ModelPass, part: ModelPartial,
                    chunk: Chunk) -> Attributions:
        """One model on one chunk, as pipeline.read_pass does it (the same step)."""
        return read_chunk(method, model_pass.prepared, part, chunk)[0]

    def _replay(self, index: int, plan: ReplayPlan) -> UnitReplay:
        """The replay of the checks that need the model and the final ranking, over one unit:
        its attributions computed again (a pure function of the rows), then pipeline's
        replay step, as the local engine runs it on its spill."""
        job, prepared = self.job, self._prepared()
        method = self._prepared_method(plan.token, plan.method)
        passes = [ModelPass(prepared=p, sums=AttributionSums(0, 0),
                            checks=[c for c in build_checks(job.settings, job.source)
                                    if c.replays])
                  for p in prepared]
        shell = ReadPass(moments=FeatureMoments(0), dropped=0, models=passes, spill=Spill(),
                         ranges=plan.ranges)
        contexts = [model_context(mp, shell, plan.std,
                                  Ranking(table=table, features=list(job.table.features),
                                          outputs=mp.prepared.outputs, per_unit=method.per_unit))
                    for mp, table in zip(passes, plan.rankings, strict=True)]
        rows_read = 0
        chunks, _ = self._chunks(index)
        for chunk in chunks:
            rows_read += len(chunk.rows) + chunk.dropped
            if not len(chunk.x):
                continue
            results = []
            for mp in passes:
                loaded = mp.prepared.loaded
                a = attribute_chunk(method, mp.prepared, chunk.x.to(loaded.device, loaded.dtype),
                               chunk.rows)
                results.append((a.scores.detach().cpu(), a.values.detach().cpu()))
            spilled = SpilledChunk(rows=chunk.rows, ids=chunk.ids, labels=chunk.labels,
                                   results=results, x=chunk.x)
            for mp, context, (scores, values) in zip(passes, contexts, results, strict=True):
                replay_checks(mp, context, spilled, scores, values)
        return UnitReplay(checks=[mp.checks for mp in passes], rows_read=rows_read)

    # --- what a worker keeps -----------------------------------------------------------------

    def _prepared(self) -> list[PreparedModel]:
        """The models, loaded once per worker from their paths and probed as the driver did."""
        if self.models is None:
            job = self.job
            loaded: list[LoadedModel] = [
                load_model(cfg, trust_model_code=job.trust_model_code) for cfg in job.models]
            self.models = [prepare_model(m, job.probe.to(m.device, m.dtype), job.prepare_cfg,
                                         job.source, job.table) for m in loaded]
        return self.models

    def _prepared_method(self, token: int, inputs: MethodInputs) -> AttributionMethod:
        if self._method is None or self._method[0] != token:
            method = make_method(self.job.settings, self.job.source)
            if inputs.baseline is not None and inputs.std is not None:
                method.prepare(inputs.baseline, inputs.std)
            self._method = (token, method)
        return self._method[1]

    def _model_pass(self, prepared: PreparedModel) -> ModelPass:
        job = self.job
        return ModelPass(prepared=prepared,
                         sums=AttributionSums(len(prepared.outputs), len(job.table.features)),
                         checks=build_checks(job.settings, job.source))

    def _chunks(self, index: int) -> tuple[Iterator[Chunk], MissingValues | None]:
        """The unit's validated chunks, and the tally of its missing values (None for a CSV
        file, read whole and checked at its end as the local engine does)."""
        job = self.job
        unit = job.units[index]
        if unit.row_groups is None:
            return tables.iter_chunks(job.table, job.data, job.read_dtype), None
        missing = MissingValues(job.table.features)
        return (tables.iter_unit_chunks(job.table, job.data, unit, job.read_dtype, missing),
                missing)


def unpack(result: bytes) -> object:
    """A worker's result, as the driver's own objects (this engine's workers wrote it)."""
    return pickle.loads(result)
