"""The report's example rows chosen during the read pass (sensaudit.pipeline.example_candidates) are
the rows a replay of every row with the final baseline chooses: the same records, the same charts'
sample, under any chunking; and when the choice cannot be certified, the audit recomputes it
over the data rather than guess."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

import sensaudit.pipeline.example_candidates as candidates_module
import sensaudit.pipeline.example_rows as example_rows_module
import sensaudit.pipeline.replay as replay_module
from sensaudit.engines.local import audit_local
from sensaudit.inputs import tables
from sensaudit.inputs.models import LoadedModel
from sensaudit.pipeline.example_candidates import ExampleCandidates
from sensaudit.pipeline.example_rows import ExampleRows
from sensaudit.pipeline.examples import ExampleDrivers
from sensaudit.pipeline.plan import audit_plan
from sensaudit.settings.sections import AuditSettings, DataConfig, ProxyLimit


class _Scorer(torch.nn.Module):
    """A small fixed MLP, float64: score = w2 . tanh(W1 x + b1)."""

    def __init__(self, n: int, outputs: int = 1):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.w1 = torch.nn.Parameter(torch.randn(n, 12, generator=generator,
                                                 dtype=torch.float64))
        self.b1 = torch.nn.Parameter(torch.randn(12, generator=generator, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(12, outputs, generator=generator,
                                                 dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2


def _frame(rows: int, *, discrete: bool = False, seed: int = 0) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    values = (generator.integers(0, 3, (rows, 5)).astype(float) if discrete
              else generator.standard_normal((rows, 5)) * [1, 2, 0.5, 3, 1] + [0, 5, -1, 2, 0])
    frame = pd.DataFrame(values, columns=[f"f{j}" for j in range(5)])
    frame["label"] = generator.standard_normal(rows)
    frame["id"] = [f"row-{i}" for i in range(rows)]
    return frame


def _audit(frame: pd.DataFrame, settings: AuditSettings, *, chunk_rows: int,
           replay_every_row: bool, outputs: int = 1, dtype: torch.dtype = torch.float64):
    """Audit through the pipeline; ``replay_every_row`` forces the spill-and-replay path
    (a per-row file of every row), the reference the candidates must match."""
    cfg = DataConfig(path=Path("<frame>"), features=tuple(f"f{j}" for j in range(5)),
                     label="label", id="id", chunk_rows=chunk_rows)
    table = tables.frame_table(frame, cfg)
    loaded = LoadedModel(module=_Scorer(5, outputs).to(dtype).eval(), path=Path("<model>"),
                         format="in-memory", device=torch.device("cpu"), dtype=dtype)
    examples = ExampleRows(lambda rows: None, "all") if replay_every_row else None
    outcome = audit_local(
        [loaded], lambda: tables.iter_frame_chunks(frame, table, cfg, dtype),
        audit_plan(settings, table, "<test>", model_cfg=None), progress=lambda *a: None,
        examples=examples)
    return outcome.results[0]


def _same_examples(a, b) -> None:
    assert [(e.reason, e.output, e.id, e.rank_value) for e in a.examples] == \
        [(e.reason, e.output, e.id, e.rank_value) for e in b.examples]
    assert a.examples == b.examples
    np.testing.assert_array_equal(a.contributions.rows, b.contributions.rows)
    np.testing.assert_array_equal(a.contributions.values, b.contributions.values)
    assert a.contributions.seen == b.contributions.seen
    pd.testing.assert_frame_equal(a.table, b.table)


@pytest.mark.parametrize("settings", [
    AuditSettings(examples_in_report=5),
    AuditSettings(examples_in_report=3, proxies=(ProxyLimit("f3", max_share=0.9),)),
    AuditSettings(examples_in_report=4, baseline="median"),
    AuditSettings(examples_in_report=4, baseline="zero"),
    AuditSettings(examples_in_report=4, method="integrated_gradients",
                  method_options={"steps": 8}),
], ids=["mean", "proxies", "median", "zero", "integrated_gradients"])
def test_candidates_choose_the_rows_a_full_replay_chooses(settings, monkeypatch):
    recomputed = []
    real = replay_module.recomputed
    monkeypatch.setattr(replay_module, "recomputed",
                        lambda *a: recomputed.append(1) or real(*a))
    frame = _frame(3_000)
    for chunk_rows in (3_000, 257):  # one chunk: the provisional baseline is the final one
        reference = _audit(frame, settings, chunk_rows=chunk_rows, replay_every_row=True)
        chosen = _audit(frame, settings, chunk_rows=chunk_rows, replay_every_row=False)
        _same_examples(chosen, reference)
    assert recomputed == []  # certified: no second pass was needed
    assert {e.reason for e in reference.examples} >= {"misscored"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_narrow_models_certify_too(dtype, monkeypatch):
    # The provisional keys are computed in the model's dtype; their rounding is in the bound.
    recomputed = []
    real = replay_module.recomputed
    monkeypatch.setattr(replay_module, "recomputed",
                        lambda *a: recomputed.append(1) or real(*a))
    frame = _frame(3_000, seed=6)
    settings = AuditSettings(examples_in_report=5)
    reference = _audit(frame, settings, chunk_rows=400, replay_every_row=True, dtype=dtype)
    chosen = _audit(frame, settings, chunk_rows=400, replay_every_row=False, dtype=dtype)
    _same_examples(chosen, reference)
    assert recomputed == []


def test_several_outputs(monkeypatch):
    frame = _frame(2_000, seed=4)
    settings = AuditSettings(examples_in_report=3)
    reference = _audit(frame, settings, chunk_rows=333, replay_every_row=True, outputs=3)
    chosen = _audit(frame, settings, chunk_rows=333, replay_every_row=False, outputs=3)
    _same_examples(chosen, reference)
    assert {e.output for e in chosen.examples} == {"output_0", "output_1", "output_2"}


def test_an_uncertified_choice_is_recomputed_over_the_data(monkeypatch):
    # Discrete features make many rows tie on their strongest contribution; with no spare
    # candidates (only as many as shown), the rows left out tie with the last one shown, so
    # the choice cannot be certified and the audit makes it again over every row.
    monkeypatch.setattr(candidates_module, "candidates_kept", lambda keep: keep)
    recomputed = []
    real = replay_module.recomputed
    monkeypatch.setattr(replay_module, "recomputed",
                        lambda *a: recomputed.append(1) or real(*a))
    frame = _frame(2_000, discrete=True, seed=1)
    settings = AuditSettings(examples_in_report=4)
    reference = _audit(frame, settings, chunk_rows=300, replay_every_row=True)
    chosen = _audit(frame, settings, chunk_rows=300, replay_every_row=False)
    assert recomputed == [1]
    _same_examples(chosen, reference)


def _drivers(baseline: torch.Tensor, keep: int = 2) -> ExampleDrivers:
    return ExampleDrivers(["a", "b"], ["score"], top_k=2, proxies=[], keep=keep,
                          baseline=baseline, per_unit=True)


def _offer(candidates: ExampleCandidates, rows: list[int], x: list[list[float]],
           gradients: list[list[float]], baseline: list[float]) -> None:
    n = len(rows)
    values = torch.tensor(gradients, dtype=torch.float64)[:, None, :]
    candidates.update(np.array(rows), pa.array([str(r) for r in rows]), None,
                      torch.zeros(n, 1, dtype=torch.float64), values,
                      torch.ones(n, dtype=torch.bool), torch.tensor(x, dtype=torch.float64),
                      torch.tensor(baseline, dtype=torch.float64))


def test_certified_only_when_no_row_left_out_could_reach_the_list():
    # Rows 0, 1, 2 with a = 2, 1, 3 and gradient 1 on a; one candidate kept. Against the
    # provisional baseline 0 their keys are 2, 1, 3: row 2 is kept, rows 0 and 1 are left out
    # (largest key 2, largest gradient 1). A final baseline b moves a key by at most 1 * |b|:
    # with b = 0.25 the rows left out reach at most 2.25 < row 2's 2.75, certified; with
    # b = 2.5 they could reach 4.5 > row 2's 0.5 (row 1's is in fact 1.5), not certified.
    def build(baseline_final: float) -> tuple[ExampleCandidates, ExampleDrivers]:
        candidates = ExampleCandidates(1, [], keep=1, per_unit=True)
        candidates.buffers = {reason: [candidates_module._Buffer(1)]
                              for reason in candidates.buffers}
        _offer(candidates, [0, 1, 2], [[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]],
               [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [0.0, 0.0])
        drivers = _drivers(torch.tensor([baseline_final, 0.0], dtype=torch.float64), keep=1)
        return candidates, drivers

    candidates, drivers = build(0.25)  # row 0 could reach 2.25 < 2.75: certified
    assert candidates.settle(drivers, None)
    assert [e.id for e in drivers.best_first()] == ["2"]
    candidates, drivers = build(2.5)  # row 0 could reach 2 + 2.5 = 4.5 > 0.5: not certified
    assert not candidates.settle(drivers, None)


def test_memory_stays_bounded_to_the_candidates():
    candidates = ExampleCandidates(1, [], keep=2, per_unit=True)
    generator = np.random.default_rng(2)
    for chunk in range(20):
        x = generator.standard_normal((500, 2)).tolist()
        g = generator.standard_normal((500, 2)).tolist()
        _offer(candidates, list(range(chunk * 500, chunk * 500 + 500)), x, g, [0.0, 0.0])
    kept_rows = sum(len(part.rows) for part in candidates.kept.values())
    assert kept_rows <= 2 * candidates_module.candidates_kept(2)


def test_run_audit_auto_writes_every_row_only_for_small_audits(tmp_path, monkeypatch):
    from sensaudit import load_config, run_audit

    frame = _frame(600)
    frame.to_csv(tmp_path / "data.csv", index=False)
    scorer = torch.nn.Sequential(torch.nn.Linear(5, 1))
    torch.manual_seed(0)
    program = torch.export.export(scorer.eval(), (torch.randn(4, 5),),
                                  dynamic_shapes=({0: torch.export.Dim("rows", min=1)},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    config = tmp_path / "audit.yaml"
    config.write_text("model:\n  path: model.pt2\ndata:\n  path: data.csv\n  label: label\n"
                      "  id: id\n  features: [f0, f1, f2, f3, f4]\n  chunk_rows: 100\n"
                      "audit:\n  examples_in_report: 3\nreport:\n  dir: out\n")
    small, _ = run_audit(load_config(config))
    rows = pd.read_csv(tmp_path / "out" / "examples.csv")
    assert len(rows) == 600 and small.examples_streamed
    monkeypatch.setattr(example_rows_module, "AUTO_EXAMPLE_ROWS", 250)
    large, _ = run_audit(load_config(config))
    rows = pd.read_csv(tmp_path / "out" / "examples.csv")
    assert not large.examples_streamed
    assert sorted(rows["id"]) == sorted(e.id for e in large.examples)
    assert large.examples == small.examples
    report = (tmp_path / "out" / "report.md").read_text()
    assert "more than report.examples: auto writes one by one (250)" in report


def test_a_row_limit_streams_the_first_rows_and_keeps_every_rows_examples(tmp_path):
    frame = _frame(1_000, seed=5)
    settings = AuditSettings(examples_in_report=3)
    cfg = DataConfig(path=Path("<frame>"), features=tuple(f"f{j}" for j in range(5)),
                     label="label", id="id", chunk_rows=128)
    table = tables.frame_table(frame, cfg)
    loaded = LoadedModel(module=_Scorer(5).eval(), path=Path("<model>"), format="in-memory",
                         device=torch.device("cpu"), dtype=torch.float64)
    streamed: list[pa.Table] = []
    (limited,) = audit_local(
        [loaded], lambda: tables.iter_frame_chunks(frame, table, cfg, torch.float64),
        audit_plan(replace(settings), table, "<test>", model_cfg=None),
        progress=lambda *a: None, examples=ExampleRows(streamed.append, 200)).results
    ids = pa.concat_tables(streamed).column("id").to_pylist()
    assert ids[:200] == [f"row-{i}" for i in range(200)] and len(ids) < 1_000
    full = _audit(frame, settings, chunk_rows=128, replay_every_row=True)
    assert limited.examples == full.examples


def test_candidates_merge_to_the_single_pass_choice():
    # Rows split into 3 random parts, each read in chunks against its own running means (any
    # provisional baseline is valid), merged: the settled choice is the full replay's.
    generator = np.random.default_rng(7)
    n_rows, m, n = 3_000, 2, 6
    x = torch.from_numpy(generator.standard_normal((n_rows, n)) * 2 + 1)
    values = torch.from_numpy(generator.standard_normal((n_rows, m, n)))
    scores = torch.from_numpy(generator.standard_normal((n_rows, m)))
    labels = generator.standard_normal(n_rows)
    rows = np.arange(1, n_rows + 1)
    ids = pa.array([f"r{r}" for r in rows])
    finite = torch.ones(n_rows, dtype=torch.bool)
    baseline = x.mean(0)

    def drivers() -> ExampleDrivers:
        return ExampleDrivers([f"f{j}" for j in range(n)], ["a", "b"], top_k=2, proxies=[],
                              keep=4, baseline=baseline, per_unit=True)

    reference = drivers()
    reference.add(rows, ids, labels, scores, values, finite, x, table=False)
    parts = []
    for part_rows in np.array_split(generator.permutation(n_rows), 3):
        part_rows = np.sort(part_rows)
        candidates = ExampleCandidates(m, [], keep=4, per_unit=True)
        for start in range(0, len(part_rows), 150):
            index = part_rows[start:start + 150]
            seen = torch.from_numpy(part_rows[:start + 150])
            candidates.update(rows[index], ids.take(pa.array(index)), labels[index],
                              scores[index], values[index], finite[index], x[index],
                              x[seen].mean(0))
        parts.append(candidates)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    chosen = drivers()
    assert merged.settle(chosen, None)
    assert chosen.best_first() == reference.best_first()
    np.testing.assert_array_equal(chosen.contributions().rows, reference.contributions().rows)
    np.testing.assert_array_equal(chosen.contributions().values,
                                  reference.contributions().values)
