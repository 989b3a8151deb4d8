"""Edge cases found in review: each test pins a behaviour that was wrong once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sensaudit import (
    AuditSettings,
    ConfigError,
    ProxyLimit,
    audit_frame,
    compare_models,
    load_config,
    parse_config,
)
from sensaudit.cli.app import app
from sensaudit.results.comparison import ScoreChange


class Linear(torch.nn.Module):
    """y = x @ W.T (float64): gradient W in every row."""

    def __init__(self, weights: list[list[float]]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(weights, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T


def _frame(columns: list[str], rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(rng.normal(size=(rows, len(columns))), columns=columns)


def test_audit_frame_keeps_the_proxies_given_in_settings():
    frame = _frame(["a", "b"])
    settings = AuditSettings(proxies=(ProxyLimit("a", max_share=0.1),))
    result = audit_frame(Linear([[5.0, 0.1]]), frame, settings=settings)
    assert [f.subject for f in result.gates.flags] == ["a"]
    assert not result.passed


def test_proxy_limits_are_checked_in_python_too():
    with pytest.raises(ConfigError, match=r"ProxyLimit\('a'\) needs a limit"):
        ProxyLimit("a")
    with pytest.raises(ConfigError, match=r"max_share must be a number in \[0, 1\] \(got 1.5"):
        ProxyLimit("a", max_share=1.5)
    with pytest.raises(ConfigError, match="'a' is declared twice"):
        audit_frame(Linear([[1.0, 1.0]]), _frame(["a", "b"]),
                    proxies=[ProxyLimit("a", max_share=0.5), ProxyLimit("a", max_rank=1)])


def test_proxies_must_be_a_list_not_a_falsy_value():
    raw = {"model": {"path": "m.pt2"}, "data": {"path": "d.csv"},
           "audit": {"proxies": False}, "report": {"dir": "r"}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, source="c.yaml")
    assert str(err.value) == ("c.yaml: audit.proxies must be a list of {feature, max_share, "
                              "max_rank} (got False, a bool)")


def _linear_setup(tmp_path: Path, columns: list[str], weights, config: dict) -> Path:
    _frame(columns).to_csv(tmp_path / "d.csv", index=False)
    torch.jit.save(torch.jit.script(Linear(weights).eval()), str(tmp_path / "m.pt"))
    config = {"model": {"path": "m.pt"}, "data": {"path": "d.csv"},
              "report": {"dir": "out"}, **config}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "c.yaml"


def test_feature_names_with_brackets_print_verbatim(tmp_path):
    config = _linear_setup(tmp_path, ["price[usd]", "size[/b]"], [[1.0, 2.0]],
                           {"audit": {"proxies": [{"feature": "size[/b]", "max_share": 0.9}]}})
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert "price[usd]" in result.output and "size[/b]" in result.output


def test_an_internal_error_exits_3_with_its_traceback(tmp_path, monkeypatch):
    config = _linear_setup(tmp_path, ["a", "b"], [[1.0, 2.0]], {})

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("sensaudit.api.run_audit", broken)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 3
    assert "RuntimeError: boom" in result.output
    assert "internal error (a bug, not your input)" in result.output


def test_compare_reports_agreement_per_output(tmp_path):
    config = _linear_setup(tmp_path, ["a", "b", "c"], [[1.0, 2.0, 0.5], [0.3, 0.2, 1.0]], {})
    new = tmp_path / "new.pt"
    # Output 0 unchanged; output 1 now reads only feature a.
    torch.jit.save(torch.jit.script(Linear([[1.0, 2.0, 0.5], [1.0, 0.0, 0.0]]).eval()),
                   str(new))
    result = compare_models(load_config(config), tmp_path / "m.pt", new)
    first, second = result.overall["output_0"], result.overall["output_1"]
    assert first.cosine.mean == pytest.approx(1.0)
    assert first.score_change == ScoreChange(mean=0.0, mean_abs=0.0, max_abs=0.0)
    assert second.cosine.mean < 0.9
    assert second.score_change.max_abs > 0


def test_without_bootstrap_no_change_is_called_larger_than_noise(tmp_path):
    config = _linear_setup(tmp_path, ["a", "b"], [[1.0, 2.0]],
                           {"compare": {"bootstrap_samples": 0}})
    torch.jit.save(torch.jit.script(Linear([[3.0, 0.5]]).eval()), str(tmp_path / "new.pt"))
    result = compare_models(load_config(config), tmp_path / "m.pt", tmp_path / "new.pt")
    assert not result.table["significant"].any()
    assert "delta_share_low" not in result.table.columns
    assert not any("within noise" in line or "interval" in line for line in result.findings)
    cli = CliRunner().invoke(app, ["compare", str(tmp_path / "m.pt"), str(tmp_path / "new.pt"),
                                   "--config", str(config)])
    assert "outside its" not in cli.output and "interval" not in cli.output


def test_compare_does_not_lend_the_configs_trust_to_other_files(tmp_path):
    config = _linear_setup(tmp_path, ["a", "b"], [[1.0, 2.0]], {})
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["trust_model_code"] = True
    config.write_text(yaml.safe_dump(cfg))
    torch.save(Linear([[1.0, 1.0]]), tmp_path / "pickled.pt")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "m.pt"),
                                      str(tmp_path / "pickled.pt"), "--config", str(config)])
    assert result.exit_code == 2
    assert "refusing to unpickle" in result.output


class NaNOnRow(torch.nn.Module):
    """y = x @ w, but row 0's score is x0 * inf: a non-finite gradient on that row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(x.shape[0], 1, dtype=x.dtype)
        scale[0, 0] = float("inf")
        return (x * scale).sum(1, keepdim=True)


def test_nonfinite_rows_are_not_shown_as_examples():
    frame = _frame(["a", "b"])
    result = audit_frame(NaNOnRow(), frame, settings=AuditSettings(allow_nonfinite=True))
    assert result.nonfinite_rows == 1 and result.nonfinite_ids == [1]
    assert 1 not in [ex.id for ex in result.examples]


def test_na_markers_mean_the_same_on_both_csv_parsers(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n#N/A,3\n4,abc\n")
    torch.jit.save(torch.jit.script(Linear([[1.0, 2.0]]).eval()), str(tmp_path / "m.pt"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(
        {"model": {"path": "m.pt"}, "data": {"path": "d.csv"}, "report": {"dir": "out"}}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "-q"])
    assert result.exit_code == 2
    assert "column 'a' has text in row 2 ('#N/A'); expected numbers" in result.output


def test_summary_json_is_strict_json(tmp_path):
    config = _linear_setup(tmp_path, ["a", "b"], [[1.0, 2.0]], {})
    CliRunner().invoke(app, ["run", str(config), "-q"])
    text = (tmp_path / "out" / "summary.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
