"""A proxy gate the gradient cannot judge never passes silently (sensaudit/checks/proxy_probe.py):
planted blind proxies (detach, steps, a constant column) fail or warn with the reason, through
the Python API and the CLI; smooth models of several kinds never trigger the probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from models import save_exported
from torch import nn
from typer.testing import CliRunner

from sensaudit.api import audit_frame
from sensaudit.checks.proxies import ProxyLimits
from sensaudit.checks.proxy_probe import SAMPLE_ROWS
from sensaudit.cli.app import app
from sensaudit.methods.base import Attributions
from sensaudit.settings.sections import ProxyLimit

ROWS = 400


def _frame(seed: int = 0, rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "clarity": rng.normal(0.0, 1.0, rows),
        "length": rng.lognormal(4.0, 0.5, rows),
        "proxy": rng.uniform(0.0, 1.0, rows),
        "region": np.full(rows, 3.0),  # constant in the audited rows
    })


class _Planted(nn.Module):
    """clarity + 0.02 length + a term in ``proxy`` (or ``region``) the gradient cannot see:
    it moves the score by about 100 per unit of the feature."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = x[:, 0] + 0.02 * x[:, 1]
        p = x[:, 2]
        if self.kind == "detach":
            return smooth + 100 * p.detach()
        if self.kind == "step":
            return smooth + (p > 0.5).to(x.dtype) * 100
        if self.kind == "round":
            return smooth + torch.round(p) * 100
        if self.kind == "floor":
            return smooth + torch.floor(p * 4) * 25
        if self.kind == "sign":
            return smooth + torch.sign(p - 0.5) * 50
        if self.kind == "constant":
            return smooth + 100 * x[:, 3]
        if self.kind == "constant_unused":
            return smooth + 0.0 * x[:, 3]
        return smooth + 0.5 * p  # "smooth": the gradient sees the proxy


def _proxy(kind: str) -> str:
    return "region" if kind.startswith("constant") else "proxy"


@pytest.mark.parametrize("kind", ["detach", "step", "round", "floor", "sign", "constant"])
def test_a_blind_proxy_fails_its_gate_with_the_reason(kind):
    result = audit_frame(_Planted(kind), _frame(),
                         proxies=[ProxyLimit(feature=_proxy(kind), max_share=0.15)])
    assert not result.passed
    (gate,) = [g for g in result.gates.all if g.check == "proxy_limits"]
    assert not gate.passed and "cannot judge" in gate.limit
    # The gradient's share says ~0; the finite step says the proxy is most of the score.
    assert gate.details["share"] < 0.01
    assert gate.details["probe_share"] > 0.5
    (finding,) = [f for c in result.checks if c.check == "proxy_limits" for f in c.findings]
    assert "cannot be judged" in finding
    if kind == "constant":
        assert "constant in the audited rows" in finding and "cannot judge: region is " \
            "constant" in gate.limit
    else:
        assert "the gradient cannot see it" in finding
        assert gate.details["gradient_predicts"] < 0.1 * gate.details["score_change"]


def test_a_visible_proxy_and_an_unused_constant_one_are_judged_as_before():
    smooth = audit_frame(_Planted("smooth"), _frame(),
                         proxies=[ProxyLimit(feature="proxy", max_share=0.15)])
    assert smooth.passed and not any(w.check == "proxy_limits" for w in smooth.gates.warnings)
    (gate,) = smooth.gates.all
    assert gate.limit == "share <= 15%" and "probe_share" not in gate.details
    # Constant and unused: the score does not move, but the data still cannot judge it.
    unused = audit_frame(_Planted("constant_unused"), _frame(),
                         proxies=[ProxyLimit(feature="region", max_share=0.15)])
    assert unused.passed
    (gate,) = unused.gates.all
    assert gate.limit == "share <= 15%; not judged: region is constant in the audited rows"
    (warning,) = [w for w in unused.gates.warnings if w.check == "proxy_limits"]
    assert warning.subject == "region"
    assert warning.details["not_judged"] == "constant in the audited rows"
    texts = [f for c in unused.checks if c.check == "proxy_limits" for f in c.findings]
    assert any("cannot be judged from this data" in t for t in texts)


def test_a_group_with_a_blind_member_cannot_pass(tmp_path):
    from sensaudit.settings.checks import FeatureGroup
    from sensaudit.settings.sections import AuditSettings

    settings = AuditSettings(groups=(FeatureGroup(name="size", columns=("length", "proxy")),),
                             proxies=(ProxyLimit(feature="size", max_share=0.9),))
    result = audit_frame(_Planted("step"), _frame(), settings=settings)
    (gate,) = [g for g in result.gates.all if g.subject == "size"]
    assert not gate.passed and "the gradient does not see proxy" in gate.limit


