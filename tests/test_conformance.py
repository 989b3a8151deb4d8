"""The conformance suite: every registered method, check and report format, tested by being
registered (as scikit-learn's check_estimator runs every estimator through the same checks).

Its cases come from the registries (``METHODS``, ``CHECKS``, ``WRITERS``), so an extension
added there runs through all of them without a test of its own:

- every method with every check and every format, on a model of each kind the loader takes
  (.pt2 from torch.export, TorchScript, a state_dict + its class), through the CLI: exit 0 or
  1 with every check's results in the reports, never 3 (an internal error);
- the same results for any ``data.chunk_rows``;
- every check that accumulates, merged over random partitions of the rows, finishes as the
  single pass does (the stats accumulators: tests/test_merge.py; the guard below makes sure
  each one has such a test);
- local and Ray give the same reports (slow).

A check registered with an audit key of its own (``config_key``) is switched on by that key,
whose value for this suite is in ``CHECK_KEYS``; a check configured in ``audit.checks`` is
switched on with its defaults (``audit.checks.<name>: {}``), from the registry alone.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import pkgutil
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml
from helpers_bad import cli
from models import SteppedMLP, save_exported
from test_merge_checks import _close, _same
from test_ray_engine import _same_csv, _same_json, ray_up  # noqa: F401 - ray_up: a fixture

import sensaudit
from sensaudit import load_config, parse_config
from sensaudit.api import audit, run_audit
from sensaudit.checks import CHECKS
from sensaudit.checks.base import Check, CheckResult, ModelContext, Ranking, ReplayChunk
from sensaudit.cli.overrides import with_overrides
from sensaudit.config.ray import RaySettings
from sensaudit.core.errors import ConfigError
from sensaudit.methods import METHODS
from sensaudit.methods.base import Attributions
from sensaudit.pipeline.baselines import baseline_vector, reference_of
from sensaudit.reports import WRITERS
from sensaudit.settings.options import declared
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import finite_rows

TESTS = Path(__file__).resolve().parent
ROWS = 48
FEATURES = ["a", "b", "c", "d", "e"]  # d, e: one one-hot group
OUTPUTS = 2

# The audit keys that switch on the checks registered with a key of their own.
CHECK_KEYS = {
    # c: a staircase the gradient misses (SteppedMLP), found by the proxy check's probe on
    # the rows it kept: a merge that lost them would judge c by its gradient alone.
    "proxies": [{"feature": "a", "max_share": 0.9}, {"feature": "c", "max_share": 0.9}],
    "dominance_warning": 0.5,
    "expect": [{"feature": "b", "direction": "increasing", "max_violation_rate": 0.5}],
    "robustness": {"epsilon": 0.1, "steps": 2, "max_shift": 0.5},
    "groups": {"de": {"kind": "one_hot", "columns": ["d", "e"]}},
    "linearity": {},
    "layer_health": {},
    # sex: a numeric protected column that a (tracks it) and no other input follows; region: a
    # text one. Neither is a model input: the reader loads them beside the features.
    "protected": {"columns": ["sex", "region"], "max_association": 0.2, "max_share": 0.05},
}
# Kept small: smoothgrad's copies and integrated_gradients' points multiply every row's work.
# A method gets those of these keys it declares (its Options); other keys keep their defaults.
SMALL_METHOD_KEYS = {"samples": 4, "steps": 4}


def _method_keys(method: str) -> dict:
    options = METHODS[method].Options
    keys = {d.key for d in declared(options)} if options is not None else set()
    return {key: value for key, value in SMALL_METHOD_KEYS.items() if key in keys}


def _model() -> torch.nn.Module:
    """A nonlinear float64 model with two outputs, tanh(U x + c) V' + d, plus a staircase
    in c."""
    return SteppedMLP(n_features=len(FEATURES), hidden=4, n_outputs=OUTPUTS).eval()


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(19)
    level = rng.integers(0, 2, ROWS)
    frame = pd.DataFrame({
        "row_id": [f"r{i:02d}" for i in range(ROWS)],
        "a": rng.normal(0.0, 1.0, ROWS), "b": rng.uniform(-1.0, 1.0, ROWS),
        "c": rng.normal(2.0, 0.5, ROWS), "d": level.astype(float),
        "e": (1 - level).astype(float), "y": rng.integers(0, 2, ROWS).astype(float),
    })
    frame["sex"] = (frame["a"] + rng.normal(0.0, 0.5, ROWS) > 0).astype(float)
    frame["region"] = np.where(rng.random(ROWS) < 0.5, "north", "south")
    return frame


def _options_checks(method: str) -> dict[str, dict]:
    """``audit.checks``: every registered check without a key of its own, with its defaults,
    that this method can run (a check refusing the method is tested apart)."""
    chosen = {}
    for cls in CHECKS:
        if cls.config_key is not None:
            continue
        try:
            cls.from_settings(AuditSettings(method=method, checks={cls.name: {}}))
        except ConfigError:
            continue
        chosen[cls.name] = {}
    return chosen


def _expected_checks(method: str) -> set[str]:
    return {cls.name for cls in CHECKS
            if cls.config_key is not None or cls.name in _options_checks(method)}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """One model in each kind of file, and its data."""
    folder = tmp_path_factory.mktemp("conformance")
    model = _model()
    save_exported(model, folder / "model.pt2", n_features=len(FEATURES), dtype=torch.float64)
    torch.jit.save(torch.jit.script(model), str(folder / "model.ts"))
    torch.save(model.state_dict(), folder / "model.pth")
    _frame().to_csv(folder / "data.csv", index=False)
    return folder


MODEL_KINDS = {
    "pt2": {"path": "model.pt2"},
    "torchscript": {"path": "model.ts"},
    "state_dict": {"path": "model.pth", "class": "models:SteppedMLP",
                   "class_file": str(TESTS / "models.py"),
                   "kwargs": {"n_features": len(FEATURES), "hidden": 4, "n_outputs": OUTPUTS}},
}


def _config(assets: Path, folder: Path, method: str, *, kind: str = "pt2",
            chunk_rows: int = 1000, formats: list[str] | None = None) -> Path:
    """Every registered check switched on, for ``method``, in ``folder``/audit.yaml."""
    unknown = [cls.name for cls in CHECKS
               if cls.config_key is not None and cls.config_key not in CHECK_KEYS]
    assert not unknown, (f"check(s) {unknown} are configured by a key of their own: add a "
                         "small example of it to CHECK_KEYS in tests/test_conformance.py")
    model = {**MODEL_KINDS[kind], "path": str(assets / MODEL_KINDS[kind]["path"])}
    raw = {
        "model": model,
        "data": {"path": str(assets / "data.csv"), "id": "row_id", "label": "y",
                 "features": FEATURES, "chunk_rows": chunk_rows},
        "audit": {"method": method, **_method_keys(method), **CHECK_KEYS,
                  "checks": _options_checks(method)},
        "report": {"dir": str(folder / "reports"), "formats": formats or list(WRITERS)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# --- every method x check x format on every kind of model file, through the CLI -----------------

def _quick_first(*axes: list) -> list:
    """Every combination of the axes' values; all but the first (each axis' first value) slow:
    the quick loop (`-m "not slow"`) runs one, the full suite all."""
    cases = [()]
    for axis in axes:
        cases = [(*case, value) for case in cases for value in axis]
    return [pytest.param(*case, marks=[] if i == 0 else [pytest.mark.slow],
                         id="-".join(getattr(v, "name", str(v)) for v in case))
            for i, case in enumerate(cases)]


def _formats(kind: str) -> list[str]:
    """Every format for the .pt2 model. Charts (formats that need matplotlib) cost most of a
    run and draw the same result whatever file the model came from: the other kinds write the
    formats that draw none."""
    if kind == "pt2":
        return list(WRITERS)
    return [name for name, writer in WRITERS.items() if "matplotlib" not in writer.requires]


@pytest.mark.parametrize("kind,method", _quick_first(list(MODEL_KINDS), list(METHODS)))
def test_every_check_and_format_runs_on_every_model_kind(assets, tmp_path, kind, method):
    config = _config(assets, tmp_path, method, kind=kind, formats=_formats(kind))
    result = cli("run", str(config), "--quiet")
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr[-3000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    reports = tmp_path / "reports"
    summary = json.loads((reports / "summary.json").read_text())
    assert (summary["method"]["name"], summary["rows"]) == (method, ROWS)
    assert summary["passed"] == (result.exit_code == 0)
    # Every format wrote its files, listed in the manifest of the committed report.
    manifest = json.loads((reports / ".sensaudit-manifest.json").read_text())
    assert manifest["reports"]["audit"] == sorted(
        p.name for p in reports.iterdir() if not p.name.startswith("."))
    assert len(manifest["reports"]["audit"]) >= len(_formats(kind))


REFUSED = [(cls, method) for cls in CHECKS for method in METHODS
           if cls.config_key is None and cls.name not in _options_checks(method)]


@pytest.mark.parametrize("cls,method", REFUSED,
                         ids=[f"{cls.name}-{method}" for cls, method in REFUSED])
def test_a_check_a_method_cannot_run_is_refused_with_exit_2(assets, tmp_path, cls, method):
    """A check's options given for a method it cannot serve: one Error line and exit 2."""
    config = _config(assets, tmp_path, method, formats=["json"])
    raw = yaml.safe_load(config.read_text())
    raw["audit"]["checks"][cls.name] = {}
    config.write_text(yaml.safe_dump(raw))
    result = cli("run", str(config), "--quiet")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "reports" / "summary.json").exists()


