"""Builders for the checks' tests: closed-form float64 models, frames, and a run through a config
file and the CLI (so every report format is exercised)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from sensaudit.cli.app import app


class LinearScorer(nn.Module):
    """y = x @ W' + b with W [outputs, features]  ->  dy_o/dx_j = W[o, j] everywhere.
    One output returns [rows]."""

    def __init__(self, weights: list[float] | list[list[float]], bias: float = 0.0):
        super().__init__()
        w = torch.tensor(weights, dtype=torch.float64)
        self.single = w.dim() == 1
        self.W = nn.Parameter(w.reshape(-1, w.shape[-1]))
        self.b = nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.W.T + self.b
        return y[:, 0] if self.single else y


def frame(rows: int = 60, seed: int = 3, scales: tuple[float, ...] = (1.0, 2.0, 0.5),
          names: tuple[str, ...] = ("a", "b", "c")) -> pd.DataFrame:
    """Normal columns with different scales (so the stds differ), float64."""
    generator = np.random.default_rng(seed)
    return pd.DataFrame({n: generator.normal(i, s, rows)
                         for i, (n, s) in enumerate(zip(names, scales, strict=True))})


def export(model: nn.Module, path: Path, n_features: int) -> Path:
    rows = torch.export.Dim("rows", min=1)
    program = torch.export.export(model, (torch.zeros(4, n_features, dtype=torch.float64),),
                                  dynamic_shapes=({0: rows},))
    torch.export.save(program, str(path))
    return path


def write_setup(tmp: Path, model: nn.Module, data: pd.DataFrame, audit: dict[str, Any],
                *, data_extra: dict[str, Any] | None = None) -> Path:
    """model.pt2, data.csv and audit.yaml (reports to tmp/out) in ``tmp``; the config path."""
    export(model, tmp / "model.pt2", data.shape[1] - (1 if "id" in data.columns else 0))
    data.to_csv(tmp / "data.csv", index=False)
    config = {"model": {"path": "model.pt2"},
              "data": {"path": "data.csv", **(data_extra or {})},
              "audit": audit, "report": {"dir": "out"}}
    path = tmp / "audit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_cli(config: Path) -> tuple[int, dict[str, Any]]:
    """``sensaudit run CONFIG --quiet``: the exit code and summary.json."""
    result = CliRunner().invoke(app, ["run", str(config), "--quiet"])
    assert result.exit_code in (0, 1), result.output
    summary = json.loads((config.parent / "out" / "summary.json").read_text())
    return result.exit_code, summary


def check_result(result: Any, name: str) -> Any:
    """The CheckResult named ``name`` in an AuditResult."""
    return next(c for c in result.checks if c.check == name)
