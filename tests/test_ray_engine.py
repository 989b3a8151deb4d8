"""The Ray engine (``engine: ray``) gives the local engine's answer.

One local Ray instance (2 CPUs) serves the module. On the sample audit, on a planted proxy and
on a partitioned dataset (a folder of uneven Parquet files, and a glob of them), the Ray
engine's sensitivity.csv, summary.json, the checks' tables, examples.csv and comparison.csv
equal the local engine's to floating-point rounding: both engines run the same code on the same
rows, numbered the same way, and every partial result merges exactly. The config's engine keys
are checked like every other key, and without Ray ``engine: ray`` says how to install it.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import replace
from pathlib import Path

import helpers_crafted as crafted
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from audit_setup import write_assets, write_config
from helpers_bad import cli, cli_error, payload_bytes
from models import MLP, save_exported

from sensaudit import ConfigError, load_config, parse_config
from sensaudit.api import run_audit, run_compare
from sensaudit.cli.overrides import with_overrides
from sensaudit.config.ray import RaySettings
from sensaudit.pipeline.example_rows import HeldRows

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sensaudit" / "sample"
FORMATS = ["csv", "json", "markdown"]
RTOL = 1e-9
# What the engines may differ in: the report.md note saying where it ran.
ENGINE_NOTE = "Computed on Ray"


@pytest.fixture(scope="module")
def ray_up():
    """One small local Ray instance for every test that runs the engine."""
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need Ray "
                                            "(pip install 'sensaudit[ray]')")
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it; later tests check it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    signal.signal(signal.SIGTERM, handler)
    yield ray
    ray.shutdown()


def _audit(config: Path, out: Path, engine: str, *, data: Path | None = None,
           progress: list | None = None, **ray: object):
    cfg = with_overrides(load_config(config), report_dir=out, formats=FORMATS, engine=engine,
                         data_path=data)
    if ray:
        cfg = replace(cfg, ray=RaySettings(**ray))  # type: ignore[arg-type]
    result, _ = run_audit(cfg, progress=None if progress is None
                          else lambda *update: progress.append(update))
    return result


def _same_csv(a: Path, b: Path, sort: list[str] | None = None) -> None:
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right) > 0
    if sort:
        left = left.sort_values(sort, kind="stable").reset_index(drop=True)
        right = right.sort_values(sort, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=RTOL, atol=1e-12)


def _same_json(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _same_reports(local: Path, on_ray: Path, tables: tuple[str, ...] = ()) -> None:
    """sensitivity.csv, summary.json, examples.csv (same rows) and the checks' tables."""
    _same_csv(local / "sensitivity.csv", on_ray / "sensitivity.csv")
    _same_json(json.loads((local / "summary.json").read_text()),
               json.loads((on_ray / "summary.json").read_text()))
    _same_csv(local / "examples.csv", on_ray / "examples.csv")
    for name in tables:
        _same_csv(local / name, on_ray / name)
    assert ENGINE_NOTE in (on_ray / "report.md").read_text()
    assert ENGINE_NOTE not in (local / "report.md").read_text()


# --- the sample audit and compare ----------------------------------------------------------------


@pytest.mark.slow
def test_sample_audit_matches_local(ray_up, tmp_path):
    """The sample's configs/scorer_v2.yaml: proxies, misscored rows, expect (replayed), robustness
    (replayed), suspects; one CSV file is one work unit."""
    config = SAMPLE / "configs" / "scorer_v2.yaml"
    local = _audit(config, tmp_path / "local", "local")
    on_ray = _audit(config, tmp_path / "ray", "ray", workers=2)
    assert local.passed and on_ray.passed
    _same_reports(tmp_path / "local", tmp_path / "ray",
                  ("robustness.csv", "monotonicity.csv", "suspects.csv"))


@pytest.mark.slow
def test_auto_examples_beyond_the_limit_match_local(ray_up, tmp_path, monkeypatch):
    """report.examples: auto over more rows than it writes one by one: on both engines the
    per-row file holds the rows report.md lists (the sample is a CSV, whose row count Ray
    learns only as the rows come)."""
    import sensaudit.pipeline.example_rows as example_rows

    monkeypatch.setattr(example_rows, "AUTO_EXAMPLE_ROWS", 1_000)  # the sample has 1,500 rows
    config = SAMPLE / "configs" / "scorer_v2.yaml"
    local = _audit(config, tmp_path / "local", "local")
    on_ray = _audit(config, tmp_path / "ray", "ray", workers=2)
    assert not local.examples_streamed and not on_ray.examples_streamed
    _same_reports(tmp_path / "local", tmp_path / "ray")
    assert len(pd.read_csv(tmp_path / "ray" / "examples.csv")) < 1_000


