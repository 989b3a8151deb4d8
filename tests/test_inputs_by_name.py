"""The model's inputs by name, and no verdict on nothing (issue 9): data columns are matched to
the model's declared inputs whatever their order in the file; an undeclared order is said to
be assumed; constant data, lost float32 precision, models that fail only on some batches and
text columns each get a clear message instead of a silent or crashing audit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers_bad import ROWS, Scorer, cli, cli_error, config, export, write_config, write_csv

import sensaudit

REVERSED = ("id", "c", "b", "a", "label")


def _reversed_rows() -> list[tuple]:
    return [(r[0], r[3], r[2], r[1], r[4]) for r in ROWS]


def _summary(tmp_path: Path, folder: str = "reports") -> dict:
    return json.loads((tmp_path / folder / "summary.json").read_text())


def _export_with_names(model: torch.nn.Module, path: Path, names: list[str]) -> Path:
    program = torch.export.export(model, (torch.ones(4, 3),),
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, str(path),
                      extra_files={"sensaudit.json": json.dumps({"features": names})})
    return path


class _Asymmetric(torch.nn.Module):
    """y = 3a + b + 0.5c: reading the columns in another order changes every share."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([3.0, 1.0, 0.5]))

    def forward(self, x):
        return x @ self.w


@pytest.fixture
def baseline(tmp_path):
    """The audit with the data's columns in the model's order (a, b, c)."""
    export(_Asymmetric(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")
    assert cli("run", str(write_config(tmp_path, config(tmp_path))), "--quiet").exit_code == 0
    return _summary(tmp_path)


def test_columns_are_matched_by_model_features_whatever_the_file_order(tmp_path, baseline):
    write_csv(tmp_path / "reversed.csv", _reversed_rows(), header=REVERSED)
    cfg = config(tmp_path, model={"path": "model.pt2", "features": ["a", "b", "c"]},
                 data={"path": "reversed.csv", "id": "id", "label": "label"},
                 report={"dir": "by_name"})
    assert cli("run", str(write_config(tmp_path, cfg)), "--quiet").exit_code == 0
    assert _summary(tmp_path, "by_name")["ranking"] == baseline["ranking"]
    assert _summary(tmp_path, "by_name")["features"] == ["a", "b", "c"]


def test_columns_are_matched_by_the_names_saved_with_the_model(tmp_path, baseline):
    _export_with_names(_Asymmetric(), tmp_path / "named.pt2", ["a", "b", "c"])
    write_csv(tmp_path / "reversed.csv", _reversed_rows(), header=REVERSED)
    cfg = config(tmp_path, model={"path": "named.pt2"},
                 data={"path": "reversed.csv", "id": "id", "label": "label"},
                 report={"dir": "by_name"})
    assert cli("run", str(write_config(tmp_path, cfg)), "--quiet").exit_code == 0
    assert _summary(tmp_path, "by_name")["ranking"] == baseline["ranking"]
    report = (tmp_path / "by_name" / "report.md").read_text()
    assert "was assumed" not in report


def test_an_undeclared_order_is_said_to_be_assumed(tmp_path, baseline):
    # The same reversed file without a declaration: the audit cannot know, and says so.
    write_csv(tmp_path / "reversed.csv", _reversed_rows(), header=REVERSED)
    cfg = config(tmp_path, data={"path": "reversed.csv", "id": "id", "label": "label"},
                 report={"dir": "assumed"})
    assert cli("run", str(write_config(tmp_path, cfg)), "--quiet").exit_code == 0
    assert _summary(tmp_path, "assumed")["ranking"] != baseline["ranking"]  # silently wrong
    report = (tmp_path / "assumed" / "report.md").read_text()
    assert ("The model's input columns were not declared, so the data's column order (c, b, a) "
            "was assumed to be the order the model takes them in.") in report


def test_data_features_that_differ_from_the_model_inputs(tmp_path):
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")
    cfg = config(tmp_path, model={"path": "model.pt2", "features": ["a", "b", "c"]},
                 data={"path": "data.csv", "id": "id", "features": ["a", "b", "label"]})
    path = write_config(tmp_path, cfg)
    assert cli_error("run", str(path)) == (
        f"{path}: data.features does not match the model's inputs (model.features: a, b, c): "
        "'label' is not one of them")


def test_a_model_input_missing_from_the_data(tmp_path):
    _export_with_names(Scorer(), tmp_path / "named.pt2", ["a", "b", "d"])
    write_csv(tmp_path / "data.csv")
    cfg = config(tmp_path, model={"path": "named.pt2"})
    assert cli_error("run", str(write_config(tmp_path, cfg))) == (
        f"{tmp_path / 'data.csv'}: column 'd' named by the model file's saved inputs is not in "
        "the data (columns: id, a, b, c, label)")


def test_bad_saved_inputs_are_named(tmp_path):
    program = torch.export.export(Scorer(), (torch.ones(4, 3),))
    torch.export.save(program, str(tmp_path / "model.pt2"),
                      extra_files={"sensaudit.json": json.dumps({"features": ["a", "a", "b"]})})
    write_csv(tmp_path / "data.csv")
    assert cli_error("run", str(write_config(tmp_path, config(tmp_path)))) == (
        f"{tmp_path / 'model.pt2'}: its sensaudit.json must hold \"features\": a list of "
        "distinct column names")


# --- no verdict on nothing --------------------------------------------------------------------


def test_all_constant_data_gets_no_verdict(tmp_path):
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv", [(f"r{i}", 1.0, 2.0, 3.0, i % 2) for i in range(6)])
    assert cli_error("run", str(write_config(tmp_path, config(tmp_path)))) == (
        f"{tmp_path / 'data.csv'}: every feature is constant over the 6 rows read, so no "
        "feature can be ranked by how much it moves the score; audit rows where the features "
        "vary")


def test_an_output_moved_only_by_constant_features_gets_no_verdict():
    frame = pd.DataFrame({"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0, 4.0]})
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))  # reads only the constant column
    with pytest.raises(sensaudit.ModelError) as err:
        sensaudit.audit_frame(model, frame)
    assert str(err.value) == (
        "<in-memory model>: output 'score' responds only to features that do not vary in the "
        "data (every share is 0), so nothing can be ranked; audit rows where those features "
        "vary")


def test_float32_model_that_cannot_see_a_features_spread_is_warned(tmp_path):
    # b varies by ~0.01 around 1e6, where float32's step is 0.0625: the model sees steps, not
    # the data's spread.
    export(Scorer(), tmp_path / "model.pt2")
    rows = [(f"r{i}", float(i), 1e6 + 0.01 * ((i * 7) % 5), float(i % 3), i % 2)
            for i in range(30)]
    write_csv(tmp_path / "data.csv", rows)
    result = cli("run", str(write_config(tmp_path, config(tmp_path))), "--quiet")
    assert result.exit_code == 0, result.output
    summary = _summary(tmp_path)
    lost = [w for w in summary["warnings"] if "std_in_float32" in w]
    assert [w["feature"] for w in lost] == ["b"]  # a and c are exact in float32
    assert lost[0]["std_in_float32"] > 1.5 * lost[0]["std"]  # rounded to 0.0625 steps
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "**b** varies with std 0.01438 in the data but" in report
    assert "once rounded to the model's float32 inputs" in report


class _FailsOnLargeBatches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))

    def forward(self, x):
        if x.shape[0] > 10:
            raise RuntimeError("out of scratch memory")
        return x @ self.w