def test_an_unknown_check_is_named_with_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"path": "data.csv"}, "audit": {"checks": {"suspect": {}}}},
                     source="audit.yaml")
    assert str(err.value) == ("audit.yaml: unknown check 'suspect' in audit.checks; did you "
                              "mean 'suspects'? (registered: "
                              f"{', '.join(cls.name for cls in CHECKS)})")


# --- the same results for any chunk_rows ---------------------------------------------------------


def _same_audit(a, b) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=False, rtol=1e-9, atol=1e-12)
    assert (a.rows, a.nonfinite_rows, a.passed) == (b.rows, b.nonfinite_rows, b.passed)
    assert [c.check for c in a.checks] == [c.check for c in b.checks]
    for mine, theirs in zip(a.checks, b.checks, strict=True):
        _same_check_result(mine, theirs)
    assert [(e.id, e.output, e.reason) for e in a.examples] == [
        (e.id, e.output, e.reason) for e in b.examples]
    _close([e.score for e in a.examples], [e.score for e in b.examples])


# smoothgrad first: its noise is drawn per row, from the row's number, not per chunk.
CHUNK_METHODS = sorted(METHODS, key=lambda name: name != "smoothgrad")


@functools.cache
def _whole(assets: Path, method: str):
    """The audit in one chunk, shared by the chunked audits it is compared with."""
    return audit(load_config(_config(assets, assets / f"whole-{method}", method,
                                     formats=["json"])))