def test_held_rows_are_written_only_within_the_limit():
    def rows(ids: list[int], outputs: int = 1) -> pa.Table:
        return pa.table({"id": [i for i in ids for _ in range(outputs)],
                         "output": [f"o{k}" for _ in ids for k in range(outputs)]})

    written: list[pa.Table] = []
    held = HeldRows(written.append, limit=5)
    held.take(rows([1, 2, 3]))
    held.take(rows([4, 5]))
    assert written == [] and held.release() and len(written) == 2
    written.clear()
    held = HeldRows(written.append, limit=4)
    held.take(rows([1, 2, 3]))
    held.take(rows([4, 5]))
    assert not held.release() and written == []
    held = HeldRows(written.append, limit=5)  # the limit counts data rows
    held.take(rows([1, 2, 3, 4, 5], outputs=3))
    assert held.release() and written[0].num_rows == 15


@pytest.mark.slow
def test_sample_compare_matches_local(ray_up, tmp_path):
    """compare v1 -> v2: both models in the same actors; the paired bootstrap's intervals and
    the per-row agreement merge to the local figures."""
    cfg = with_overrides(load_config(SAMPLE / "configs" / "scorer_v2.yaml"), formats=FORMATS)
    old, new = (SAMPLE / "sample_data" / f"scorer_v{v}.pt2" for v in (1, 2))
    results = {}
    for engine in ("local", "ray"):
        results[engine], _ = run_compare(replace(cfg, engine=engine), old, new,
                                         out_dir=tmp_path / engine)
    _same_csv(tmp_path / "local" / "comparison.csv", tmp_path / "ray" / "comparison.csv")
    _same_json(json.loads((tmp_path / "local" / "comparison.json").read_text()),
               json.loads((tmp_path / "ray" / "comparison.json").read_text()))
    assert results["local"].passed == results["ray"].passed


@pytest.mark.slow
def test_compare_of_models_with_other_inputs_matches_local(ray_up, tmp_path):
    """compare across a retrain that dropped a column (issue 20, defect 6): the Ray workers
    load each model to take its own columns of the union, as the local engine does."""
    def save(path: Path, names: list[str], seed: int) -> Path:
        torch.manual_seed(seed)
        model = MLP(n_features=len(names), n_outputs=1).double().eval()
        program = torch.export.export(model, (torch.ones(4, len(names), dtype=torch.float64),),
                                      dynamic_shapes=({0: torch.export.Dim("rows")},))
        torch.export.save(program, str(path),
                          extra_files={"sensaudit.json": json.dumps({"features": names})})
        return path

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(400, 4)), columns=["a", "b", "c", "leak"])
    frame.insert(0, "id", range(400))
    frame.to_csv(tmp_path / "data.csv", index=False)
    old = save(tmp_path / "old.pt2", ["a", "b", "c", "leak"], 0)
    new = save(tmp_path / "new.pt2", ["c", "a", "b"], 1)
    cfg = parse_config({"data": {"path": "data.csv", "id": "id", "chunk_rows": 64},
                        "audit": {"proxies": [{"feature": "leak", "max_share": 0.2}]},
                        "compare": {"bootstrap_samples": 50},
                        "report": {"formats": FORMATS}}, source=tmp_path / "cfg.yaml",
                       base_dir=tmp_path)
    for engine in ("local", "ray"):
        run_compare(replace(cfg, engine=engine), old, new, out_dir=tmp_path / engine)
    _same_csv(tmp_path / "local" / "comparison.csv", tmp_path / "ray" / "comparison.csv")
    table = pd.read_csv(tmp_path / "ray" / "comparison.csv").set_index("feature")
    assert table.loc["leak", "status"] == "removed"


# --- a planted proxy -----------------------------------------------------------------------------


