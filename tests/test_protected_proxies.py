"""audit.protected (checks/protected_proxies.py): inputs, groups and a linear combination that
stand in for a protected column, judged by association and influence with intervals.

The data plant the answer: a linear scorer y = w.x (gradient w in every row, so each input's
share is |w_j| std_j / sum_k |w_k| std_k) over

- ``proxy`` = sex + noise, which the model leans on: associated and influential, flagged;
- ``ignored`` = sex + noise, which the model does not read: associated, share 0, not flagged;
- ``income``, independent of sex, which the model leans on most: not associated, not flagged;
- ``noise``: neither.

The association is checked against closed forms computed here with numpy (Pearson's r, the
correlation ratio, the multiple correlation from a least-squares fit, each shrunk by Ezekiel's
adjustment), and the combination's influence against the directional derivative of w.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers_bad import cli
from models import Linear, save_exported

import sensaudit
from sensaudit.checks.protected_proxies import COMBINATION
from sensaudit.core.errors import ConfigError
from sensaudit.settings.checks import FeatureGroup, ProtectedSettings
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.comoments import CoMoments

ROWS = 600
FEATURES = ["proxy", "ignored", "income", "noise"]
W = torch.tensor([2.0, 0.0, 1.5, 0.1], dtype=torch.float64)


def _frame(seed: int = 0, rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, rows).astype(float)
    return pd.DataFrame({
        "proxy": sex + 0.3 * rng.normal(size=rows),
        "ignored": sex + 0.3 * rng.normal(size=rows),
        "income": rng.normal(size=rows),
        "noise": rng.normal(size=rows),
        "sex": sex,
        # region: its level shifts income (the model's strongest input) by level
        "region": rng.choice(np.array(["north", "south", "west"]), rows),
    }).assign(income=lambda f: f["income"] + f["region"].map(
        {"north": -1.0, "south": 0.0, "west": 1.0}))


def _audit(frame: pd.DataFrame, **options):
    settings = AuditSettings(protected=ProtectedSettings(**{"columns": ("sex",), **options}))
    return _run(frame, settings)


def _run(frame: pd.DataFrame, settings: AuditSettings, features=FEATURES, w=W):
    result = sensaudit.audit_frame(Linear(w, n_features=len(features)), frame,
                                   features=list(features), settings=settings)
    check = next(c for c in result.checks if c.check == "protected_proxies")
    return result, check, check.tables["protected_proxies.csv"]


def _row(table: pd.DataFrame, protected: str, candidate: str) -> pd.Series:
    found = table[(table["protected"] == protected) & (table["candidate"] == candidate)]
    assert len(found) == 1, (protected, candidate, table)
    return found.iloc[0]


def _shrunk(squared: float, n: int, m: int) -> float:
    """Ezekiel's adjusted correlation for m fitted dimensions."""
    return math.sqrt(max(0.0, 1 - (1 - squared) * (n - 1) / (n - m - 1)))


def _fisher(value: float, n: int, m: int) -> tuple[float, float]:
    spread = 1.959963984540054 / math.sqrt(n - m - 2)
    centre = math.atanh(value)
    return max(0.0, math.tanh(centre - spread)), math.tanh(centre + spread)


# --- the planted proxy ---------------------------------------------------------------------------


def test_the_planted_proxy_is_flagged_and_the_others_are_not():
    frame = _frame()
    result, check, table = _audit(frame)
    verdict = {r.candidate: bool(r.flagged) for r in table.itertuples()}
    assert verdict == {"proxy": True, "ignored": False, "income": False, "noise": False,
                       COMBINATION: True}
    assert not result.passed
    failed = [g.subject for g in check.gates if not g.passed]
    assert failed == ["proxy", COMBINATION]
    # Why each is not flagged: ignored is associated but carries no share; income carries the
    # most share but is not associated.
    ignored, income = _row(table, "sex", "ignored"), _row(table, "sex", "income")
    assert ignored["association_low"] > 0.8 and ignored["share_high"] == 0.0
    assert income["share_low"] > 0.4 and income["association_low"] < 0.3


def test_association_and_its_interval_are_pearson_shrunk_with_fisher_z():
    frame = _frame()
    _, _, table = _audit(frame)
    n = len(frame)
    for feature in FEATURES:
        r = np.corrcoef(frame[feature], frame["sex"])[0, 1]
        expected = _shrunk(r**2, n, 1)
        row = _row(table, "sex", feature)
        assert row["measure"] == "|Pearson r|"
        assert row["association"] == pytest.approx(expected, abs=1e-9)
        low, high = _fisher(expected, n, 1)
        assert (row["association_low"], row["association_high"]) == pytest.approx(
            (low, high), abs=1e-9)