@pytest.mark.parametrize("method,chunk_rows", _quick_first(CHUNK_METHODS, [7, 1]))
def test_results_do_not_depend_on_chunk_rows(assets, tmp_path, method, chunk_rows):
    whole = _whole(assets, method)
    assert {c.check for c in whole.checks} >= _expected_checks(method)
    chunked = audit(load_config(_config(assets, tmp_path, method, chunk_rows=chunk_rows,
                                        formats=["json"])))
    _same_audit(whole, chunked)


# --- every check that accumulates: merged partitions finish as one pass ------------------------


@functools.cache
def _inputs(method: str):
    """The settings with every check on, the model, and what an audit's chunks hand checks:
    rows, inputs, labels, attributions, and the ranked table from a whole audit."""
    frame = _frame()
    settings = parse_config(_config_text(method)).audit
    model = _model()
    x = torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float64)
    rows = np.arange(1, ROWS + 1, dtype=np.int64)
    chosen = METHODS[method].from_settings(settings)
    reference = reference_of(x)
    chosen.prepare(baseline_vector(settings.baseline, reference, FEATURES), reference.std)
    attributions = chosen.attribute_rows(model, x, rows)
    result = sensaudit.audit_frame(model, frame, features=FEATURES, id="row_id", label="y",
                                   settings=settings)
    return dict(settings=settings, model=model, x=x, rows=rows,
                ids=pa.array(frame["row_id"]), labels=frame["y"].to_numpy(),
                columns={"sex": frame["sex"].to_numpy(),
                         "region": frame["region"].to_numpy(dtype=object)},
                attributions=attributions, table=result.table, outputs=result.outputs,
                per_unit=chosen.per_unit)


def _config_text(method: str) -> dict:
    return {"data": {"path": "data.csv", "id": "row_id", "label": "y", "features": FEATURES},
            "audit": {"method": method, **_method_keys(method), **CHECK_KEYS,
                      "checks": _options_checks(method)}}


def _feed(check: Check, d: dict, index: np.ndarray) -> None:
    t = torch.from_numpy(index)
    a = d["attributions"]
    part = Attributions(scores=a.scores[t], values=a.values[t],
                        baseline_scores=a.baseline_scores)
    check.update(d["rows"][index], d["x"][t], part, d["labels"][index])
    check.update_columns(d["rows"][index], d["x"][t], part,
                         {name: column[index] for name, column in d["columns"].items()})
    if type(check).replays:
        x = d["x"]
        context = ModelContext(model=d["model"], module=d["model"], output_index=None,
                               std=x.std(0), minimum=x.amin(0), maximum=x.amax(0),
                               features=FEATURES, outputs=d["outputs"], path="<model>",
                               table=d["table"])
        check.replay(ReplayChunk(rows=d["rows"][index],
                                 ids=d["ids"].take(pa.array(index, type=pa.int64())),
                                 x=x[t], scores=part.scores, values=part.values,
                                 finite=finite_rows(part.scores, part.values)), context)