@pytest.mark.slow
def test_planted_proxy_is_flagged_on_both_engines(ray_up, tmp_path):
    """y = 0.01 length + clarity + 0.5 noise: length holds ~40% of the sensitivity, over its
    max_share of 0.15 (tests/audit_setup.py); both engines flag it, exit 1 from the CLI."""
    assets = write_assets(tmp_path / "assets", rows=400)
    config = write_config(tmp_path / "audit.yaml", assets,
                          report=f"report:\n  formats: [csv, json, markdown]\n"
                                 f"  dir: {tmp_path / 'local'}\n")
    done = cli("run", str(config), "-q")
    assert done.exit_code == 1, done.stdout
    on_ray = cli("run", str(config), "-q", "--engine", "ray", "--out", str(tmp_path / "ray"))
    assert on_ray.exit_code == 1, on_ray.stdout + on_ray.stderr
    assert "FAILED length" in on_ray.stdout
    _same_reports(tmp_path / "local", tmp_path / "ray")
    flagged = pd.read_csv(tmp_path / "ray" / "sensitivity.csv").set_index("feature")["flagged"]
    assert flagged.to_dict() == {"clarity": False, "length": True, "noise": False}


class _SteppedLength(torch.nn.Module):
    """clarity + 0.5 noise + 100 x (length > 300): the gradient cannot see length."""

    def forward(self, x):
        return x[:, 1] + 0.5 * x[:, 2] + (x[:, 0] > 300.0).to(x.dtype) * 100


@pytest.mark.slow
def test_a_blind_proxy_cannot_pass_on_either_engine(ray_up, tmp_path):
    """The proxy probe runs on the driver with the rows the workers sampled: the same verdict
    and figures as the local engine (sensaudit/checks/proxy_probe.py)."""
    assets = write_assets(tmp_path / "assets", rows=400)
    save_exported(_SteppedLength(), assets / "stepped.pt2", n_features=3, dtype=torch.float64)
    config = write_config(tmp_path / "audit.yaml", assets, model="stepped.pt2",
                          report=f"report:\n  formats: [csv, json, markdown]\n"
                                 f"  dir: {tmp_path / 'local'}\n")
    done = cli("run", str(config), "-q")
    assert done.exit_code == 1 and "cannot judge" in done.stdout, done.stdout
    on_ray = cli("run", str(config), "-q", "--engine", "ray", "--out", str(tmp_path / "ray"))
    assert on_ray.exit_code == 1, on_ray.stdout + on_ray.stderr
    assert "FAILED length" in on_ray.stdout and "cannot judge" in on_ray.stdout
    _same_reports(tmp_path / "local", tmp_path / "ray")


# --- a partitioned dataset -----------------------------------------------------------------------

PART_ROWS = (260, 45, 0, 300)  # uneven files, one of them empty
DROPPED = (7, 280, 500)  # row positions with a NaN: rows 8, 281 and 501 are dropped
PART_NAMES = ("day=1/part-0.parquet", "day=2/part-1.parquet", "part-2.parquet",
              "part-3.parquet")  # sorted: the order rows are numbered in


def _partitioned(folder: Path) -> tuple[Path, Path]:
    """The same rows as one Parquet file and as a folder of four (row groups of 32 to 100
    rows), with rows to drop (NaN) in three of them, and files the reader must skip."""
    rng = np.random.default_rng(11)
    rows = sum(PART_ROWS)
    frame = pd.DataFrame({f"f{j}": rng.normal(j, 1.0 + j, rows) for j in range(5)})
    frame["label"] = (frame["f0"] + 0.3 * rng.normal(size=rows) > 0).astype(float)
    frame.loc[list(DROPPED), "f2"] = np.nan
    folder.mkdir()
    whole = folder / "whole.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), whole,
                   row_group_size=128)
    parts = folder / "parts"
    start = 0
    for name, count, groups in zip(PART_NAMES, PART_ROWS, (64, 32, 32, 100), strict=True):
        (parts / name).parent.mkdir(parents=True, exist_ok=True)
        piece = frame.iloc[start : start + count]
        pq.write_table(pa.Table.from_pandas(piece, preserve_index=False), parts / name,
                       row_group_size=groups)
        start += count
    (parts / "_SUCCESS").write_text("")
    (parts / ".part-0.parquet.crc").write_text("not parquet")
    return whole, parts


def _partitioned_config(folder: Path, method: str) -> Path:
    save_exported(MLP(n_features=5, n_outputs=1).double(), folder / "mlp.pt2", n_features=5,
                  dtype=torch.float64)
    config = folder / "audit.yaml"
    config.write_text(f"""\
model:
  path: mlp.pt2
data:
  path: whole.parquet
  label: label
  on_missing: drop
  chunk_rows: 70
audit:
  method: {method}
  proxies:
    - {{feature: f0, max_share: 0.1}}
  expect:
    - {{feature: f1, direction: increasing, max_violation_rate: 0.5}}
  robustness: {{epsilon: 0.1, steps: 3, bounds: observed}}
""", encoding="utf-8")
    return config


