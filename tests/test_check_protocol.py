"""The check protocol cannot lose data: a check that accumulates per chunk (``update`` or
``replay``) must define ``merge``, or its class is refused when it is defined. On Ray each
worker's partial check is merged into the driver's, so a check without a merge used to report
nothing there (a row count of 0 against 1,500 locally) and no warning. Merges pair their lists
strictly: partials of different lengths raise instead of dropping the tail."""

from __future__ import annotations

import inspect
import os
import signal
from dataclasses import replace
from pathlib import Path

import helpers_row_count
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers_row_count import RowCount
from models import MLP, save_exported
from test_merge import ROWS, SPLITS, _rows, _single_and_merged
from test_merge_checks import _context, _model

import sensaudit
from sensaudit import checks
from sensaudit.api import run_audit
from sensaudit.checks.base import PER_CHUNK_HOOKS, Check, CheckResult, ReplayChunk
from sensaudit.checks.monotonicity import Monotonicity
from sensaudit.cli.overrides import with_overrides
from sensaudit.config.ray import RaySettings
from sensaudit.methods.base import Attributions
from sensaudit.settings.checks import Expectation
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import finite_rows


def _update(self, rows, x, attributions, labels):
    self.rows += len(rows)


def _replay(self, chunk, context):
    self.rows += len(chunk.rows)


def _merge(self, other):
    self.rows += other.rows


def _check_class(name: str, base: type = Check, **body) -> type:
    """A check class defined on the spot, as a check file would define it."""
    def from_settings(cls, settings):
        return cls()

    def finish(self, ranking):
        return CheckResult(self.name)

    namespace = {"name": name, "from_settings": classmethod(from_settings), "finish": finish}
    return type(name, (base,), {**namespace, **body})


# --- refused at definition -----------------------------------------------------------------------


@pytest.mark.parametrize("hook,method", [("update", _update), ("replay", _replay)])
def test_a_check_that_accumulates_without_merge_is_refused_at_definition(hook, method):
    with pytest.raises(TypeError) as err:
        _check_class("CountsRows", **{hook: method})
    message = str(err.value)
    assert message.startswith(f"CountsRows overrides {hook}() but defines no merge()")
    assert "def merge(self, other: Check) -> None" in message  # what to write


@pytest.mark.parametrize("hook,method", [("update", _update), ("replay", _replay)])
def test_the_same_check_with_merge_is_accepted(hook, method):
    cls = _check_class("CountsRows", **{hook: method, "merge": _merge})
    assert cls.accumulates


def test_a_check_that_only_reads_the_ranking_needs_no_merge():
    cls = _check_class("ReadsRanking")
    assert not cls.accumulates
    # Nothing calls its merge (the engines merge only checks that accumulate); a call is a bug,
    # and says so rather than doing nothing.
    with pytest.raises(NotImplementedError, match="ReadsRanking accumulates nothing"):
        cls().merge(cls())


def test_an_inherited_merge_counts_only_from_a_class_that_accumulates():
    counts = _check_class("Counts", update=_update, merge=_merge)
    # A subclass that refines the hook keeps its parent's merge, written for the same state.
    assert _check_class("CountsMore", counts, update=_update).accumulates
    # A merge from a class with no hook was not written for any per-chunk state.
    only_merge = _check_class("OnlyMerge", merge=_merge)
    with pytest.raises(TypeError, match="OnlyMergeChild overrides update"):
        _check_class("OnlyMergeChild", only_merge, update=_update)


def test_the_old_update_labelled_hook_is_refused():
    """update_labelled and update are one hook now: a check still defining the old one would
    never be called, and is told what to write."""
    with pytest.raises(TypeError, match=r"define update\(self, rows, x, attributions, labels\)"):
        _check_class("Labelled", update_labelled=_update, merge=_merge)


@pytest.mark.parametrize("cls", checks.CHECKS, ids=lambda cls: cls.__name__)
def test_every_registered_check_that_accumulates_defines_merge(cls):
    overridden = [hook for hook in PER_CHUNK_HOOKS
                  if getattr(cls, hook) is not getattr(Check, hook)]
    assert cls.accumulates == bool(overridden)
    if overridden:
        assert cls.merge is not Check.merge
    # One per-chunk read hook: what the pipeline calls, with the chunk's labels.
    assert list(inspect.signature(cls.update).parameters) == [
        "self", "rows", "x", "attributions", "labels"]


# --- merged partitions equal one pass ------------------------------------------------------------


@pytest.mark.parametrize("k,seed", SPLITS)
def test_a_row_count_merged_over_partitions_equals_one_pass(k, seed):
    def feed(check, d):
        check.update(d["rows"], d["x"], Attributions(d["scores"], d["values"]), d["labels"])

    single, merged = _single_and_merged(RowCount, feed, k, seed)
    assert merged.rows == single.rows == ROWS


def test_a_merge_of_partials_with_different_lengths_raises():
    """Monotonicity keeps its worst rows per (output, expectation). A partial built for fewer
    outputs used to merge its first lists and silently drop the rest."""
    settings = AuditSettings(expect=(Expectation("a", "increasing", 0.4),))
    context, d = _context(_model()), _rows()
    chunk = ReplayChunk(rows=d["rows"], ids=d["ids"], x=d["x"], scores=d["scores"],
                        values=d["values"], finite=finite_rows(d["scores"], d["values"]))
    mine, theirs = Monotonicity.from_settings(settings), Monotonicity.from_settings(settings)
    mine.replay(chunk, context)
    theirs.replay(chunk, context)
    assert len(theirs.worst) == 2  # one per output
    theirs.worst = theirs.worst[:1]
    with pytest.raises(ValueError, match="zip"):
        mine.merge(theirs)


# --- the same count on both engines --------------------------------------------------------------

PART_ROWS = (260, 45, 300)


def _counted(result) -> int:
    return next(c for c in result.checks if c.check == "row_count").summary["row_count"]


@pytest.mark.slow
def test_a_row_count_check_counts_the_same_rows_locally_and_on_ray(tmp_path, monkeypatch):
    """Split into 7 work units over 2 workers: every worker's count reaches the driver."""
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need Ray "
                                            "(pip install 'sensaudit[ray]')")
    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, RowCount])
    rng = np.random.default_rng(5)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, count in enumerate(PART_ROWS):
        frame = pd.DataFrame({f"f{j}": rng.normal(j, 1.0, count) for j in range(3)})
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       parts / f"part-{i}.parquet", row_group_size=50)
    save_exported(MLP(n_features=3, n_outputs=1).double(), tmp_path / "mlp.pt2", n_features=3,
                  dtype=torch.float64)
    (tmp_path / "audit.yaml").write_text("model:\n  path: mlp.pt2\ndata:\n  path: parts\n"
                                         "  chunk_rows: 70\n", encoding="utf-8")
    config = sensaudit.load_config(tmp_path / "audit.yaml")

    def audit(engine: str, out: str, **ray_settings: object):
        cfg = with_overrides(config, report_dir=tmp_path / out, formats=["json"], engine=engine)
        if ray_settings:
            cfg = replace(cfg, ray=RaySettings(**ray_settings))  # type: ignore[arg-type]
        return run_audit(cfg)[0]

    local = audit("local", "local")
    # Ray's workers are other processes: they import the check and register it on start.
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it; other tests check it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path},
                          "worker_process_setup_hook": helpers_row_count.register})
    signal.signal(signal.SIGTERM, handler)
    try:
        on_ray = audit("ray", "ray", workers=2, rows_per_batch=100)
    finally:
        ray.shutdown()
    assert _counted(local) == _counted(on_ray) == sum(PART_ROWS)