def _mlp(act: type[nn.Module], depth: int, seed: int, n: int, trained: bool,
         frame: pd.DataFrame) -> nn.Module:
    torch.manual_seed(seed)
    x = torch.tensor(frame.to_numpy())
    mean, std = x.mean(0), x.std(0)
    layers: list[nn.Module] = []
    width = n
    for _ in range(depth):
        layers += [nn.Linear(width, 12), act()]
        width = 12
    net = nn.Sequential(*layers, nn.Linear(width, 1)).double()

    class Standardised(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - mean) / std).squeeze(1)

    model = Standardised()
    if trained:  # a few steps towards a smooth target: weights no longer at their init
        target = torch.sin(((x - mean) / std) @ torch.linspace(-1, 1, n, dtype=torch.float64))
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(60):
            opt.zero_grad()
            ((model(x) - target) ** 2).mean().backward()
            opt.step()
    return model.eval()


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid])
@pytest.mark.parametrize("depth,seed,trained", [(1, 0, False), (2, 1, True), (3, 2, False)])
def test_smooth_models_never_trigger_the_probe(act, depth, seed, trained):
    # Counts, skewed and 0/1 columns as well as normal ones, all declared proxies with a limit
    # nothing can break: only the probe could fail a gate.
    rng = np.random.default_rng(100 + seed)
    frame = pd.DataFrame({
        "normal": rng.normal(5.0, 2.0, 300),
        "skewed": rng.lognormal(2.0, 1.0, 300),
        "count": rng.poisson(2.0, 300).astype(float),
        "flag": (rng.uniform(size=300) < 0.2).astype(float),
    })
    model = _mlp(act, depth, seed, 4, trained, frame)
    result = audit_frame(model, frame,
                         proxies=[ProxyLimit(feature=c, max_share=1.0) for c in frame.columns])
    assert result.passed, [g.limit for g in result.gates.flags]
    assert not [w for w in result.gates.warnings if w.check == "proxy_limits"]


def test_the_sample_is_the_same_however_the_rows_are_split():
    x = torch.randn(1000, 3, dtype=torch.float64)
    rows = np.arange(1, 1001)
    scores = torch.zeros(1000, 1, dtype=torch.float64)
    scores[::7] = float("nan")  # rows the statistics leave out are never probed
    values = torch.zeros(1000, 1, 3, dtype=torch.float64)

    def check() -> ProxyLimits:
        return ProxyLimits((ProxyLimit(feature="a", max_share=0.5),))

    whole = check()
    whole.update(rows, x, Attributions(scores=scores, values=values), None)
    parts = [check() for _ in range(3)]
    for part, idx in zip(parts, np.array_split(np.arange(1000), 3), strict=True):
        part.update(rows[idx], x[idx], Attributions(scores=scores[idx], values=values[idx]),
                    None)
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    kept_whole, kept_parts = whole.sample.values, parts[2].sample.values
    assert kept_whole is not None and kept_parts is not None
    assert np.array_equal(kept_whole, kept_parts) and len(kept_whole) == SAMPLE_ROWS
    kept = {tuple(r) for r in kept_whole.tolist()}
    assert not kept & {tuple(r) for r in x[::7].tolist()}


@pytest.fixture(scope="module")
def cli_assets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("blind")
    for kind in ("detach", "step", "constant", "smooth"):
        save_exported(_Planted(kind), folder / f"{kind}.pt2", n_features=4,
                      dtype=torch.float64)
    frame = _frame(seed=3, rows=200)
    frame.insert(0, "ad_id", [f"ad{i:03d}" for i in range(len(frame))])
    frame.to_csv(folder / "eval.csv", index=False)
    return folder


@pytest.mark.parametrize("kind", ["detach", "step", "constant", "smooth"])
def test_the_cli_exits_1_on_a_blind_proxy(cli_assets, tmp_path, kind):
    proxy = _proxy(kind)
    config = tmp_path / "audit.yaml"
    config.write_text(f"model:\n  path: {cli_assets / f'{kind}.pt2'}\n"
                      f"data:\n  path: {cli_assets / 'eval.csv'}\n  id: ad_id\n"
                      f"audit:\n  proxies:\n    - feature: {proxy}\n      max_share: 0.15\n"
                      f"report:\n  dir: {tmp_path / 'out'}\n", encoding="utf-8")
    run = CliRunner().invoke(app, ["run", str(config), "--quiet"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    report = (tmp_path / "out" / "report.md").read_text()
    if kind == "smooth":
        assert run.exit_code == 0, run.output
        assert "cannot judge" not in run.output and "cannot judge" not in report
        return
    assert run.exit_code == 1, run.output
    assert f"FAILED {proxy}" in run.output and "cannot judge" in run.output
    (flag,) = summary["flags"]
    assert flag["feature"] == proxy and flag["probe_share"] > 0.5
    assert "cannot be judged" in report


class _HalfSeen(nn.Module):
    """The proxy moves the score by 100 per unit, half of it through detach(): the gradient
    share sees half the effect (the other half could hide a gate's failure)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] + 0.02 * x[:, 1] + 50 * x[:, 2] + 50 * x[:, 2].detach()


def test_a_proxy_the_gradient_sees_only_in_part_cannot_pass():
    result = audit_frame(_HalfSeen(), _frame(),
                         proxies=[ProxyLimit(feature="proxy", max_share=0.99)])
    (gate,) = result.gates.all
    assert not gate.passed and "cannot judge" in gate.limit
    assert gate.details["gradient_misses"] == pytest.approx(gate.details["gradient_predicts"],
                                                            rel=0.01)


class _Overstated(nn.Module):
    """100 per unit of the proxy that the gradient sees, 80 taken back through detach(): the
    gradient overstates the effect, so its share errs towards failing the gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] + 0.02 * x[:, 1] + 100 * x[:, 2] - 80 * x[:, 2].detach()


def test_a_gradient_that_overstates_the_proxy_is_judged_as_usual():
    result = audit_frame(_Overstated(), _frame(),
                         proxies=[ProxyLimit(feature="proxy", max_share=0.99)])
    (gate,) = result.gates.all
    assert gate.passed and gate.limit == "share <= 99%"