@pytest.mark.slow
@pytest.mark.parametrize("method,pattern,workers", [
    ("gradient", None, 2),
    ("integrated_gradients", "parts/**/*.parquet", 1),
])
def test_partitioned_dataset_matches_one_file(ray_up, tmp_path, method, pattern, workers):
    """One file audited locally == the folder (or a glob) audited locally == on Ray, split
    into units of row groups (rows_per_batch 100: 8 units, over 2 workers or 1). Rows are numbered
    across the files, so the examples' ids (row numbers) and every tie-break agree;
    integrated gradients needs the features' statistics first (the pre-pass). The driver
    reports each pass's progress as the local engine does: rows done of the total."""
    whole, parts = _partitioned(tmp_path / "data")
    config = _partitioned_config(tmp_path / "data", method)
    data = tmp_path / "data" / pattern if pattern else parts
    single = _audit(config, tmp_path / "single", "local")
    folder = _audit(config, tmp_path / "folder", "local", data=data)
    progress: list = []
    on_ray = _audit(config, tmp_path / "ray", "ray", data=data, progress=progress,
                    workers=workers, rows_per_batch=100)
    assert single.rows == folder.rows == on_ray.rows == sum(PART_ROWS) - 3
    assert single.rows_dropped == on_ray.rows_dropped == 3
    assert not single.passed and not on_ray.passed  # f0 drives the MLP beyond 10%
    tables = ("robustness.csv", "monotonicity.csv")
    _same_csv(tmp_path / "single" / "sensitivity.csv", tmp_path / "folder" / "sensitivity.csv")
    _same_csv(tmp_path / "single" / "examples.csv", tmp_path / "folder" / "examples.csv")
    summaries = [json.loads((tmp_path / name / "summary.json").read_text())
                 for name in ("single", "folder")]
    summaries[1]["data"] = summaries[0]["data"]  # the path differs, not what was read
    _same_json(*summaries)
    _same_reports(tmp_path / "folder", tmp_path / "ray", tables)
    ids = pd.read_csv(tmp_path / "ray" / "examples.csv")["id"]
    assert ids.tolist() == [r for r in range(1, sum(PART_ROWS) + 1) if r - 1 not in DROPPED]
    note = f"8 work unit(s) over {workers} worker(s)"
    assert note in (tmp_path / "ray" / "report.md").read_text()
    stages = {stage: [] for stage in ("statistics", "audit", "replay")}
    for stage, done, total in progress:
        assert total == sum(PART_ROWS)
        stages[stage].append(done)
    for updates in stages.values():  # one update per unit, rising to every row read
        assert len(updates) == 8 and updates == sorted(updates) and updates[-1] == total


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("section,message", [
    ("engine: spark", "engine must be one of local, ray (got 'spark', a str)"),
    ("ray: {workerz: 2}", "unknown key 'workerz' in ray; did you mean 'workers'? (allowed: "
                          "address, workers, cpus_per_worker, gpus_per_worker, rows_per_batch)"),
    ("ray: {workers: 0}", "ray.workers must be an integer >= 1 (got 0, an int)"),
    ("ray: {cpus_per_worker: 0}", "ray.cpus_per_worker must be a finite number > 0 (got 0, an "
                                  "int)"),
    ("ray: {gpus_per_worker: -1}", "ray.gpus_per_worker must be a number >= 0 (got -1, an int)"),
    ("ray: {rows_per_batch: 1.5}", "ray.rows_per_batch must be an integer >= 1 (got 1.5, a "
                                   "float)"),
    ("ray: {address: ''}", "ray.address must be a non-empty string (got '', a str)"),
    ("ray: [1]", "ray must be a mapping (got [1], a list)"),
])
def test_engine_config_errors(tmp_path, section, message):
    path = tmp_path / "audit.yaml"
    path.write_text(f"data:\n  path: d.csv\n{section}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_engine_settings_parse(tmp_path):
    cfg = parse_config({"data": {"path": "d.csv"}, "engine": "ray",
                        "ray": {"address": "auto", "workers": 8, "cpus_per_worker": 2,
                                "gpus_per_worker": 0.5, "rows_per_batch": 1000}})
    assert cfg.engine == "ray"
    assert cfg.ray == RaySettings(address="auto", workers=8, cpus_per_worker=2.0,
                                  gpus_per_worker=0.5, rows_per_batch=1000)
    assert parse_config({"data": {"path": "d.csv"}}).engine == "local"


def test_engine_flag_is_checked(tmp_path):
    assets = write_assets(tmp_path / "assets")
    config = write_config(tmp_path / "audit.yaml", assets)
    assert cli_error("run", str(config), "--engine", "spark") == (
        "--engine must be one of local, ray (got 'spark', a str)")


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch):
    """Ray missing (simulated: its import fails): exit 2, and the message names the extra."""
    assets = write_assets(tmp_path / "assets")
    config = write_config(tmp_path / "audit.yaml", assets)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    message = cli_error("run", str(config), "--engine", "ray", "--out", str(tmp_path / "out"))
    assert message == (f"{config}: engine 'ray' needs Ray, which is not installed here; "
                       "install it with: pip install 'sensaudit[ray]'")
    assert not (tmp_path / "out" / "summary.json").exists()
    message = cli_error("compare", str(assets / "scorer.pt2"), str(assets / "scorer.pt2"),
                        "--config", str(config), "--engine", "ray", "--out",
                        str(tmp_path / "cmp"))
    assert message.endswith("pip install 'sensaudit[ray]'")


