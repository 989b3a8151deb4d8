"""The proxy probe's power and false-alarm rate (sensaudit/checks/proxy_probe.py), on data this
project did not generate for the probe.

Each verdict is the probe's own decision (``proxy_probe.probe`` on the rows ``ProbeSample``
keeps, with the shares the gradient ranking gives), without the rest of the audit, so that
thousands of models run in minutes; ``--pipeline`` runs every verdict through ``audit_frame``
instead (the same decisions; tests/test_proxy_probe.py checks the wiring).

Data: the matplotlib sample files msft.csv (daily prices and volume) and Stocks.csv (monthly
prices of 10 tickers, rows with a gap dropped), the project's ad-copy eval extract (counts,
0/1 flags, ratios), and a torch-generated log-normal/uniform/Bernoulli mix.

Smooth models: MLPs (tanh, ReLU, GELU, sigmoid; 1 or 2 hidden layers of 16; seeds 0-1), random
or trained for 200 Adam steps on a random teacher's output, each taking its inputs standardised
(as a trained scorer would) or raw. Every feature is declared a proxy with ``max_share: 1.0``,
so a failed gate can only be the probe's "cannot judge"; a false alarm is such a gate, or a
constant-data warning, on a smooth model.

Power: the same smooth models plus a blind term on one feature, of size ``s`` x the smooth
model's score std (s = 1 and 0.1): ``detach``, a step at the mean or at +1 std, ``round``,
``floor`` of 2z, ``sign``, and a smooth term on a column made constant in the audited rows;
each also "pure", with the smooth model not seeing that feature (only the blind term does).

    PYTHONPATH=. python benchmarks/proxy_probe.py
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from torch import nn

from sensaudit.api import audit_frame
from sensaudit.checks.proxy_probe import ProbeSample, probe
from sensaudit.core.jacobian import scores_and_jacobian
from sensaudit.settings.sections import ProxyLimit

ROOT = Path(__file__).resolve().parents[1]
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def datasets() -> dict[str, pd.DataFrame]:
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    msft = pd.read_csv(sample / "msft.csv").drop(columns=["Date"])
    stocks = pd.read_csv(sample / "Stocks.csv", comment="#").drop(columns=["Date"]).dropna()
    ads = pd.read_csv(ROOT / "sensaudit/sample/sample_data" / "ad_copy_eval.csv").drop(
        columns=["ad_id", "quality"]).head(1000)
    g = torch.Generator().manual_seed(123)
    mixed = pd.DataFrame({
        "lognormal": torch.randn(800, generator=g, dtype=torch.float64).exp().numpy() * 50,
        "uniform": torch.rand(800, generator=g, dtype=torch.float64).numpy(),
        "flag": (torch.rand(800, generator=g) < 0.3).double().numpy(),
        "count": torch.poisson(torch.full((800,), 3.0), generator=g).double().numpy(),
        "normal": torch.randn(800, generator=g, dtype=torch.float64).numpy() * 4 + 10,
    })
    frames = {"msft": msft, "stocks": stocks, "ad_copy": ads, "mixed": mixed}
    return {k: v.astype("float64").reset_index(drop=True) for k, v in frames.items()}


class Scorer(nn.Module):
    """An MLP on (optionally standardised) inputs, plus an optional blind term."""

    def __init__(self, n: int, act: str, depth: int, seed: int, mean: torch.Tensor,
                 std: torch.Tensor, standardise: bool):
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = n
        for _ in range(depth):
            layers += [nn.Linear(width, 16), ACTIVATIONS[act]()]
            width = 16
        self.net = nn.Sequential(*layers, nn.Linear(width, 1)).double()
        self.register_buffer("mean", mean if standardise else torch.zeros_like(mean))
        self.register_buffer("std", std if standardise else torch.ones_like(std))
        self.blind: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.hidden: int | None = None  # a column the smooth part does not see (pure blind)

    def z(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.z(x)
        if self.hidden is not None:
            z = torch.cat([z[:, :self.hidden], torch.zeros_like(z[:, :1]),
                           z[:, self.hidden + 1:]], 1)
        y = self.net(z).squeeze(1)
        return y if self.blind is None else y + self.blind(x)


def train(model: Scorer, x: torch.Tensor, seed: int) -> None:
    teacher = Scorer(x.shape[1], "tanh", 2, seed + 1000, model.mean, model.std, True)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(model.net.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()


def blind_terms(j: int, z: Callable[[torch.Tensor], torch.Tensor], size: float
                ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    return {
        "detach": lambda x: size * z(x.detach())[:, j],
        "step_mean": lambda x: size * (z(x)[:, j] > 0).double(),
        "step_tail": lambda x: size * (z(x)[:, j] > 1).double(),
        "round": lambda x: size * torch.round(z(x)[:, j]),
        "floor": lambda x: size * torch.floor(2 * z(x)[:, j]) / 2,
        "sign": lambda x: size * torch.sign(z(x)[:, j]),
    }


PIPELINE = False
SIZES = (1.0, 0.1)  # the blind term's size, in the smooth model's score std


def judged(model: nn.Module, frame: pd.DataFrame) -> dict[str, str]:
    """feature -> 'fail' (cannot judge), 'warn' (constant) or 'pass'."""
    if not PIPELINE:
        return _probed(model, frame)
    proxies = [ProxyLimit(feature=c, max_share=1.0) for c in frame.columns]
    result = audit_frame(model, frame, proxies=proxies)
    out = {c: "pass" for c in frame.columns}
    for gate in result.gates.all:
        if gate.check == "proxy_limits" and not gate.passed:
            out[gate.subject] = "fail"
    for notice in result.gates.warnings:
        if notice.check == "proxy_limits" and out[notice.subject] == "pass":
            out[notice.subject] = "warn"
    return out


def _probed(model: nn.Module, frame: pd.DataFrame) -> dict[str, str]:
    x = torch.tensor(frame.to_numpy())
    std = x.std(0)
    _, jacobian = scores_and_jacobian(model, x)
    scaled = jacobian.abs().mean(0) * std  # [outputs, features], as the ranking's
    sample = ProbeSample()
    sample.update(np.arange(1, len(x) + 1), x, torch.ones(len(x), dtype=torch.bool))
    assert sample.x is not None
    found = probe(model, sample.x, {c: j for j, c in enumerate(frame.columns)}, std, scaled,
                  ["score"])
    return {f.feature: "fail" if f.blind else "warn" if f.constant else "pass" for f in found}


def main() -> None:
    global PIPELINE
    PIPELINE = "--pipeline" in sys.argv
    false_gates = gates = false_models = models = 0
    power: dict[tuple[str, float], list[int]] = {}
    alarms = []
    for (name, frame), act, depth, seed, trained, standardise in itertools.product(
            datasets().items(), ACTIVATIONS, (1, 2), range(2), (False, True), (True, False)):
        x = torch.tensor(frame.to_numpy())
        mean, std = x.mean(0), x.std(0)
        model = Scorer(x.shape[1], act, depth, seed, mean, std, standardise)
        if trained:
            train(model, x, seed)
        model.eval()
        verdict = judged(model, frame)
        bad = [f for f, v in verdict.items() if v != "pass"]
        gates += len(verdict)
        false_gates += len(bad)
        models += 1
        false_models += bool(bad)
        if bad:
            alarms.append((name, act, depth, seed, trained, standardise, bad))
            print("  alarm:", alarms[-1], flush=True)
        if not standardise:
            continue  # power on the standardised models (the blind terms are in z units)
        with torch.no_grad():
            score_std = float(model(x).std())
        j = seed % x.shape[1]
        feature = frame.columns[j]
        for size in SIZES:
            for kind, term in blind_terms(j, model.z, size * score_std).items():
                model.blind = term
                power.setdefault((kind, size), []).append(judged(model, frame)[feature] == "fail")
                # Pure: the score reaches the feature through the blind term only.
                model.hidden = j
                power.setdefault((f"{kind} (pure)", size), []).append(
                    judged(model, frame)[feature] == "fail")
                model.hidden = None
            # A column constant in the audited rows, used smoothly by the model.
            model.blind = lambda x, j=j, c=size * score_std: c * model.z(x)[:, j]
            flat = frame.copy()
            flat[feature] = frame[feature].iloc[0]
            power.setdefault(("constant", size), []).append(
                judged(model, flat)[feature] in ("fail", "warn"))
            model.blind = None
        print(f"{models} models, {false_gates}/{gates} false alarms", flush=True)
    print(f"false alarms: {false_gates}/{gates} gates, {false_models}/{models} models")
    raw = [a for a in alarms if not a[5]]
    print(f"  of which on raw (unstandardised) inputs: {sum(len(a[6]) for a in raw)} gates, "
          f"{len(raw)} models")
    for (kind, size), hits in sorted(power.items()):
        print(f"power {kind:10s} size {size:>4} x score std: {sum(hits)}/{len(hits)}")


if __name__ == "__main__":
    main()
