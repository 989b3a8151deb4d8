"""The shared mechanism the checks beyond the ranking use: the spill carries each chunk's inputs,
checks that replay get them back with the final statistics, and the writers render a check's
summary sections and tables generically."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers_checks import LinearScorer, check_result, frame

from sensaudit import AuditSettings, audit_frame
from sensaudit.checks.base import CheckResult
from sensaudit.pipeline.spill import Spill
from sensaudit.reports.json_report import audit_summary
from sensaudit.settings.checks import Expectation, LinearitySettings, RobustnessSettings


@pytest.mark.parametrize("budget", [1 << 30, 0])  # in memory; in a temporary Arrow file
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_spill_gives_back_each_chunks_inputs(budget, dtype):
    spill = Spill(memory_budget=budget)
    chunks = [torch.randn(n, 4, dtype=dtype) for n in (5, 3, 7)]
    start = 1
    for x in chunks:
        rows = torch.arange(start, start + len(x)).numpy()
        spill.append(rows, rows, None, [(x[:, :1], x[:, None, :])], x=x)
        start += len(x)
    back = list(spill)
    spill.close()
    assert [c.x.dtype for c in back] == [dtype] * 3
    for chunk, x in zip(back, chunks, strict=True):
        assert torch.equal(chunk.x, x)


def test_replayed_checks_do_not_depend_on_the_chunk_size():
    data = frame(rows=50)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 1)).double()
    settings = AuditSettings(robustness=RobustnessSettings(epsilon=0.2, steps=4),
                             linearity=LinearitySettings(),
                             expect=(Expectation("a", "increasing", 0.5),))
    small = audit_frame(model, data, settings=settings, chunk_rows=7)
    whole = audit_frame(model, data, settings=settings, chunk_rows=1000)
    for name in ("robustness", "linearity", "monotonicity"):
        a, b = check_result(small, name), check_result(whole, name)
        for table in a.tables:
            pd.testing.assert_frame_equal(a.tables[table], b.tables[table], check_exact=False,
                                          rtol=1e-9, atol=1e-12)
        assert a.notes == b.notes and a.findings == b.findings


def test_a_checks_summary_section_cannot_replace_a_core_key():
    result = audit_frame(LinearScorer([1.0, 2.0, 3.0]), frame())
    result.checks.append(CheckResult("bad", summary={"passed": True}))
    with pytest.raises(ValueError, match="check bad writes summary.json key 'passed'"):
        audit_summary(result)