class _FailsWithGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))

    def forward(self, x):
        if torch.is_grad_enabled():
            raise ValueError("inference only")
        return x @ self.w


@pytest.mark.parametrize("model,detail", [
    (_FailsOnLargeBatches(), "RuntimeError: out of scratch memory"),
    (_FailsWithGrad(), "ValueError: inference only"),
])
def test_a_model_failing_only_on_some_calls_is_bad_input_not_a_bug(model, detail):
    frame = pd.DataFrame({"a": range(20), "b": [float(i % 4) for i in range(20)],
                          "c": [float(i % 3) for i in range(20)]}, dtype=float)
    with pytest.raises(sensaudit.ModelError) as err:
        sensaudit.audit_frame(model, frame)
    assert str(err.value) == (
        f"<in-memory model>: the model raised while computing attributions on a batch of 20 "
        f"rows with gradients enabled ({detail}); a scorer must accept any batch size and "
        "support autograd")


def test_bool_columns_are_features_and_text_columns_are_named(tmp_path):
    export(Scorer(n_features=3), tmp_path / "model.pt2")
    header = ("id", "a", "b", "flag", "name", "label")
    rows = [(f"r{i}", float(i), float(i % 3), "True" if i % 2 else "False", f"n{i}", i % 2)
            for i in range(8)]
    write_csv(tmp_path / "data.csv", rows, header=header)
    cfg = write_config(tmp_path, config(tmp_path, audit={}))
    result = cli("run", str(cfg), "--quiet")
    assert result.exit_code == 0, result.output
    assert _summary(tmp_path)["features"] == ["a", "b", "flag"]
    assert ("Columns left out of the features as text: name (list them in data.features or "
            "model.features if the model takes them).") in (
        tmp_path / "reports" / "report.md").read_text()
    # A model expecting 4 inputs: the width error names the text column left out.
    export(Scorer(n_features=4), tmp_path / "model.pt2", n_features=4)
    message = cli_error("run", str(cfg))
    assert message.endswith("does its input width match the data's features?; the data's text "
                            "column(s) name are not features unless data.features or "
                            "model.features lists them")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_a_named_pipe_as_data_is_refused_without_hanging(tmp_path):
    export(Scorer(), tmp_path / "model.pt2")
    os.mkfifo(tmp_path / "data.csv")
    assert cli_error("run", str(write_config(tmp_path, config(tmp_path)))) == (
        f"{tmp_path / 'data.csv'}: data.path is not a regular file (a pipe or device?); write "
        "the extract to a CSV or Parquet file")