@pytest.mark.slow
def test_a_worker_meets_bad_data_as_the_local_engine_does(ray_up, tmp_path):
    """Text in the last file's feature column: the worker's DataError is the driver's, exit
    2, the same message as the local engine's."""
    whole, parts = _partitioned(tmp_path / "data")
    config = _partitioned_config(tmp_path / "data", "gradient")
    config.write_text(config.read_text() + "ray:\n  workers: 1\n")
    bad = pq.read_table(parts / PART_NAMES[3]).to_pandas()
    bad["f3"] = bad["f3"].astype(str)
    bad.loc[10, "f3"] = "n/a?"
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), parts / PART_NAMES[3])
    local = cli_error("run", str(config), "--data", str(parts), "--out", str(tmp_path / "a"))
    on_ray = cli_error("run", str(config), "--data", str(parts), "--out", str(tmp_path / "b"),
                       "--engine", "ray")
    assert on_ray == local == (f"{parts}: column 'f3' has text in row {260 + 45 + 11} "
                               "('n/a?'); expected numbers")


@pytest.mark.slow
def test_an_untrusted_pickled_model_never_runs_on_the_ray_engine(ray_up, tmp_path):
    """A pickle whose unpickling runs a payload, audited with engine: ray: refused with the
    local engine's message (exit 2) before any worker starts, and the payload never runs.
    tests/test_bad_inputs.py::test_malicious_pickle_payload_is_real shows the file does run
    its payload when trusted."""
    _partitioned(tmp_path / "data")
    config = _partitioned_config(tmp_path / "data", "gradient")
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "data" / "evil.pt").write_bytes(payload_bytes(marker))
    config.write_text(config.read_text().replace("path: mlp.pt2", "path: evil.pt"))
    local = cli_error("run", str(config), "--out", str(tmp_path / "a"))
    on_ray = cli_error("run", str(config), "--out", str(tmp_path / "b"), "--engine", "ray")
    assert on_ray == local and on_ray.startswith(f"{tmp_path / 'data' / 'evil.pt'}: ")
    assert "refusing to unpickle" in on_ray
    assert not marker.exists()



@pytest.mark.slow
def test_a_torchscript_cpp_custom_class_never_runs_on_the_ray_engine(ray_up, tmp_path):
    """A TorchScript file whose data.pkl holds a C++ custom class object (aten.OpaqueObject,
    which unpickles its state: tests/test_torchscript_safety.py shows the payload running on
    plain torch), audited with engine: ray: refused as on the local engine, exit 2, and the
    payload never runs, in the driver or in a worker."""
    _partitioned(tmp_path / "data")
    config = _partitioned_config(tmp_path / "data", "gradient")
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.opaque_object(tmp_path / "data", marker)
    config.write_text(config.read_text().replace("path: mlp.pt2", f"path: {evil.name}"))
    local = cli_error("run", str(config), "--out", str(tmp_path / "a"))
    on_ray = cli_error("run", str(config), "--out", str(tmp_path / "b"), "--engine", "ray")
    assert on_ray == local and on_ray.startswith(f"{evil}: refusing to load this TorchScript "
                                                 "file: __torch__.torch.classes.aten: ")
    assert not marker.exists()

