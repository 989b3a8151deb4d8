"""What the audit's passes hand each other: one model's partial results, compare's, the read
pass's results, and the callbacks an engine gives the passes (progress, example rows, chunks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import torch

from sensaudit.checks.base import Check
from sensaudit.inputs.table_chunks import Chunk
from sensaudit.pipeline.baselines import FeatureSummary
from sensaudit.pipeline.example_candidates import ExampleCandidates
from sensaudit.pipeline.model_ready import PreparedModel
from sensaudit.pipeline.spill import Spill
from sensaudit.settings.sections import CompareSettings
from sensaudit.stats.accumulators import (
    AgreementAccumulator,
    AttributionSums,
    FeatureMoments,
)
from sensaudit.stats.bucket_bootstrap import BucketBootstrap
from sensaudit.stats.row_stats import FeatureRange

# progress(stage, rows_done, rows_total): stage "training" (data.train's rows, read first),
# "statistics" (the pre-pass some methods need), "audit" (the read pass: attributions) or
# "examples" (the replay: per-row contributions); rows_total is None while unknown.
Progress = Callable[[str, int, "int | None"], None]
ExampleSink = Callable[[pa.Table], None]
Chunks = Callable[[], Iterator[Chunk]]
# The baseline as it stands after a chunk of the read pass (float64 [features]), given the
# statistics read so far: what the example candidates are ranked against.
ProvisionalBaseline = Callable[[FeatureSummary], torch.Tensor]


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
class Compared:
    """``compare``'s partial results over some rows: the paired bootstrap's bucket sums
    (filled by the read step) and the old and new model's per-row agreement (the rows step)."""

    settings: CompareSettings
    bootstrap: BucketBootstrap
    keep: int  # audit.examples_in_report: the rows that disagree most, kept per output
    agreement: AgreementAccumulator | None = None

    @classmethod
    def start(cls, settings: CompareSettings, features: int, keep: int) -> Compared:
        # Only old and new have intervals; the seed replicas that may follow them have none.
        return cls(settings, BucketBootstrap(settings.bootstrap_samples, settings.seed,
                                             features, models=2), keep)

    def merge(self, other: Compared) -> None:
        self.bootstrap.merge(other.bootstrap)
        if other.agreement is not None:
            if self.agreement is None:
                self.agreement = other.agreement
            else:
                self.agreement.merge(other.agreement)


@dataclass
class ReadPass:
    moments: FeatureMoments
    dropped: int
    models: list[ModelPass]
    spill: Spill
    ranges: FeatureRange | None = None  # per-feature min..max, for checks that replay
    summary: FeatureSummary | None = None  # the read's feature statistics (moments, medians)
    # False when the spill was dropped for passing its row limit (see the local engine).
    spilled: bool = True
    compared: Compared | None = None  # compare's bootstrap (and agreement once the rows step ran)


class ChunkState(Protocol):
    """What one model accumulates over the chunks it reads (a :class:`ModelPass` here, a
    work unit's partial on another engine)."""

    sums: AttributionSums
    checks: list[Check]
    seen: FeatureMoments | None