ACCUMULATING = [cls for cls in CHECKS if cls.accumulates]


# gradient (per unit) and integrated_gradients (in score units, complete: every check runs).
MERGE_CASES = [pytest.param(cls, k, seed, method, id=f"{cls.name}-{k}-{method}",
                            marks=[pytest.mark.slow] if (k, method) != (5, "gradient") else [])
               for method in ("gradient", "integrated_gradients") for k, seed in ((5, 1), (2, 0))
               for cls in ACCUMULATING
               if cls.config_key is not None or cls.name in _options_checks(method)]


@pytest.mark.parametrize("cls,k,seed,method", MERGE_CASES)
def test_every_accumulating_check_merges_as_one_pass(cls, k, seed, method):
    d = _inputs(method)
    single, merged = cls.from_settings(d["settings"]), cls.from_settings(d["settings"])
    assert single is not None, f"{cls.name} is not switched on by this suite's config"
    _feed(single, d, np.arange(ROWS))
    owner = np.random.default_rng(seed).integers(0, k, size=ROWS)  # not contiguous runs
    for part in range(k):
        partial = cls.from_settings(d["settings"])
        _feed(partial, d, np.flatnonzero(owner == part))
        merged.merge(partial)
    ranking = Ranking(table=d["table"], features=FEATURES, outputs=d["outputs"],
                      per_unit=d["per_unit"], model=d["model"], device=torch.device("cpu"),
                      dtype=torch.float64)
    _same_check_result(single.finish(ranking), merged.finish(ranking))


def _same_check_result(a: CheckResult, b: CheckResult) -> None:
    """Everything a check reports, numbers to float rounding."""
    _same(a, b)  # gates' verdicts, findings, notes, tables
    _close([vars(g) for g in a.gates], [vars(g) for g in b.gates])
    _close([vars(w) for w in a.warnings], [vars(w) for w in b.warnings])
    _close(a.summary, b.summary)
    assert a.sections == b.sections
    assert a.report_tables.keys() == b.report_tables.keys()
    for name in a.report_tables:
        pd.testing.assert_frame_equal(a.report_tables[name], b.report_tables[name],
                                      check_exact=False, rtol=1e-9)


def _accumulators() -> list[type]:
    """Every public class in sensaudit that defines merge() and is not a check (checks: the
    test above). Private ones are parts of a public one, merged through it."""
    found = []
    for info in pkgutil.walk_packages(sensaudit.__path__, "sensaudit."):
        if ".engines.ray" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == module.__name__ and "merge" in vars(cls)
                    and not name.startswith("_") and not issubclass(cls, Check)):
                found.append(cls)
    return found


def _merge_tests() -> str:
    """The source of every test file with a test function that merges partials (its own, or
    through test_merge's _single_and_merged), helpers included."""
    sources = []
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                body = ast.get_source_segment(text, node) or ""
                if ".merge(" in body or "_single_and_merged(" in body:
                    sources.append(text)
                    break
    return "\n".join(sources)


def test_every_accumulator_has_a_merge_test():
    """The audit's own accumulators (stats, row samples, example rows, the suspects'
    evidence) each have a test that merges partials over partitions of the rows."""
    accumulators = _accumulators()
    assert len(accumulators) >= 10  # the walk found them
    tests = _merge_tests()
    untested = [f"{cls.__module__}.{cls.__qualname__}" for cls in accumulators
                if not re.search(rf"\b{cls.__name__}\b", tests)]
    assert not untested, (f"{untested} define merge() but no test merges their partials: add "
                          "one (tests/test_merge.py's _single_and_merged splits the rows into "
                          "random partitions)")


# --- local and Ray give the same reports ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_ray_matches_local(ray_up, assets, tmp_path, method):  # noqa: F811 - the fixture
    config = load_config(_config(assets, tmp_path, method, chunk_rows=10,
                                 formats=["csv", "json", "markdown"]))
    run_audit(with_overrides(config, report_dir=tmp_path / "local"))
    on_ray = replace(with_overrides(config, report_dir=tmp_path / "ray", engine="ray"),
                     ray=RaySettings(workers=2, rows_per_batch=10))
    run_audit(on_ray)
    local, ray = tmp_path / "local", tmp_path / "ray"
    tables = sorted(p.name for p in local.glob("*.csv"))
    assert tables == sorted(p.name for p in ray.glob("*.csv"))
    for name in tables:
        _same_csv(local / name, ray / name)
    _same_json(json.loads((local / "summary.json").read_text()),
               json.loads((ray / "summary.json").read_text()))
