"""Bad values for the checks' audit keys (threshold, groups, expect, robustness, linearity,
layer_health): exit 2, one ``Error:`` line naming the config file and the dotted key, and no
report written, as tests/test_bad_inputs.py checks for the other keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_bad import Scorer, cli_error, config, export, write_config, write_csv

CASES = [
    ({"audit": {"threshold": "high"}},
     "audit.threshold must be a number (the decision threshold on the score) or null "
     "(got 'high', a str)"),
    ({"audit": {"threshold": float("inf")}},
     "audit.threshold must be a number (the decision threshold on the score) or null "
     "(got inf, a float)"),
    ({"audit": {"groups": ["a", "b"]}},
     "audit.groups must be a mapping (got ['a', 'b'], a list)"),
    ({"audit": {"groups": {"ab": "a"}}},
     "audit.groups.ab must be a list of feature names or {kind, columns} (got 'a', a "
     "str)"),
    ({"audit": {"groups": {"ab": ["a"]}}},
     "audit.groups.ab must be a list of at least 2 feature names (got ['a'], a list)"),
    ({"audit": {"groups": {"ab": ["a", "a"]}}},
     "audit.groups.ab lists 'a' more than once"),
    ({"audit": {"groups": {"ab": {"columns": ["a", "b"], "kind": "onehot"}}}},
     "audit.groups.ab.kind must be one of plain, one_hot (got 'onehot', a str)"),
    ({"audit": {"groups": {"ab": {"cols": ["a", "b"]}}}},
     "unknown key 'cols' in audit.groups.ab; did you mean 'columns'? (allowed: columns, "
     "kind)"),
    ({"audit": {"groups": {"ab": {"columns": ["a"], "kind": "one_hot"}}}},
     "audit.groups.ab.columns must be a list of at least 2 feature names (got ['a'], a "
     "list)"),
    ({"audit": {"groups": {"ab": ["a", "bb"]}}},
     "audit.groups.ab lists 'bb', which is not an audited feature; did you mean 'b'? "
     "(features: a, b, c)"),
    ({"audit": {"groups": {"a": ["b", "c"]}}},
     "audit.groups.a: the group's name is also a feature's; name the group differently"),
    ({"audit": {"groups": {"ab": ["a", "b"], "bc": ["b", "c"]}}},
     "audit.groups.bc lists 'b', which is in group 'ab' already"),
    ({"audit": {"expect": {"feature": "a"}}},
     "audit.expect must be a list of {feature, direction, max_violation_rate} (got "
     "{'feature': 'a'}, a dict)"),
    ({"audit": {"expect": [{"feature": "a"}]}},
     "missing required key 'audit.expect[0].direction'"),
    ({"audit": {"expect": [{"feature": "a", "direction": "up"}]}},
     "audit.expect[0].direction must be one of increasing, decreasing (got 'up', a str)"),
    ({"audit": {"expect": [{"feature": "a", "direction": "increasing", "max_violation_rate": 2}]}},
     "audit.expect[0].max_violation_rate must be a number in [0, 1] (got 2, an int)"),
    ({"audit": {"expect": [{"feature": "a", "direction": "increasing", "max_violations": 0.1}]}},
     "unknown key 'max_violations' in audit.expect[0]; did you mean "
     "'max_violation_rate'? (allowed: feature, direction, max_violation_rate)"),
    ({"audit": {"expect": [{"feature": "aa", "direction": "increasing"}]}},
     "audit.expect[0].feature 'aa' is not an audited feature; did you mean 'a'? "
     "(features: a, b, c)"),
    ({"audit": {"expect": [{"feature": "a", "direction": "increasing"},
                           {"feature": "a", "direction": "decreasing"}]}},
     "audit.expect[1].feature 'a' has an expectation already"),
    ({"audit": {"robustness": {"epsilon": 0}}},
     "audit.robustness.epsilon must be a number > 0 (got 0, an int)"),
    ({"audit": {"robustness": {"epsilon": "0.1"}}},
     "audit.robustness.epsilon must be a number > 0 (got '0.1', a str)"),
    ({"audit": {"robustness": {"steps": 0}}},
     "audit.robustness.steps must be an integer from 1 to 1000 (got 0, an int)"),
    ({"audit": {"robustness": {"steps": 5000}}},
     "audit.robustness.steps must be an integer from 1 to 1000 (got 5000, an int)"),
    ({"audit": {"robustness": {"bounds": "data"}}},
     "audit.robustness.bounds must be one of observed, none (got 'data', a str)"),
    ({"audit": {"robustness": {"immutable": "a"}}},
     "audit.robustness.immutable must be a non-empty list of names (got 'a', a str)"),
    ({"audit": {"robustness": {"immutable": ["zz"]}}},
     "audit.robustness.immutable[0] 'zz' is not an audited feature or group (features: "
     "a, b, c)"),
    ({"audit": {"robustness": {"max_shift": -1}}},
     "audit.robustness.max_shift must be a number >= 0 or null (got -1, an int)"),
    ({"audit": {"robustness": {"epsilon": 0.1, "max_shfit": 0.1}}},
     "unknown key 'max_shfit' in audit.robustness; did you mean 'max_shift'? (allowed: "
     "epsilon, steps, bounds, immutable, max_shift)"),
    ({"audit": {"robustness": [0.1]}},
     "audit.robustness must be a mapping (got [0.1], a list)"),
    ({"audit": {"linearity": {"step": -1}}},
     "audit.linearity.step must be a number > 0 (got -1, an int)"),
    ({"audit": {"linearity": {"tolerance": 0}}},
     "audit.linearity.tolerance must be a number in (0, 1] (got 0, an int)"),
    ({"audit": {"linearity": {"max_off_rate": 1.5}}},
     "audit.linearity.max_off_rate must be a number in [0, 1] (got 1.5, a float)"),
    ({"audit": {"linearity": {"gate": "yes"}}},
     "audit.linearity.gate must be true or false (got 'yes', a str)"),
    ({"audit": {"layer_health": {"max_ratio": 1}}},
     "audit.layer_health.max_ratio must be a number > 1 (got 1, an int)"),
    ({"audit": {"layer_health": {"max_ratio": 10, "gate": 1}}},
     "audit.layer_health.gate must be true or false (got 1, an int)"),
    ({"audit": {"checks": {"robustness": {"epsilon": 0.1}}}},
     "audit.checks.robustness: this check is configured with audit.robustness, not in "
     "audit.checks"),
    ({"audit": {"groups": {"ab": ["a", "b"]}, "proxies": [{"feature": "abc", "max_share": 0.2}]}},
     "audit.proxies[0].feature 'abc' is not an audited feature or group; did you mean "
     "'ab'? (features: a, b, c; groups: ab)"),
]


@pytest.mark.parametrize("sections, expected", CASES)
def test_bad_check_settings(tmp_path: Path, sections, expected):
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, **sections))
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"
    assert not (tmp_path / "reports").exists()


def test_a_check_with_its_own_key_is_refused_in_audit_checks_through_the_library():
    import sensaudit
    from sensaudit.settings.sections import AuditSettings

    settings = AuditSettings(checks={"monotonicity": {}})
    with pytest.raises(sensaudit.ConfigError) as err:
        sensaudit.audit_frame(Scorer().double(), _frame(), settings=settings)
    assert str(err.value) == ("<DataFrame>: audit.checks.monotonicity: this check is "
                              "configured with audit.expect, not in audit.checks")


@pytest.mark.parametrize("build, expected", [
    (lambda s: s.RobustnessSettings(epsilon=-1),
     "RobustnessSettings: epsilon must be a number > 0 (got -1, an int)"),
    (lambda s: s.RobustnessSettings(steps=0),
     "RobustnessSettings: steps must be an integer from 1 to 1000 (got 0, an int)"),
    (lambda s: s.Expectation("a", "up"),
     "Expectation('a'): direction must be one of increasing, decreasing (got 'up', a str)"),
    (lambda s: s.FeatureGroup("g", ("a",)),
     "FeatureGroup('g'): columns must be at least 2 distinct feature names (got ('a',), a "
     "tuple)"),
    (lambda s: s.LinearitySettings(tolerance=0),
     "LinearitySettings: tolerance must be a number in (0, 1] (got 0, an int)"),
    (lambda s: s.LayerHealthSettings(max_ratio=0.5),
     "LayerHealthSettings: max_ratio must be a number > 1 (got 0.5, a float)"),
])
def test_settings_built_in_python_are_checked(build, expected):
    import sensaudit
    from sensaudit.settings import checks as config_checks

    with pytest.raises(sensaudit.ConfigError) as err:
        build(config_checks)
    assert str(err.value) == expected


def _frame():
    import pandas as pd

    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 2.0], "c": [3.0, 1.0, 0.0]})