def test_shares_are_the_rankings_and_their_interval_holds_them():
    frame = _frame()
    result, _, table = _audit(frame)
    std = frame[FEATURES].std(ddof=1).to_numpy()
    scaled = np.abs(W.numpy()) * std
    for j, feature in enumerate(FEATURES):
        row = _row(table, "sex", feature)
        assert row["share"] == pytest.approx(scaled[j] / scaled.sum(), abs=1e-9)
        ranked = result.table.set_index("feature").loc[feature, "share"]
        assert row["share"] == pytest.approx(ranked, abs=1e-9)
        assert row["share_low"] <= row["share"] <= row["share_high"]


def test_the_combination_is_the_regression_direction_and_its_directional_share():
    frame = _frame()
    _, _, table = _audit(frame)
    x = frame[FEATURES].to_numpy()
    design = np.column_stack([np.ones(len(x)), x])
    beta, *_ = np.linalg.lstsq(design, frame["sex"].to_numpy(), rcond=None)
    fitted = design @ beta
    r2 = np.corrcoef(fitted, frame["sex"])[0, 1] ** 2
    row = _row(table, "sex", COMBINATION)
    assert row["measure"] == "multiple correlation R"
    assert row["association"] == pytest.approx(_shrunk(r2, len(x), len(FEATURES)), abs=1e-9)
    # u: the regression weights in standardized units, unit length; a linear model's scaled
    # gradient is w_j std_j in every row, so the RMS along u is |sum_j w_j std_j u_j|.
    std = x.std(0, ddof=1)
    u = beta[1:] * std
    u /= np.linalg.norm(u)
    scaled = W.numpy() * std
    expected = abs(scaled @ u) / np.abs(scaled).sum()
    assert row["share"] == pytest.approx(expected, abs=1e-9)
    weights = dict(part.rsplit(" ", 1) for part in row["weights"].split(", "))
    assert float(weights["proxy"]) == pytest.approx(u[0], abs=0.006)


def test_a_text_protected_column_uses_the_correlation_ratio():
    frame = _frame()
    _, check, table = _audit(frame, columns=("region",))
    n = len(frame)
    income = frame["income"]
    between = frame.groupby("region")["income"].apply(
        lambda g: len(g) * (g.mean() - income.mean()) ** 2).sum()
    eta2 = between / ((income - income.mean()) ** 2).sum()
    row = _row(table, "region", "income")
    assert row["measure"] == "eta"
    assert row["association"] == pytest.approx(_shrunk(eta2, n, 2), abs=1e-9)
    assert bool(row["flagged"])  # income's level shift makes it a proxy for region
    assert not _row(table, "region", "proxy")["flagged"]
    assert "text, 3 levels" in check.summary["protected_columns"]["region"]


def test_a_protected_column_that_is_a_model_input_is_its_own_proxy():
    frame = _frame().assign(sex_input=lambda f: f["sex"])
    features = [*FEATURES, "sex"]
    w = torch.tensor([0.0, 0.0, 1.0, 0.1, 1.0], dtype=torch.float64)
    settings = AuditSettings(protected=ProtectedSettings(columns=("sex",)))
    _, _, table = _run(frame, settings, features=features, w=w)
    row = _row(table, "sex", "sex")
    assert row["association"] == pytest.approx(1.0) and bool(row["flagged"])
    assert not _row(table, "sex", "proxy")["flagged"]  # associated, but unused now


def test_no_proxy_passes_with_one_gate_per_protected_column():
    frame = _frame()
    w = torch.tensor([0.0, 0.0, 1.5, 0.1], dtype=torch.float64)
    settings = AuditSettings(protected=ProtectedSettings(columns=("sex", "region"),
                                                         max_association=0.6))
    result, check, table = _run(frame, settings, w=w)
    assert not table["flagged"].any()
    assert [(g.subject, g.passed) for g in check.gates] == [("proxies for sex", True),
                                                            ("proxies for region", True)]


def test_an_allowed_input_passes_with_its_reason_and_leaves_the_combination():
    frame = _frame()
    _, check, table = _audit(frame, allow=(("proxy", "measured on purpose: see ticket 7"),))
    row = _row(table, "sex", "proxy")
    assert bool(row["allowed"]) and not row["flagged"]
    assert row["reason"] == "measured on purpose: see ticket 7"
    section = "\n".join(check.sections["Proxies for protected attributes"])
    assert "allowed: measured on purpose: see ticket 7" in section
    # The combination is fit without the allowed input: 'ignored' carries the association and
    # the model does not read it.
    combination = _row(table, "sex", COMBINATION)
    assert "proxy" not in combination["weights"] and not combination["flagged"]


def test_a_group_is_judged_as_one_candidate():
    frame = _frame()
    groups = (FeatureGroup("sex_like", ("proxy", "ignored")),)
    settings = AuditSettings(protected=ProtectedSettings(columns=("sex",)), groups=groups)
    _, _, table = _run(frame, settings)
    row = _row(table, "sex", "sex_like")
    assert row["candidate_kind"] == "group" and bool(row["flagged"])
    assert row["share"] == pytest.approx(_row(table, "sex", "proxy")["share"], abs=1e-12)


