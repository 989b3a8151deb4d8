"""What the driver sends the Ray workers, and what each work unit sends back.

Everything here is plain data (settings, paths, tensors, mergeable accumulators): a worker
receives the model's *path* and config, never a model object, and loads it with sensaudit's own
loader under the same trust rules as the local engine (:mod:`sensaudit.inputs.models`).
The audit itself travels as its :class:`~sensaudit.pipeline.plan.Plan`. Partial results are the
plan's partials (:class:`~sensaudit.pipeline.plan.Statistics`, each model's sums and checks,
:class:`~sensaudit.pipeline.examples.ExampleDrivers`,
:class:`~sensaudit.pipeline.pass_state.Compared`), which the driver merges with the plan's merges
into the single-pass answer on any partition of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import torch

from sensaudit.checks.base import Check
from sensaudit.core.errors import SensauditError
from sensaudit.inputs.dataset import WorkUnit
from sensaudit.inputs.table_chunks import MissingValues
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.pass_state import Compared
from sensaudit.pipeline.plan import MethodInputs, Plan, Statistics
from sensaudit.settings.sections import DataConfig, ModelConfig
from sensaudit.stats.accumulators import AttributionSums, FeatureMoments
from sensaudit.stats.row_stats import FeatureRange


@dataclass(frozen=True)
class Job:
    """One audit's fixed inputs, given to every worker when it starts."""

    models: tuple[ModelConfig, ...]  # each model's file and loading settings (old, new, ...)
    trust_model_code: bool | None  # as the caller passed it to the local loader
    plan: Plan  # the audit: settings, table, method, checks, compare (pipeline.plan)
    data: DataConfig  # with the features resolved (model_inputs.match_data)
    units: tuple[WorkUnit, ...]
    read_dtype: torch.dtype  # the dtype rows are read for (the model's, or the narrowest)
    # The first usable rows of the data, float [<= 8, features]: every worker probes its
    # models on the same rows the driver did (input width, outputs, row independence).
    probe: torch.Tensor
    threads: int  # torch threads per worker (its CPUs)
    cwd: str  # the driver's working directory: relative paths mean the same on a worker


@dataclass(frozen=True)
class StatisticsTask:
    """The statistics pass over a unit: feature moments, ranges and (for a median baseline)
    the median sample."""


@dataclass(frozen=True)
class ReadTask:
    """The read pass over a unit, fused with the rows step: the final feature statistics are
    known from the statistics pass, so example rows and compare's agreement need no second
    read."""

    token: int  # names the task, so a worker prepares its method once per audit
    method: MethodInputs
    std: torch.Tensor  # float64 [features], over every row
    baseline: torch.Tensor  # float64 [features]: where each row's contributions start
    # The rows step runs only where the local engine would keep the rows for it
    # (engines.local): example rows, the charts' sample, agreement, the per-row file.
    per_row: bool
    examples_table: bool  # build the first model's rows for the per-row file


@dataclass(frozen=True)
class ReplayTask:
    """The rows step of the checks that replay rows with the model and the final ranking."""

    token: int
    method: MethodInputs
    std: torch.Tensor
    ranges: FeatureRange
    rankings: tuple[pd.DataFrame, ...]  # each model's ranked sensitivity table


@dataclass
class UnitStatistics:
    statistics: Statistics
    missing: MissingValues | None  # None for a CSV, which checks its own at its end


@dataclass
class ModelPartial:
    """One model's read over one work unit (a :class:`~sensaudit.pipeline.pass_state.ChunkState`
    and its example rows)."""

    sums: AttributionSums
    checks: list[Check]
    drivers: ExampleDrivers
    seen: FeatureMoments | None = None


@dataclass
class UnitRead:
    models: list[ModelPartial]
    rows_read: int
    examples: pa.Table | None = None  # the first model's per-row file rows, in row order
    compared: Compared | None = None


@dataclass
class UnitReplay:
    checks: list[list[Check]]  # per model, its checks that replay, in registry order
    rows_read: int


@dataclass
class WorkerInfo:
    version: str
    torch: str
    device: str
    pid: int


@dataclass
class Failure:
    """A bad-input error met on a worker, handed back to be raised on the driver as it is
    (Ray would wrap it in its own exception with the worker's traceback)."""

    error: SensauditError
