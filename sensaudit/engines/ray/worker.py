"""The Ray actor: loads each model once, then works through the units the driver hands it.

A worker runs the same code as the local engine on its rows: the chunk reader of
:mod:`sensaudit.inputs.tables` (the same validation, the same row numbers), the loader of
:mod:`sensaudit.inputs.models` (the same safety checks and trust flags: the worker is given the
model's path, never a model object), probed on the same rows as the driver, and the plan's steps
(:mod:`sensaudit.pipeline.steps`). What it returns per unit are the plan's mergeable partial
results (:mod:`.job`).

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
    Failure,
    Job,
    ModelPartial,
    ReadTask,
    ReplayTask,
    StatisticsTask,
    UnitRead,
    UnitReplay,
    UnitStatistics,
    WorkerInfo,
)
from sensaudit.inputs import tables
from sensaudit.inputs.models import LoadedModel, load_model
from sensaudit.inputs.table_chunks import Chunk, MissingValues
from sensaudit.methods.base import AttributionMethod
from sensaudit.pipeline.model_ready import PreparedModel, prepare_model
from sensaudit.pipeline.pass_state import ModelPass
from sensaudit.pipeline.plan import MethodInputs, make_method
from sensaudit.pipeline.spill import SpilledChunk
from sensaudit.pipeline.steps import (
    RowWork,
    attributed,
    example_drivers,
    model_context,
    model_pass,
    read_step,
    rows_step,
)
from sensaudit.stats.accumulators import AttributionSums


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
        # must be absolute (docs/ray.md: every node sees the files at the same paths).
        with contextlib.suppress(OSError):
            os.chdir(job.cwd)

    def info(self) -> bytes:
        """Load the models (errors come back as a Failure) and say what runs here."""
        return self._guard(lambda: WorkerInfo(
            version=__version__, torch=torch.__version__,
            device=str(self._prepared()[0].loaded.device), pid=os.getpid()))

    def statistics(self, index: int, task: StatisticsTask) -> bytes:
        """A :class:`~.job.UnitStatistics` (pickled, see :func:`_guard`)."""
        return self._guard(lambda: self._statistics(index))

    def audit(self, index: int, task: ReadTask) -> bytes:
        """A :class:`~.job.UnitRead` (pickled)."""
        return self._guard(lambda: self._read(index, task))

    def replay(self, index: int, task: ReplayTask) -> bytes:
        """A :class:`~.job.UnitReplay` (pickled)."""
        return self._guard(lambda: self._replay(index, task))

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

    # --- the plan's passes over one unit ---------------------------------------------------

    def _statistics(self, index: int) -> UnitStatistics:
        """The plan's statistics over one unit; no model involved."""
        statistics = self.job.plan.statistics(ranges=True)
        chunks, missing = self._chunks(index)
        for chunk in chunks:
            statistics.update(chunk)
        return UnitStatistics(statistics=statistics, missing=missing)

    def _read(self, index: int, task: ReadTask) -> UnitRead:
        """The plan's read step over one unit, each chunk then through its rows step (the
        statistics they need are already final)."""
        plan, prepared = self.job.plan, self._prepared()
        table = plan.table
        method = self._prepared_method(task.token, task.method)
        passes = [model_pass(p, table, plan.settings, plan.source) for p in prepared]
        compared = plan.new_compared()
        work = RowWork(drivers=[example_drivers(mp, table, task.baseline, plan.settings,
                                                method, task.std) for mp in passes],
                       examples_table=task.examples_table, compared=compared, std=task.std,
                       per_unit=method.per_unit)
        examples: list[pa.Table] = []
        rows_read = 0
        chunks, _ = self._chunks(index)
        for chunk in chunks:
            rows_read += len(chunk.rows) + chunk.dropped
            if not len(chunk.x):
                continue
            results = read_step(method, passes, chunk, compared=compared, table=table,
                                source=plan.source)
            if not task.per_row:
                continue
            # As the spill hands them to the rows step: on the CPU, in the model's dtype.
            kept = SpilledChunk(rows=chunk.rows, ids=chunk.ids, labels=chunk.labels,
                                results=[(a.scores.detach().cpu(), a.values.detach().cpu())
                                         for a in results], x=chunk.x)
            rows_table = rows_step(passes, kept, work)
            if rows_table is not None:
                examples.append(rows_table)
        unit = UnitRead(models=[ModelPartial(sums=mp.sums, checks=mp.checks, drivers=drivers,
                                             seen=mp.seen)
                                for mp, drivers in zip(passes, work.drivers, strict=True)],
                        rows_read=rows_read, compared=compared)
        if examples:
            unit.examples = pa.concat_tables(examples, promote_options="permissive")
        return unit

    def _replay(self, index: int, task: ReplayTask) -> UnitReplay:
        """The plan's rows step for the checks that replay rows with the model and the final
        ranking, over one unit: its attributions computed again (a pure function of the rows),
        as the local engine replays them from its spill."""
        plan, prepared = self.job.plan, self._prepared()
        features = list(plan.table.features)
        method = self._prepared_method(task.token, task.method)
        passes = [ModelPass(prepared=p, sums=AttributionSums(0, 0),
                            checks=[c for c in build_checks(plan.settings, plan.source)
                                    if c.replays])
                  for p in prepared]
        work = RowWork(contexts=[
            model_context(mp, task.ranges, task.std,
                          Ranking(table=ranked, features=features, outputs=mp.prepared.outputs,
                                  per_unit=method.per_unit))
            for mp, ranked in zip(passes, task.rankings, strict=True)])
        rows_read = 0
        chunks, _ = self._chunks(index)
        for chunk in chunks:
            rows_read += len(chunk.rows) + chunk.dropped
            if len(chunk.x):
                rows_step(passes, attributed(method, passes, chunk), work)
        return UnitReplay(checks=[mp.checks for mp in passes], rows_read=rows_read)

    # --- what a worker keeps -----------------------------------------------------------------

    def _prepared(self) -> list[PreparedModel]:
        """The models, loaded once per worker from their paths and probed as the driver did."""
        if self.models is None:
            job = self.job
            loaded: list[LoadedModel] = [
                load_model(cfg, trust_model_code=job.trust_model_code) for cfg in job.models]
            plan = job.plan
            self.models = [prepare_model(m, job.probe.to(m.device, m.dtype), plan.model_cfg,
                                         plan.source, plan.table) for m in loaded]
        return self.models

    def _prepared_method(self, token: int, inputs: MethodInputs) -> AttributionMethod:
        """The plan's method, prepared once per audit as the driver prepared its own."""
        if self._method is None or self._method[0] != token:
            method = make_method(self.job.plan.settings, self.job.plan.source)
            inputs.prepare(method)
            self._method = (token, method)
        return self._method[1]

    def _chunks(self, index: int) -> tuple[Iterator[Chunk], MissingValues | None]:
        """The unit's validated chunks, and the tally of its missing values (None for a CSV
        file, read whole and checked at its end as the local engine does)."""
        job = self.job
        unit, table = job.units[index], job.plan.table
        if unit.row_groups is None:
            return tables.iter_chunks(table, job.data, job.read_dtype), None
        missing = MissingValues(table.features)
        return (tables.iter_unit_chunks(table, job.data, unit, job.read_dtype, missing),
                missing)


def unpack(result: bytes) -> object:
    """A worker's result, as the driver's own objects (this engine's workers wrote it)."""
    return pickle.loads(result)
