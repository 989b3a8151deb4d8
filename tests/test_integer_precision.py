"""Integer columns beyond what floats hold exactly: exact statistics, and one warning per column
naming it (sensaudit/integer_precision.py, FeatureMoments' integer shift)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from models import save_exported
from torch import nn
from typer.testing import CliRunner

from sensaudit.api import audit_frame
from sensaudit.cli.app import app
from sensaudit.stats.accumulators import FeatureMoments

BIG = 2**62


def _big_frame(rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "clarity": rng.normal(0.0, 1.0, rows),
        # Nanosecond-like stamps near 2**62: float64 rounds them to multiples of 1024.
        "stamp": np.int64(BIG) + rng.integers(0, 5000, rows).astype(np.int64),
        "count": rng.integers(0, 50, rows).astype(np.int64),
    })


def _exact_std(values: np.ndarray) -> float:
    return float(np.std((values - values[0]).astype(np.float64), ddof=1))


def test_moments_of_integers_near_2_62_are_exact_and_merge_across_shifts():
    values = _big_frame(300)["stamp"].to_numpy()
    x = torch.from_numpy(values.astype(np.float64))[:, None]
    naive = FeatureMoments(1)
    naive.update(x)  # the float64 view alone: the spread is mostly rounded away
    whole = FeatureMoments(1)
    whole.update(x, {0: values})
    assert whole.std[0].item() == pytest.approx(_exact_std(values), rel=1e-12)
    assert abs(naive.std[0].item() - _exact_std(values)) > 1e-3 * _exact_std(values)
    merged = FeatureMoments(1)
    for part in np.array_split(np.arange(300), 4):  # each part shifts by its own first value
        piece = FeatureMoments(1)
        piece.update(x[part], {0: values[part]})
        merged.merge(piece)
    assert merged.std[0].item() == pytest.approx(_exact_std(values), rel=1e-12)
    # A constant column near 2**62 stays exactly constant.
    flat = FeatureMoments(1)
    flat.update(x[:5] * 0 + float(BIG), {0: np.full(5, BIG, dtype=np.int64)})
    assert flat.std[0].item() == 0.0


class _Linear(nn.Module):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 1e-12, 0.01], dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


@pytest.mark.parametrize("dtype,warned", [(torch.float64, ["stamp"]),
                                          (torch.float32, ["stamp"])])
def test_the_audit_measures_the_spread_and_warns_once_per_column(dtype, warned):
    frame = _big_frame()
    result = audit_frame(_Linear(dtype), frame)
    std = result.table.set_index("feature")["std"]
    assert std["stamp"] == pytest.approx(_exact_std(frame["stamp"].to_numpy()), rel=1e-9)
    notices = [w for w in result.gates.warnings if w.check == "input_precision"]
    assert [w.subject for w in notices] == warned  # one line for stamp, none for count
    name = str(dtype).replace("torch.", "")
    assert notices[0].details[f"exact_in_{name}_up_to"] == float(2**24 if name == "float32"
                                                                 else 2**53)
    findings = [f for c in result.checks if c.check == "input_precision" for f in c.findings]
    assert len(findings) == 1 and findings[0].startswith("**stamp** holds integers up to")


def test_integers_within_float32s_exact_range_are_not_warned():
    frame = _big_frame().drop(columns=["stamp"])
    frame["stamp"] = frame["count"] + 2**24  # the largest still exact is 2**24 itself: over
    frame["count"] = frame["count"] + 2**23
    model = _Linear(torch.float32)
    result = audit_frame(model, frame[["clarity", "count", "stamp"]])
    assert [w.subject for w in result.gates.warnings if w.check == "input_precision"] \
        == ["stamp"]
    result64 = audit_frame(_Linear(torch.float64), frame[["clarity", "count", "stamp"]])
    assert not [w for w in result64.gates.warnings if w.check == "input_precision"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_cli_names_the_column(tmp_path, fmt):
    frame = _big_frame()
    model = tmp_path / "scorer.pt2"
    save_exported(_Linear(torch.float64), model, n_features=3, dtype=torch.float64)
    data = tmp_path / f"eval.{fmt}"
    if fmt == "csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_parquet(data, index=False)
    config = tmp_path / "audit.yaml"
    config.write_text(f"model:\n  path: {model}\ndata:\n  path: {data}\n"
                      f"report:\n  dir: {tmp_path / 'out'}\n", encoding="utf-8")
    run = CliRunner().invoke(app, ["run", str(config), "--quiet"])
    assert run.exit_code == 0, run.output
    assert "stamp" in run.output and "input_precision" in run.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (warning,) = [w for w in summary["warnings"] if w["feature"] == "stamp"]
    assert warning["largest_integer"] > 2**53
    sensitivity = pd.read_csv(tmp_path / "out" / "sensitivity.csv").set_index("feature")
    assert sensitivity.loc["stamp", "std"] == pytest.approx(  # as the CSV rounds it
        _exact_std(frame["stamp"].to_numpy()), rel=1e-6)