def test_noise_alone_is_not_flagged_at_the_lower_end():
    """A weak association on few rows: the point estimate is over the limit, the interval's
    lower end is not: a warning, not a failed gate."""
    rng = np.random.default_rng(5)
    rows = 60
    sex = rng.integers(0, 2, rows).astype(float)
    frame = pd.DataFrame({"proxy": 0.8 * sex + rng.normal(size=rows),
                          "ignored": rng.normal(size=rows), "income": rng.normal(size=rows),
                          "noise": rng.normal(size=rows), "sex": sex})
    _, check, table = _audit(frame)
    row = _row(table, "sex", "proxy")
    assert row["association"] > 0.3 > row["association_low"]
    assert bool(row["possible"]) and not row["flagged"]
    assert "proxy" in [w.subject for w in check.warnings]
    assert all(g.passed for g in check.gates)


def test_comoments_merge_over_partitions_as_one_pass():
    rng = np.random.default_rng(5)
    values = rng.normal(1e6, 3.0, (200, 3))  # far from zero: precision kept
    single = CoMoments(3)
    single.update(values)
    for k, seed in ((2, 0), (5, 1)):
        owner = np.random.default_rng(seed).integers(0, k, len(values))
        merged = CoMoments(3)
        for part in range(k):
            partial = CoMoments(3)
            partial.update(values[owner == part])
            merged.merge(partial)
        assert merged.rows == single.rows == 200
        np.testing.assert_allclose(merged.mean, values.mean(0), rtol=1e-12)
        np.testing.assert_allclose(merged.scatter, single.scatter, rtol=1e-9)
    np.testing.assert_allclose(single.scatter / 199, np.cov(values.T), rtol=1e-9)


def test_a_list_alone_names_the_columns():
    config = sensaudit.parse_config({"data": {"path": "d.csv"},
                                     "audit": {"protected": ["sex", "age"]}}, source="a.yaml")
    assert config.audit.protected == ProtectedSettings(columns=("sex", "age"))
    with pytest.raises(ConfigError) as err:
        sensaudit.parse_config({"data": {"path": "d.csv"}, "audit": {"protected": "sex"}},
                               source="a.yaml")
    assert str(err.value) == ("a.yaml: audit.protected must be a mapping, or a list of "
                              "columns (got 'sex', a str)")


def test_settings_built_in_python_are_checked():
    with pytest.raises(ConfigError, match="max_share must be"):
        ProtectedSettings(columns=("sex",), max_share=1.5)
    with pytest.raises(ConfigError, match="columns must be a non-empty list"):
        ProtectedSettings()


# --- through the CLI: reports and bad configs ----------------------------------------------------


def _files(tmp_path, audit: dict, frame: pd.DataFrame | None = None):
    frame = _frame() if frame is None else frame
    frame.to_csv(tmp_path / "data.csv", index=False)
    save_exported(Linear(W, n_features=4), tmp_path / "model.pt2", n_features=4,
                  dtype=torch.float64)
    config = {"model": {"path": str(tmp_path / "model.pt2")},
              "data": {"path": str(tmp_path / "data.csv"), "features": FEATURES},
              "audit": audit, "report": {"dir": str(tmp_path / "reports"),
                                         "formats": ["csv", "markdown", "json", "html", "png"]}}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_reports_carry_the_table_the_gate_and_the_chart(tmp_path):
    config = _files(tmp_path, {"protected": {"columns": ["sex", "region"]}})
    result = cli("run", str(config), "--quiet")
    assert result.exit_code == 1, result.stderr
    reports = tmp_path / "reports"
    table = pd.read_csv(reports / "protected_proxies.csv")
    assert set(table.loc[table["flagged"], "candidate"]) == {"proxy", "income", COMBINATION}
    summary = json.loads((reports / "summary.json").read_text())
    flagged = {(r["protected"], r["feature"]) for r in summary["protected_proxies"]}
    assert ("sex", "proxy") in flagged and ("region", "income") in flagged
    assert "Proxies for protected attributes" in (reports / "report.md").read_text()
    assert "proxy: associated with 'sex' by |Pearson r|" in result.stdout + result.stderr
    # One chart per protected column, in the PNGs and embedded in report.html.
    for name in ("sex", "region"):
        assert (reports / f"chart-protected_proxies-{name}.png").stat().st_size > 1000
        assert f"Proxies for the protected column &#x27;{name}&#x27;" in (
            reports / "report.html").read_text()


