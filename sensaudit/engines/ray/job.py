"""What the driver sends the Ray workers, and what each work unit sends back.

Everything here is plain data (settings, paths, tensors, mergeable accumulators): a worker
receives the model's *path* and config, never a model object, and loads it with sensaudit's own
loader under the same trust rules as the local engine (:mod:`sensaudit.inputs.models`).
Partial results are the accumulators of :mod:`sensaudit.stats.accumulators`,
:mod:`sensaudit.pipeline.baselines`,
:mod:`sensaudit.stats.row_stats`, the checks and
:class:`~sensaudit.pipeline.examples.ExampleDrivers`, whose
``merge`` gives the single-pass answer on any partition of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import torch

from sensaudit.checks.base import Check
from sensaudit.core.errors import SensauditError
from sensaudit.inputs.dataset import WorkUnit
from sensaudit.inputs.table_chunks import MissingValues
from sensaudit.inputs.table_layout import Table
from sensaudit.pipeline.baselines import FeatureSummary
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.settings.sections import AuditSettings, CompareSettings, DataConfig, ModelConfig
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    BootstrapMoments,
    BootstrapSensitivity,
    FeatureMoments,
)
from sensaudit.stats.row_stats import FeatureRange


@dataclass(frozen=True)
class Job:
    """One audit's fixed inputs, given to every worker when it starts."""

    models: tuple[ModelConfig, ...]  # each model's file and loading settings (old, new, ...)
    trust_model_code: bool | None  # as the caller passed it to the local loader
    prepare_cfg: ModelConfig | None  # model.output, output_names, transform (pipeline)
    data: DataConfig  # with the features resolved (model_inputs.match_data)
    table: Table
    units: tuple[WorkUnit, ...]
    settings: AuditSettings
    source: object  # the config file, for messages
    read_dtype: torch.dtype  # the dtype rows are read for (the model's, or the narrowest)
    # The first usable rows of the data, float [<= 8, features]: every worker probes its
    # models on the same rows the driver did (input width, outputs, row independence).
    probe: torch.Tensor
    threads: int  # torch threads per worker (its CPUs)
    cwd: str  # the driver's working directory: relative paths mean the same on a worker


@dataclass(frozen=True)
class StatisticsPlan:
    """The pre-pass: feature moments, ranges and (for a median baseline) the median sample."""

    median: bool


@dataclass(frozen=True)
class MethodInputs:
    """What the method is prepared with before its first row, as the local engine does."""

    baseline: torch.Tensor | None  # float64 [features]; None: the method needs nothing
    std: torch.Tensor | None


@dataclass(frozen=True)
class AuditPlan:
    """The read pass, fused with the per-row outputs: the final feature statistics are known
    from the pre-pass, so examples rows and per-row agreement need no second read."""

    token: int  # names the plan, so a worker prepares its method once per plan
    method: MethodInputs
    std: torch.Tensor  # float64 [features], over every row
    baseline: torch.Tensor  # float64 [features]: where each row's contributions start
    # Per-row outputs are computed only where the local engine would keep the rows for its
    # replay (pipeline.audit_models' keep_rows): examples, the charts' sample, agreement.
    per_row: bool
    examples_table: bool  # build the first model's examples rows (examples.csv)
    compare: CompareSettings | None  # the paired bootstrap and agreement of `compare`


@dataclass(frozen=True)
class ReplayPlan:
    """The checks that replay rows with the model and the final ranking."""

    token: int
    method: MethodInputs
    std: torch.Tensor
    ranges: FeatureRange
    rankings: tuple[pd.DataFrame, ...]  # each model's ranked sensitivity table


@dataclass
class UnitStatistics:
    summary: FeatureSummary
    ranges: FeatureRange
    dropped: int
    rows_read: int  # rows in the unit, kept or dropped
    missing: MissingValues | None  # None for a CSV, which checks its own at its end


@dataclass
class ModelPartial:
    """One model's results over one work unit."""

    sums: AttributionSums
    checks: list[Check]
    drivers: ExampleDrivers
    seen: FeatureMoments | None = None


@dataclass
class UnitAudit:
    models: list[ModelPartial]
    rows_read: int
    examples: pa.Table | None = None  # the first model's examples rows, in row order
    boot_moments: BootstrapMoments | None = None
    boots: list[BootstrapSensitivity] = field(default_factory=list)
    agreement: AgreementAccumulator | None = None


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
