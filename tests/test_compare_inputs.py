"""`sensaudit compare` across models whose inputs differ by name (issue 20, defect 6): the usual
fix for a leaky column is to drop it and retrain, which gives a model with one input fewer.

Both models read the union of their columns in one pass; each takes its own, in its order. On
linear scorers every share is a closed form over that model's own inputs:
share_j = |w_j| std_j / sum over its inputs k of |w_k| std_k.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sensaudit import compare_models, load_config
from sensaudit.cli.app import app
from sensaudit.pipeline.compare import kendall_tau, spearman

OLD_INPUTS = ["a", "b", "c", "leak"]
OLD_W = [1.0, 0.5, 2.0, 1.0]
NEW_INPUTS = ["c", "a", "b"]  # leak dropped, and another column order
NEW_W = [2.0, 0.3, 0.5]
STD = {"a": 1.0, "b": 2.0, "c": 0.5, "leak": 3.0}


class Linear(torch.nn.Module):
    def __init__(self, w: list[float]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def export_named(path: Path, w: list[float], names: list[str] | None) -> Path:
    """A .pt2 whose file names its inputs (as docs/inputs.md says)."""
    program = torch.export.export(Linear(w), (torch.ones(4, len(w), dtype=torch.float64),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    extra = {"sensaudit.json": json.dumps({"features": names})} if names else None
    torch.export.save(program, str(path), extra_files=extra)
    return path


@pytest.fixture
def retrain(tmp_path: Path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(300, 4)) * [STD[f] for f in OLD_INPUTS],
                         columns=OLD_INPUTS)
    frame.insert(0, "id", [f"r{i}" for i in range(300)])
    frame.insert(3, "unused", rng.normal(size=300))  # neither model takes it
    frame.to_csv(tmp_path / "data.csv", index=False)
    export_named(tmp_path / "old.pt2", OLD_W, OLD_INPUTS)
    export_named(tmp_path / "new.pt2", NEW_W, NEW_INPUTS)
    cfg = {"data": {"path": "data.csv", "id": "id"},
           "audit": {"proxies": [{"feature": "leak", "max_share": 0.2},
                                 {"feature": "b", "max_share": 0.9}]},
           "compare": {"bootstrap_samples": 200, "seed": 1, "max_proxy_share_increase": 0.3},
           "report": {"dir": "out"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path, frame


def shares(frame: pd.DataFrame, names: list[str], w: list[float]) -> dict[str, float]:
    scaled = {f: abs(wj) * frame[f].std(ddof=1) for f, wj in zip(names, w, strict=True)}
    total = sum(scaled.values())
    return {f: v / total for f, v in scaled.items()}


def test_a_dropped_column_is_listed_as_removed_and_shares_are_over_each_models_inputs(retrain):
    tmp, frame = retrain
    result = compare_models(load_config(tmp / "cfg.yaml"), tmp / "old.pt2", tmp / "new.pt2")
    table = result.table.set_index("feature")
    assert sorted(table.index) == sorted(OLD_INPUTS)  # "unused" is read by neither
    old, new = shares(frame, OLD_INPUTS, OLD_W), shares(frame, NEW_INPUTS, NEW_W)
    assert table.loc["leak", "status"] == "removed"
    assert (table.loc[NEW_INPUTS, "status"] == "common").all()
    for f in OLD_INPUTS:
        assert table.loc[f, "share_old"] == pytest.approx(old[f], rel=1e-10)
    for f in NEW_INPUTS:
        assert table.loc[f, "share_new"] == pytest.approx(new[f], rel=1e-10)
        assert table.loc[f, "delta_share"] == pytest.approx(new[f] - old[f], rel=1e-9)
    # The removed feature: its old figures only; no change, no interval, no new rank.
    leak = table.loc["leak"]
    assert math.isnan(leak["share_new"]) and math.isnan(leak["delta_share"])
    assert math.isnan(leak["delta_share_low"]) and leak["rank_new"] is pd.NA
    assert leak["rank_old"] == 1 and not leak["changed"] and not leak["significant"]
    assert bool(leak["flagged_old"]) and not bool(leak["flagged_new"])
    # Ranks within each model's own inputs.
    assert table.loc[NEW_INPUTS, "rank_new"].tolist() == (
        pd.Series(new).rank(ascending=False).astype(int).tolist())
    # Rank agreement over the features both take, as for equal inputs.
    common = NEW_INPUTS
    a = np.array([old[f] for f in common])
    b = np.array([new[f] for f in common])
    assert result.overall["score"].spearman == pytest.approx(spearman(a, b))
    assert result.overall["score"].kendall_tau == pytest.approx(kendall_tau(a, b))
    # The bootstrap interval of a common feature is still a real interval around its change.
    c = table.loc["c"]
    assert c["delta_share_low"] < c["delta_share"] < c["delta_share_high"]
    assert ("leak was removed: the new model does not take it (it held "
            f"{old['leak']:.0%} of the old model's sensitivity, rank 1).") in result.findings
    assert result.passed


def test_the_gates_see_an_added_proxy_grow_from_nothing(retrain):
    """Swapped: leak is added. compare.max_proxy_share_increase judges its share against
    zero, since the old model does not take it; the new model's own gate flags it."""
    tmp, frame = retrain
    result = compare_models(load_config(tmp / "cfg.yaml"), tmp / "new.pt2", tmp / "old.pt2")
    table = result.table.set_index("feature")
    leak_share = shares(frame, OLD_INPUTS, OLD_W)["leak"]
    assert table.loc["leak", "status"] == "added"
    assert math.isnan(table.loc["leak", "share_old"])
    assert table.loc["leak", "share_new"] == pytest.approx(leak_share, rel=1e-10)
    (grown,) = result.proxy_increases
    assert (grown.feature, grown.output, grown.margin) == ("leak", "score", 0.3)
    assert grown.delta_share == pytest.approx(leak_share)
    assert not result.passed and not result.new.passed