@pytest.mark.parametrize("audit,message", [
    ({"protected": {"columns": ["gender"]}},
     "column 'gender' named by audit.protected.columns[0] is not in the data"),
    ({"protected": {"columns": ["sex"], "max_share": 1.5}},
     "audit.protected.max_share must be a number from 0 up to (not including) 1 "
     "(got 1.5, a float)"),
    ({"protected": {"columns": ["sex"], "allow": {"proxy": ""}}},
     "audit.protected.allow.proxy must be a reason (non-empty text saying why it is allowed)"),
    ({"protected": {"columns": ["sex"], "allow": {"proxi": "x"}}},
     "audit.protected.allow.proxi: 'proxi' is not an audited feature or group; did you mean "
     "'proxy'?"),
    ({"protected": {"max_share": 0.2}}, "audit.protected.columns must be a non-empty list"),
])
def test_a_bad_protected_setting_is_one_line_and_exit_2(tmp_path, audit, message):
    config = _files(tmp_path, audit)
    result = cli("run", str(config), "--quiet")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr, result.stderr
    assert str(tmp_path) in result.stderr  # the file is named
    assert not (tmp_path / "reports").exists()


def test_a_text_column_with_too_many_levels_fails_unjudged_on_any_split():
    frame = _frame().assign(postcode=[f"p{i % 30}" for i in range(ROWS)])
    settings = AuditSettings(protected=ProtectedSettings(columns=("postcode",), max_levels=20))
    for chunk_rows in (ROWS, 7):  # each chunk of 7 rows has few levels; the whole has 30
        result = sensaudit.audit_frame(Linear(W, n_features=4), frame, features=FEATURES,
                                       settings=settings, chunk_rows=chunk_rows)
        check = next(c for c in result.checks if c.check == "protected_proxies")
        assert [(g.subject, g.passed) for g in check.gates] == [("proxies for postcode", False)]
        assert check.summary["protected_columns"]["postcode"].startswith(
            "not judged: more than 20 distinct values")
        assert not result.passed


def test_levels_over_the_limit_only_in_the_union_of_partitions_are_caught_by_merge():
    """Two workers each see 15 levels, 30 together: the merged check is not judged either."""
    from sensaudit.checks.protected_proxies import ProtectedProxies
    from sensaudit.methods.base import Attributions

    x = torch.tensor(_frame(rows=60)[FEATURES].to_numpy())
    attributions = Attributions(scores=x @ W[:, None], values=W.expand(60, 1, 4).clone())
    levels = np.array([f"p{i % 30}" for i in range(60)], dtype=object)
    options = ProtectedSettings(columns=("postcode",), max_levels=20)
    merged = ProtectedProxies(options, ())
    for half in (np.arange(60) % 30 < 15, np.arange(60) % 30 >= 15):
        partial = ProtectedProxies(options, ())
        partial.update_columns(np.flatnonzero(half) + 1, x[torch.from_numpy(half)],
                               Attributions(attributions.scores[torch.from_numpy(half)],
                                            attributions.values[torch.from_numpy(half)]),
                               {"postcode": levels[half]})
        assert not partial.columns["postcode"].too_many
        merged.merge(partial)
    assert merged.columns["postcode"].too_many and not merged.columns["postcode"].levels


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_protected_values_are_left_out_and_counted(tmp_path, suffix):
    frame = _frame()
    frame.loc[:4, "sex"] = np.nan
    frame["region"] = frame["region"].astype(object)
    frame.loc[10:12, "region"] = None
    config = _files(tmp_path, {"protected": {"columns": ["sex", "region"]}}, frame)
    data = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(data, index=False)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["path"] = str(data)
    config.write_text(yaml.safe_dump(raw))
    result = cli("run", str(config), "--quiet")
    assert result.exit_code == 1, result.stderr
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    columns = summary["protected_columns"]
    assert columns["sex"] == "ran on 595 rows (numeric, 5 without a value left out)"
    assert columns["region"] == "ran on 597 rows (text, 3 levels, 3 without a value left out)"


def test_more_inputs_than_the_covariance_limit_fail_unjudged():
    from sensaudit.settings.checks import MAX_COMBINED_FEATURES

    rng = np.random.default_rng(2)
    width = MAX_COMBINED_FEATURES + 1
    names = [f"x{j}" for j in range(width)]
    frame = pd.DataFrame(rng.normal(size=(40, width)), columns=names).assign(
        sex=rng.integers(0, 2, 40).astype(float))
    settings = AuditSettings(protected=ProtectedSettings(columns=("sex",)))
    result, check, table = _run(frame, settings, features=names,
                                w=torch.ones(width, dtype=torch.float64))
    assert table.empty and not result.passed
    assert [(g.subject, g.passed) for g in check.gates] == [("proxies for sex", False)]
    assert check.summary["protected_columns"]["sex"] == (
        f"not judged: {width} inputs, more than {MAX_COMBINED_FEATURES} (the check keeps their "
        "covariance)")
