"""report.examples as one object (sensaudit.pipeline.example_rows.ExampleRows): which rows the
per-row file is given and how, for an engine that keeps rows and for one that streams them; and
no engine plumbing (example sinks, row limits) in the library's public signatures."""

from __future__ import annotations

import inspect

import pandas as pd
import pyarrow as pa
import pytest

import sensaudit
import sensaudit.api as api
from sensaudit.pipeline.example_rows import ExampleRows
from sensaudit.results.audit_result import AuditResult


def _rows(ids: list[int]) -> pa.Table:
    return pa.table({"id": ids, "output": ["score"] * len(ids)})


@pytest.mark.parametrize("name", ["audit", "run_audit", "audit_frame", "compare_models",
                                  "run_compare"])
def test_public_entry_points_take_no_engine_plumbing(name):
    parameters = inspect.signature(getattr(api, name)).parameters
    plumbing = [p for p in parameters if "sink" in p or "spill" in p or "all_or_none" in p]
    assert plumbing == []
    assert getattr(sensaudit, name, getattr(api, name)) is getattr(api, name)


def test_each_choice_streams_what_it_says():
    written: list[pa.Table] = []
    assert ExampleRows(written.append, "top").sink() is None
    every = ExampleRows(written.append, "all")
    assert every.sink() == written.append and every.limit is None and not every.all_or_none
    first = ExampleRows(written.append, 3)
    sink = first.sink()
    assert sink is not None and first.limit == 3 and not first.all_or_none
    sink(_rows([1, 2]))
    sink(_rows([3, 4]))
    sink(_rows([5]))
    assert [t.column("id").to_pylist() for t in written] == [[1, 2], [3]]
    auto = ExampleRows(written.append, "auto")
    assert auto.all_or_none and auto.limit == auto.auto_limit


def test_a_streaming_engine_decides_up_front_or_holds_until_the_count_is_known():
    written: list[pa.Table] = []
    auto = ExampleRows(written.append, "auto")
    auto.auto_limit = 4
    known_small = auto.streaming(4)
    assert known_small.sink == written.append and known_small.done()
    known_large = auto.streaming(5)
    assert known_large.sink is None and not known_large.done()
    unknown = auto.streaming(None)
    assert unknown.sink is not None
    unknown.sink(_rows([1, 2, 3]))
    assert written == [] and unknown.done() and len(written) == 1
    written.clear()
    over = auto.streaming(None)
    assert over.sink is not None
    over.sink(_rows([1, 2, 3]))
    over.sink(_rows([4, 5]))
    assert not over.done() and written == []
    # Not all-or-none: every wanted row streams as it comes, whatever the count.
    assert ExampleRows(written.append, "all").streaming(10**9).done()
    assert ExampleRows(written.append, "top").streaming(None).sink is None


def _result(*, streamed: bool) -> AuditResult:
    return AuditResult(table=pd.DataFrame({"mean_gradient": []}), checks=[], examples=[],
                       features=["a"], outputs=["score"], rows=7, rows_dropped=0,
                       nonfinite_rows=0, nonfinite_ids=[], nonfinite_allowed=False,
                       model_path="m", model_format="pt2", data_path="d", proxies=[],
                       mean_scores={}, notes=["n"], examples_streamed=streamed)


def test_finish_writes_the_listed_rows_when_not_every_row_streamed(monkeypatch):
    written: list[object] = []
    monkeypatch.setattr("sensaudit.pipeline.example_rows.records_table",
                        lambda records, **kw: ("listed", tuple(records), kw["per_unit"]))
    finished = ExampleRows(written.append, "auto").finish(_result(streamed=False),
                                                          with_label=False)
    assert written == [("listed", (), True)]
    assert finished.notes[0] == "n" and "more than report.examples: auto" in finished.notes[1]
    written.clear()
    streamed = _result(streamed=True)
    assert ExampleRows(written.append, "all").finish(streamed, with_label=False) is streamed
    assert written == []
    ExampleRows(written.append, "top").finish(streamed, with_label=False)
    assert written == [("listed", (), True)]