def test_models_that_read_their_columns_in_other_orders(retrain):
    """The same inputs in another order used to be refused; each model now takes its own."""
    tmp, frame = retrain
    export_named(tmp / "reordered.pt2", [0.5, 2.0, 1.0, 1.0], ["b", "c", "a", "leak"])
    result = compare_models(load_config(tmp / "cfg.yaml"), tmp / "old.pt2",
                            tmp / "reordered.pt2")
    assert "status" in result.table.columns and set(result.table["status"]) == {"common"}
    # The same model: every share and every row's score the same.
    np.testing.assert_allclose(result.table["delta_share"], 0, atol=1e-12)
    assert result.overall["score"].score_change.max_abs < 1e-9


def test_unknown_names_with_another_width_are_refused(retrain):
    tmp, _ = retrain
    export_named(tmp / "anonymous.pt2", NEW_W, None)
    result = CliRunner().invoke(app, ["compare", str(tmp / "old.pt2"),
                                      str(tmp / "anonymous.pt2"), "--config",
                                      str(tmp / "cfg.yaml")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {tmp / 'anonymous.pt2'}: the model failed on a "
                                    "batch of 4 features")
    assert not (tmp / "out").exists()


def test_cli_end_to_end_in_every_format(retrain):
    pytest.importorskip("matplotlib")
    tmp, _ = retrain
    formats = "csv,markdown,json,junit,parquet,png,html"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["compare", str(tmp / "old.pt2"), str(tmp / "new.pt2"), "--config",
              str(tmp / "cfg.yaml"), "--format", formats])
    assert result.exit_code == 0, result.output
    assert "│ leak    │     49.7% │         — │ removed │ 1 -> — │ cleared │" in result.stdout
    out = tmp / "out"
    csv = pd.read_csv(out / "comparison.csv").set_index("feature")
    assert csv.loc["leak", "status"] == "removed" and math.isnan(csv.loc["leak", "rank_new"])
    pd.testing.assert_frame_equal(pd.read_parquet(out / "comparison.parquet")
                                  .set_index("feature")[["share_old", "share_new"]],
                                  csv[["share_old", "share_new"]])
    summary = json.loads((out / "comparison.json").read_text())
    leak = next(f for f in summary["features"] if f["feature"] == "leak")
    assert leak["status"] == "removed" and leak["share_new"] is None and leak["rank_new"] is None
    markdown = (out / "comparison.md").read_text()
    assert "| leak | 49.7% | — | removed | | 1 -> — | cleared |" in markdown
    assert "Each model's shares are normalised over its own inputs" in markdown
    html = re.sub(r"data:image/png;base64,[^\"]*", "", (out / "comparison.html").read_text())
    assert "Each model&#x27;s shares are normalised over its own inputs" in html
    assert "leak was removed" in html and "&lt;NA&gt;" not in html and "nan" not in html
    assert 'failures="0"' in (out / "comparison-junit.xml").read_text()
    assert (out / "chart-compare-shares.png").stat().st_size > 0