# --- the scheduler, without Ray ----------------------------------------------------------------


class _Ref:
    def __init__(self, unit: int, value: object):
        self.unit, self.value = unit, value


class _FakeRay:
    """ray.put/wait/get over refs that finish in a random order."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.submitted: list[int] = []
        self.fetched: list[int] = []

    def put(self, value: object) -> object:
        return value

    def wait(self, refs: list, num_returns: int) -> tuple[list, list]:
        pick = refs[int(self.rng.integers(len(refs)))]
        return [pick], [r for r in refs if r is not pick]

    def get(self, ref: _Ref) -> bytes:
        import pickle

        self.fetched.append(ref.unit)
        return pickle.dumps(ref.value)


class _FakeActor:
    def __init__(self, ray: _FakeRay, fail_at: int | None):
        self.ray, self.fail_at = ray, fail_at

    @property
    def audit(self):
        actor = self

        class Call:
            @staticmethod
            def remote(unit: int, plan: object) -> _Ref:
                from sensaudit.engines.ray.job import Failure

                actor.ray.submitted.append(unit)
                value = (Failure(ConfigError(f"unit {unit}")) if unit == actor.fail_at
                         else (unit, plan))
                return _Ref(unit, value)

        return Call()


@pytest.mark.parametrize("seed", range(5))
def test_units_are_handed_on_in_order_whatever_finishes_first(seed):
    from sensaudit.engines.ray.schedule import LOOKAHEAD, run_units

    fake = _FakeRay(seed)
    actors = [_FakeActor(fake, None) for _ in range(3)]
    seen: list = []

    def each(unit: int, result: object) -> None:
        # Never more than the window submitted ahead of what is handed on.
        assert len(fake.submitted) - unit <= LOOKAHEAD * len(actors)
        seen.append((unit, result))

    run_units(fake, actors, "audit", "plan", 40, each)
    assert seen == [(u, (u, "plan")) for u in range(40)]
    assert fake.fetched == list(range(40))  # fetched in turn: one result on the driver at a time


def test_a_failure_is_raised_in_its_turn():
    from sensaudit.engines.ray.schedule import run_units

    fake = _FakeRay(0)
    seen: list[int] = []
    with pytest.raises(ConfigError, match="^unit 3$"):
        run_units(fake, [_FakeActor(fake, 3)], "audit", None, 10,
                  lambda unit, _: seen.append(unit))
    assert seen == [0, 1, 2]


# --- SIGTERM on a Ray run: exit 143, no half-written report -------------------------------------

# The child runs `sensaudit run` with SIGTERM sent at a chosen point: "init" right after
# ray.init, while Ray's own handler (sys.exit(15)) is in place; "get" while the driver waits in
# ray.get, which turns the SystemExit(143) raised there into SystemExit(1).
SIGTERM_CHILD = """
import os, signal, sys, threading
import ray
from sensaudit.cli.app import app
point = sys.argv[1]
real_init, real_get = ray.init, ray.get
def init(*args, **kwargs):
    answer = real_init(*args, **kwargs)
    if point == "init":
        os.kill(os.getpid(), signal.SIGTERM)
    return answer
def get(*args, **kwargs):
    if point == "get":
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return real_get(*args, **kwargs)
ray.init, ray.get = init, get
sys.argv = ["sensaudit", "run", sys.argv[2], "--engine", "ray", "--quiet"]
app()
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["init", "get"])
def test_sigterm_on_a_ray_run_exits_143_and_writes_nothing(tmp_path, point):
    pytest.importorskip("ray", reason="needs Ray")
    import subprocess

    assets = write_assets(tmp_path / "assets", rows=200)
    reports = tmp_path / "reports"
    config = write_config(tmp_path / "audit.yaml", assets,
                          report=f"report:\n  dir: {reports}\n  formats: [json]\n",
                          extra="ray:\n  workers: 1\n")
    reports.mkdir()
    (reports / "summary.json").write_text("previous")
    child = subprocess.run([sys.executable, "-c", SIGTERM_CHILD, point, str(config)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert child.returncode == 128 + signal.SIGTERM, (child.returncode, child.stderr)
    assert "Traceback" not in child.stderr
    assert sorted(p.name for p in reports.iterdir() if not p.name.startswith(".sensaudit")) == [
        "summary.json"]
    assert (reports / "summary.json").read_text() == "previous"
    assert not list(reports.glob(".sensaudit-staging-*"))
