"""One plan, two engines (sensaudit.pipeline.plan): the Ray engine's own code (the driver's
RayEngine and the worker's per-unit steps, partials merged in unit order with the plan's merges)
run in this process, without Ray, over the work units of a partitioned dataset, gives the local
engine's audit and comparison. tests/test_ray_engine.py runs the same on a Ray pool (slow)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from models import MLP, save_exported

from sensaudit import load_config
from sensaudit.api import audit, check_proxies, compare_models
from sensaudit.engines.ray.driver import RayEngine, prepare_job
from sensaudit.engines.ray.job import Failure, Job
from sensaudit.engines.ray.worker import AuditWorker, unpack
from sensaudit.inputs import tables
from sensaudit.inputs.model_inputs import declared_inputs, match_data
from sensaudit.pipeline.plan import audit_plan, comparison, run
from sensaudit.results.audit_result import AuditResult

RTOL = 1e-9
PART_ROWS = (150, 90, 160)


@pytest.fixture
def threads():
    """A worker sets torch's thread count for its process; here that is the test's."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _setup(folder: Path, method: str) -> Path:
    """A folder of three Parquet files (row groups of 40 to 64 rows, one row to drop), two
    small MLPs, and a config with a proxy gate, expect (replayed) and robustness (replayed)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({f"f{j}": rng.normal(j, 1.0 + j, sum(PART_ROWS)) for j in range(5)})
    frame["label"] = (frame["f0"] + 0.3 * rng.normal(size=len(frame)) > 0).astype(float)
    frame.loc[[17, 201], "f2"] = np.nan
    parts = folder / "parts"
    parts.mkdir(parents=True)
    start = 0
    for i, (count, group) in enumerate(zip(PART_ROWS, (64, 40, 50), strict=True)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[start : start + count],
                                            preserve_index=False),
                       parts / f"part-{i}.parquet", row_group_size=group)
        start += count
    save_exported(MLP(n_features=5, n_outputs=1).double(), folder / "old.pt2", n_features=5,
                  dtype=torch.float64)
    save_exported(MLP(n_features=5, hidden=4, n_outputs=1).double(), folder / "new.pt2",
                  n_features=5, dtype=torch.float64)
    config = folder / "audit.yaml"
    config.write_text(f"""\
model:
  path: old.pt2
data:
  path: parts
  label: label
  on_missing: drop
  chunk_rows: 30
audit:
  method: {method}
  examples_in_report: 4
  proxies:
    - {{feature: f0, max_share: 0.1}}
  expect:
    - {{feature: f1, direction: increasing, max_violation_rate: 0.5}}
  robustness: {{epsilon: 0.1, steps: 3, bounds: observed}}
compare:
  bootstrap_samples: 50
ray:
  rows_per_batch: 100
""", encoding="utf-8")
    return config


def _in_process(config_path: Path, models: tuple[str, ...]):
    """The Ray engine's passes over the config's work units, each unit through an
    AuditWorker here, handed on in unit order as schedule.run_units does."""
    config = load_config(config_path)
    cfgs = tuple(config.model.__class__(**{**vars(config.model), "path": config.model.path.parent
                                           / name}) for name in models)
    data = match_data(config.data, declared_inputs(cfgs[0], config.data), config.source)
    table = tables.open_table(data)
    check_proxies(config.audit, table.features, config.source)
    plan = audit_plan(config.audit, table, config.source, model_cfg=config.model,
                      compare=config.compare if len(models) > 1 else None)
    job, passes = prepare_job(config, plan, cfgs, data, trust=None)
    worker = AuditWorker(job)
    progress: list[tuple[str, int, int | None]] = []

    def units(call: str, task: object, each: Any) -> None:
        for unit in range(len(job.units)):
            result = unpack(getattr(worker, call)(unit, task))
            if isinstance(result, Failure):
                raise result.error
            each(unit, result)

    rows: list[pa.Table] = []
    engine = RayEngine(job, passes, units, progress=lambda *update: progress.append(update),
                       sink=rows.append, workers=1)
    return plan, run(plan, engine), job, rows, progress


def _same_audit(local: AuditResult, other: AuditResult) -> None:
    pd.testing.assert_frame_equal(local.table, other.table, check_exact=False, rtol=RTOL,
                                  atol=1e-12)
    assert [(c.check, [(g.output, g.subject, g.passed) for g in c.gates], c.findings)
            for c in local.checks] == \
        [(c.check, [(g.output, g.subject, g.passed) for g in c.gates], c.findings)
         for c in other.checks]
    for mine, theirs in zip(local.checks, other.checks, strict=True):
        assert mine.tables.keys() == theirs.tables.keys()
        for name, frame in mine.tables.items():
            pd.testing.assert_frame_equal(frame, theirs.tables[name], check_exact=False,
                                          rtol=RTOL, atol=1e-12)
    assert [(e.reason, e.output, e.id) for e in local.examples] == \
        [(e.reason, e.output, e.id) for e in other.examples]
    np.testing.assert_array_equal(local.contributions.rows, other.contributions.rows)
    assert (local.rows, local.rows_dropped) == (other.rows, other.rows_dropped)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_the_ray_engines_passes_in_process_give_the_local_audit(tmp_path, threads, method):
    """Several units (row groups across three files), a dropped row in two of them, checks
    that replay (a third pass on this engine), and for integrated gradients the statistics
    the method needs before its first row."""
    config = _setup(tmp_path, method)
    local = audit(load_config(config))
    _, outcome, job, rows, progress = _in_process(config, ("old.pt2",))
    (on_units,) = outcome.results
    assert len(job.units) >= 4
    _same_audit(local, on_units)
    assert any("Computed on Ray" in note for note in on_units.notes)
    assert not any("Computed on Ray" in note for note in local.notes)
    # The per-row file's rows: every kept row once, in row order.
    ids = pa.concat_tables(rows).column("id").to_pylist()
    assert ids == sorted(ids) and len(ids) == local.rows
    assert {stage for stage, _, _ in progress} == {"statistics", "audit", "replay"}


def test_the_ray_engines_passes_in_process_give_the_local_comparison(tmp_path, threads):
    config = _setup(tmp_path, "gradient")
    local = compare_models(load_config(config), tmp_path / "old.pt2", tmp_path / "new.pt2")
    plan, outcome, _, _, _ = _in_process(config, ("old.pt2", "new.pt2"))
    on_units = comparison(plan, outcome, (0, 0))
    _same_audit(local.old, on_units.old)
    _same_audit(local.new, on_units.new)
    pd.testing.assert_frame_equal(local.table, on_units.table, check_exact=False, rtol=RTOL,
                                  atol=1e-12)
    assert local.overall.keys() == on_units.overall.keys()
    for output in local.overall:
        theirs = dataclasses.asdict(on_units.overall[output])
        for key, value in dataclasses.asdict(local.overall[output]).items():
            if isinstance(value, float):
                assert value == pytest.approx(theirs[key], rel=RTOL), key


def test_a_job_carries_the_plan_not_a_second_description(tmp_path, threads):
    """The workers are given the plan itself (settings, table, method, checks' options), so a
    step added to the plan is what they run."""
    config = _setup(tmp_path, "gradient")
    plan, _, job, _, _ = _in_process(config, ("old.pt2",))
    assert isinstance(job, Job) and job.plan is plan
    assert {name for name in Job.__dataclass_fields__} >= {"plan", "units", "probe"}
    assert not {"settings", "table", "source"} & set(Job.__dataclass_fields__)
