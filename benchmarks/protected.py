"""What ``audit.protected`` costs: the same audit with and without the protected-proxies check,
side by side in one process, taking turns, best of ``--repeats``.

The data: ``--rows`` rows of ``--features`` standard normal inputs, a numeric protected column
(0/1, tracked by the first input) and a text one (4 levels), scored by a two-layer tanh MLP
(float32). Every audit reads the same in-memory DataFrame (``audit_frame``), so the figures
are the audit's own work; the check adds its per-chunk sums (the inputs' covariance with each
protected column, the attributions' outer products, a Poisson bootstrap of the shares: 200
replicates by default, and the same audit with none, to show what the intervals cost).

    PYTHONPATH=. python benchmarks/protected.py                      # 200,000 rows x 32 features
    PYTHONPATH=. python benchmarks/protected.py --rows 50000 --features 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import sensaudit
from sensaudit.settings.checks import ProtectedSettings
from sensaudit.settings.sections import AuditSettings


def _data(rows: int, features: int) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(0)
    names = [f"x{j}" for j in range(features)]
    frame = pd.DataFrame(rng.normal(size=(rows, features)).astype(np.float32), columns=names)
    frame["sex"] = (frame["x0"] + rng.normal(size=rows) > 0).astype(float)
    frame["region"] = rng.choice(np.array(["n", "e", "s", "w"]), rows)
    return frame, names


def _model(features: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(features, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 1)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frame, names = _data(args.rows, args.features)
    model = _model(args.features)
    cases = {
        "without audit.protected": AuditSettings(),
        "audit.protected: [sex, region]": AuditSettings(
            protected=ProtectedSettings(columns=("sex", "region"))),
        # The bootstrap of the shares' intervals is most of the check's cost.
        "the same, bootstrap_samples: 0": AuditSettings(
            protected=ProtectedSettings(columns=("sex", "region"), bootstrap_samples=0)),
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeats):
        for name, settings in cases.items():  # taking turns: drift hits both alike
            start = time.perf_counter()
            sensaudit.audit_frame(model, frame, features=names, settings=settings)
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["without audit.protected"]
    print(f"{args.rows:,} rows x {args.features} features, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats}")
    print("| audit | wall s | vs without |")
    print("|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
