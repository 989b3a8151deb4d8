"""A small audit on disk for the CLI-facing tests: an exported linear scorer, its CSV extract
and a config writer.

The scorer is y = w.x with w = (0.01, 1.0, 0.5) over (length, clarity, noise), so each row's
gradient is w and a feature's scaled sensitivity is |w_j| x std_j: with length ~ N(300, 60),
clarity ~ U(0, 1) and noise ~ N(0, 1), length holds about 40% of the sensitivity, and a
max_share of 0.15 on it fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from models import Linear, MultiOutput, save_exported

FEATURES = ["length", "clarity", "noise"]
WEIGHTS = [0.01, 1.0, 0.5]
ROWS = 60


def write_assets(folder: Path, rows: int = ROWS) -> Path:
    """scorer.pt2, multi.pt2 (2 outputs) and eval.csv (id, features, label) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_exported(Linear(torch.tensor(WEIGHTS), n_features=3), folder / "scorer.pt2",
                  n_features=3, dtype=torch.float64)
    save_exported(MultiOutput(n_features=3, n_outputs=2), folder / "multi.pt2", n_features=3,
                  dtype=torch.float64)
    rng = np.random.default_rng(7)
    pd.DataFrame({
        "ad_id": [f"ad{i:03d}" for i in range(rows)],
        "length": rng.normal(300.0, 60.0, rows).round(3),
        "clarity": rng.uniform(0.0, 1.0, rows).round(4),
        "noise": rng.normal(0.0, 1.0, rows).round(4),
        "quality": rng.integers(0, 2, rows),
    }).to_csv(folder / "eval.csv", index=False)
    return folder


def expected_shares(data: pd.DataFrame) -> dict[str, float]:
    """share_j = |w_j| std_j / sum_k |w_k| std_k (std with ddof=1), from the formula."""
    scaled = {f: abs(w) * data[f].std(ddof=1) for f, w in zip(FEATURES, WEIGHTS, strict=True)}
    total = sum(scaled.values())
    return {f: v / total for f, v in scaled.items()}


def write_config(path: Path, assets: Path, *, max_share: float = 0.15, report: str | None = None,
                 extra: str = "", model: str = "scorer.pt2") -> Path:
    text = (f"model:\n  path: {assets / model}\n"
            f"data:\n  path: {assets / 'eval.csv'}\n  id: ad_id\n  label: quality\n"
            f"audit:\n  proxies:\n    - feature: length\n      max_share: {max_share}\n"
            f"    - feature: noise\n      max_share: 0.9\n{extra}")
    if report is not None:
        text += report
    path.write_text(text, encoding="utf-8")
    return path