def test_each_model_is_audited_as_if_alone_on_its_own_columns(tmp_path):
    """The union is only how the rows are read: the new model's shares, ranks and layer norms
    in the compare are those of `run` on its own columns (the .pt2's layers are still reached
    through the column selection)."""
    from sensaudit import audit

    def mlp(width: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(width, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 1)).double()

    def save(path: Path, model: torch.nn.Module, names: list[str]) -> None:
        program = torch.export.export(model, (torch.ones(4, len(names), dtype=torch.float64),),
                                      dynamic_shapes=({0: torch.export.Dim("rows")},))
        torch.export.save(program, str(path),
                          extra_files={"sensaudit.json": json.dumps({"features": names})})

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(120, 4)), columns=OLD_INPUTS)
    frame.insert(0, "id", range(120))
    frame.to_csv(tmp_path / "data.csv", index=False)
    save(tmp_path / "old.pt2", mlp(4, 0), OLD_INPUTS)
    save(tmp_path / "new.pt2", mlp(3, 1), NEW_INPUTS)
    cfg = {"data": {"path": "data.csv", "id": "id"}, "audit": {"layer_health": {}},
           "compare": {"bootstrap_samples": 0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = compare_models(load_config(tmp_path / "cfg.yaml"), tmp_path / "old.pt2",
                            tmp_path / "new.pt2")
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump({**cfg, "model": {"path": "new.pt2"}}))
    alone = audit(load_config(tmp_path / "alone.yaml"))
    mine = result.table.set_index("feature").loc[NEW_INPUTS]
    theirs = alone.table.set_index("feature").loc[NEW_INPUTS]
    np.testing.assert_allclose(mine["share_new"], theirs["share"], rtol=1e-12)
    assert mine["rank_new"].tolist() == theirs["rank"].tolist()

    def layers(found) -> pd.DataFrame:
        check = next(c for c in found.checks if c.check == "layer_health")
        return check.tables["layer_health.csv"]

    compared, single = layers(result.new), layers(alone)
    assert compared["layer"].tolist() == ["(input)", "0", "1", "2"]
    np.testing.assert_allclose(compared["median_norm"], single["median_norm"], rtol=1e-12)


def test_replicas_take_the_columns_of_the_model_they_retrain(retrain):
    """An old replica without saved names takes old's columns; a new replica with its names
    takes its own. The retraining noise of a common feature is their spread; a removed
    feature has none (it has no change)."""
    tmp, _ = retrain
    export_named(tmp / "old_seed2.pt2", [1.1, 0.5, 2.0, 0.9], None)
    export_named(tmp / "new_seed2.pt2", [0.28, 0.5, 2.1], ["a", "b", "c"])
    result = compare_models(load_config(tmp / "cfg.yaml"), tmp / "old.pt2", tmp / "new.pt2",
                            old_replicas=[tmp / "old_seed2.pt2"],
                            new_replicas=[tmp / "new_seed2.pt2"])
    table = result.table.set_index("feature")
    assert result.settings["noise"] == "rows and retraining"
    assert (table.loc[NEW_INPUTS, "retraining_sd"] > 0).all()
    assert math.isnan(table.loc["leak", "retraining_sd"])
    # new_seed2 is new with its columns reordered and c's weight a little off: its shares
    # are close to new's, which it would not be if it were fed new's column order.
    (tmp / "plain.yaml").write_text(yaml.safe_dump({"data": {"path": "data.csv", "id": "id"}}))
    replica = compare_models(load_config(tmp / "plain.yaml"), tmp / "new.pt2",
                             tmp / "new_seed2.pt2").table
    assert replica["delta_share"].abs().max() < 0.05
