"""The streaming path (chunks from disk, online statistics) equals the in-memory path, and models
whose rows interact are refused rather than audited wrongly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sensaudit import ModelError, ProxyLimit, audit, audit_frame, load_config, run_audit


def _scorer() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).double().eval()


def _export(model: torch.nn.Module, path: Path) -> Path:
    program = torch.export.export(model, (torch.randn(4, 5, dtype=torch.float64),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, path)
    return path


@pytest.fixture
def extract(tmp_path: Path):
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.normal(size=(203, 5)) * [100, 1, 0.1, 3, 10],
                         columns=["length", "a", "b", "c", "d"])
    frame.insert(0, "row_id", [f"r{i:03d}" for i in range(203)])
    frame["label"] = rng.integers(0, 2, 203)
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.to_parquet(tmp_path / "data.parquet")
    model = _scorer()
    _export(model, tmp_path / "model.pt2")
    cfg = {"model": {"path": "model.pt2"},
           "data": {"path": "data.csv", "id": "row_id", "label": "label", "chunk_rows": 7},
           "audit": {"proxies": [{"feature": "length", "max_share": 0.3}], "batch_size": 5},
           "report": {"dir": "small_chunks"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, frame, model


def test_chunked_run_equals_single_chunk_run(extract):
    tmp, _, _ = extract
    cfg = load_config(tmp / "cfg.yaml")
    run_audit(cfg)
    whole = replace(cfg, data=replace(cfg.data, chunk_rows=100_000),
                    audit=replace(cfg.audit, batch_size=None),
                    report=replace(cfg.report, dir=tmp / "one_chunk"))
    run_audit(whole)
    small = pd.read_csv(tmp / "small_chunks" / "sensitivity.csv")
    one = pd.read_csv(tmp / "one_chunk" / "sensitivity.csv")
    pd.testing.assert_frame_equal(small, one, check_exact=False, rtol=1e-7)
    pd.testing.assert_frame_equal(pd.read_csv(tmp / "small_chunks" / "examples.csv"),
                                  pd.read_csv(tmp / "one_chunk" / "examples.csv"),
                                  check_exact=False, rtol=1e-5)
    assert len(pd.read_csv(tmp / "small_chunks" / "examples.csv")) == 203


def test_streamed_statistics_equal_in_memory_numpy(extract):
    tmp, frame, model = extract
    streamed = audit(load_config(tmp / "cfg.yaml")).table.set_index("feature")
    features = ["length", "a", "b", "c", "d"]
    x = torch.tensor(frame[features].to_numpy(), requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    g = grad.numpy()
    std = frame[features].std(ddof=1).to_numpy()
    np.testing.assert_allclose(streamed.loc[features, "std"], std, rtol=1e-12)
    np.testing.assert_allclose(streamed.loc[features, "mean_gradient"], g.mean(0), rtol=1e-10)
    np.testing.assert_allclose(streamed.loc[features, "mean_abs_gradient"], np.abs(g).mean(0),
                               rtol=1e-10)
    np.testing.assert_allclose(streamed.loc[features, "rms_gradient"],
                               np.sqrt((g**2).mean(0)), rtol=1e-10)
    scaled = std * np.abs(g).mean(0)
    np.testing.assert_allclose(streamed.loc[features, "share"], scaled / scaled.sum(),
                               rtol=1e-10)


def test_parquet_equals_csv_and_frame_api_equals_file_api(extract):
    tmp, frame, model = extract
    cfg = load_config(tmp / "cfg.yaml")
    from_csv = audit(cfg).table
    from_parquet = audit(replace(cfg, data=replace(cfg.data, path=tmp / "data.parquet"))).table
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_exact=False, rtol=1e-12)
    in_memory = audit_frame(model, frame, id="row_id", label="label",
                            proxies=[ProxyLimit("length", max_share=0.3)]).table
    pd.testing.assert_frame_equal(from_csv, in_memory, check_exact=False, rtol=1e-10)


def test_training_mode_batchnorm_baked_into_an_export_is_refused(tmp_path):
    torch.manual_seed(0)
    mixing = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4),
                                 torch.nn.Linear(4, 1)).double().train()
    _export(mixing, tmp_path / "bn.pt2")
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 5)), columns=list("vwxyz"))
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"model": {"path": "bn.pt2"},
                                                     "data": {"path": "d.csv"},
                                                     "report": {"dir": "out"}}))
    with pytest.raises(ModelError, match="depends on the other rows in its batch"):
        audit(load_config(tmp_path / "c.yaml"))


def test_frame_api_audits_a_training_mode_module_in_eval_mode_and_restores_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Dropout(0.5), torch.nn.Linear(4, 1)).double().train()
    model(torch.randn(50, 3, dtype=torch.float64))  # give BatchNorm non-trivial running stats
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(30, 3)), columns=["p", "q", "r"])
    result = audit_frame(model, frame)
    assert model.training  # handed back as it came
    model.eval()
    x = torch.tensor(frame.to_numpy(), requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    np.testing.assert_allclose(result.table.set_index("feature").loc[["p", "q", "r"],
                                                                      "mean_abs_gradient"],
                               grad.abs().mean(0).numpy(), rtol=1e-10)
