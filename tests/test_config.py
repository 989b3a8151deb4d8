"""sensaudit.config.load: a valid config parses into frozen objects; every bad one gets a one-line
message naming the file, the key, what was expected and what was found."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import sensaudit
from sensaudit import ConfigError, ProxyLimit, load_config, parse_config
from sensaudit.config.sections import audit_keys
from sensaudit.methods import METHODS
from sensaudit.reports import WRITERS
from sensaudit.settings.sections import AuditSettings, CompareSettings

MINIMAL = """\
model:
  path: m.pt2
data:
  path: d.csv
report:
  dir: out
"""

FULL = """\
model:
  path: models/scorer.pt
  class: "mymodels:Scorer"
  class_file: models/mymodels.py
  kwargs: {hidden: 8}
  trust_model_code: false
  output: quality
  output_names: [quality, risk]
  device: cpu
data:
  path: ../extracts/eval.csv
  features: [copy_length, clarity]
  label: quality
  id: ad_id
  on_missing: drop
  chunk_rows: 500
audit:
  proxies:
    - feature: copy_length
      max_share: 0.15
      reason: length is not quality
    - feature: clarity
      max_rank: 2
  dominance_warning: 0.4
  top_k: 2
  examples_in_report: 5
  batch_size: 64
  allow_nonfinite: true
report:
  dir: reports/v1
  formats: [json, csv, json]
"""


def _write(tmp_path: Path, text: str, name: str = "audit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _message(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def test_full_config_parses(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = _write(folder, FULL)
    monkeypatch.chdir(tmp_path)  # paths must not depend on the working directory

    cfg = load_config(path)

    assert cfg.source == path
    assert cfg.model.path == folder / "models/scorer.pt"
    assert cfg.model.class_path == "mymodels:Scorer"
    assert cfg.model.class_file == folder / "models/mymodels.py"
    assert dict(cfg.model.kwargs) == {"hidden": 8}
    assert cfg.model.trust_model_code is False
    assert cfg.model.output == "quality"
    assert cfg.model.output_names == ("quality", "risk")
    assert cfg.model.device == "cpu"
    assert cfg.data.path == tmp_path / "extracts/eval.csv"  # normalised: no ".."
    assert cfg.data.features == ("copy_length", "clarity")
    assert (cfg.data.label, cfg.data.id, cfg.data.on_missing, cfg.data.chunk_rows) == (
        "quality", "ad_id", "drop", 500)
    assert cfg.audit == AuditSettings(
        proxies=(ProxyLimit("copy_length", max_share=0.15, reason="length is not quality"),
                 ProxyLimit("clarity", max_rank=2)),
        dominance_warning=0.4, top_k=2, examples_in_report=5, batch_size=64,
        allow_nonfinite=True)
    assert cfg.report.dir == folder / "reports/v1"
    assert cfg.report.formats == ("json", "csv")  # repeats dropped, order kept
    assert cfg.compare == CompareSettings()


def test_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.model.path == tmp_path / "m.pt2"
    assert (cfg.model.class_path, cfg.model.class_file, cfg.model.trust_model_code,
            cfg.model.output, cfg.model.device) == (None, None, False, None, "auto")
    assert cfg.data.path == tmp_path / "d.csv"
    assert (cfg.data.features, cfg.data.label, cfg.data.id, cfg.data.on_missing,
            cfg.data.chunk_rows) == (None, None, None, "error", 100_000)
    assert cfg.audit == AuditSettings()
    assert cfg.audit.proxies == ()
    assert cfg.report.formats == ("csv", "markdown", "json")


def test_relative_config_path_resolves_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ci"
    folder.mkdir()
    _write(folder, MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("ci/audit.yaml")
    assert cfg.model.path == Path("ci/m.pt2")
    assert cfg.model.path.resolve() == (folder / "m.pt2").resolve()


def test_absolute_paths_are_kept(tmp_path):
    target = tmp_path / "elsewhere" / "m.pt2"
    cfg = load_config(_write(tmp_path, MINIMAL.replace("m.pt2", str(target))))
    assert cfg.model.path == target


def test_config_objects_are_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.trust_model_code = True  # type: ignore[misc]


def test_model_section_optional_when_not_required(tmp_path):
    text = "data:\n  path: d.csv\nreport:\n  dir: out\n"
    assert load_config(_write(tmp_path, text), require_model=False).model is None


def test_parse_config_takes_a_mapping():
    cfg = parse_config({"model": {"path": "m.pt2"}, "data": {"path": "d.csv"},
                        "report": {"dir": "out"}}, base_dir="/srv/audit")
    assert cfg.model.path == Path("/srv/audit/m.pt2")
    assert cfg.source == Path("<config>")


# --- messages ---------------------------------------------------------------------------------


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: config file not found"


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "audit.yaml"
    assert _message(tmp_path, "model: {path: a\ndata: x\n") == (
        f"{path}: invalid YAML at line 2, column 5: expected ',' or '}}', but got ':'")


@pytest.mark.parametrize("text, found", [
    ("- model\n- data\n", "['model', 'data'], a list"),
    ("", "None, a NoneType"),
    ("just text\n", "'just text', a str"),
])
def test_config_not_a_mapping(tmp_path, text, found):
    assert _message(tmp_path, text) == (
        f"{tmp_path / 'audit.yaml'}: the config must be a mapping with sections model, data, "
        f"audit, compare, report (got {found})")


BAD = [
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - feature: copy_length\n      max_shares: 0.1\n",
        "unknown key 'max_shares' in audit.proxies[0]; did you mean 'max_share'? (allowed: "
        "feature, max_share, max_rank, reason)", id="unknown-key-did-you-mean"),
    pytest.param(
        MINIMAL + "audits:\n  top_k: 2\n",
        "unknown key 'audits'; did you mean 'audit'? (allowed: data, report, model, audit, "
        "compare, engine, ray)", id="unknown-top-level-key"),
    pytest.param(
        MINIMAL.replace("report:", "audit:\n  zzz: 1\nreport:"),
        f"unknown key 'zzz' in audit (allowed: {', '.join(audit_keys())})",
        id="unknown-key-no-suggestion"),
    pytest.param(
        "model:\n  path: m.pt2\nreport:\n  dir: out\n",
        "missing required key 'data'", id="missing-data"),
    pytest.param(
        MINIMAL.replace("  path: d.csv", "  label: quality"),
        "missing required key 'data.path'", id="missing-data-path"),
    pytest.param(
        MINIMAL + "audit:\n  batch_size: '64'\n",
        "audit.batch_size must be an integer >= 1 (got '64', a str)", id="batch-size-string"),
    pytest.param(
        MINIMAL + "audit:\n  batch_size: 0\n",
        "audit.batch_size must be an integer >= 1 (got 0, an int)", id="batch-size-zero"),
    pytest.param(
        MINIMAL + "audit:\n  batch_size: true\n",
        "audit.batch_size must be an integer >= 1 (got True, a bool)", id="batch-size-bool"),
    pytest.param(
        MINIMAL + "audit:\n  top_k: 2.5\n",
        "audit.top_k must be an integer >= 1 (got 2.5, a float)", id="top-k-float"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - feature: copy_length\n      max_share: 1.5\n",
        "audit.proxies[0].max_share must be a number in [0, 1] (got 1.5, a float)",
        id="max-share-over-one"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - feature: copy_length\n      max_share: '10%'\n",
        "audit.proxies[0].max_share must be a number in [0, 1] (got '10%', a str)",
        id="max-share-percent-string"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - feature: copy_length\n      max_rank: 0\n",
        "audit.proxies[0].max_rank must be an integer >= 1 (got 0, an int)", id="max-rank-zero"),
    pytest.param(
        MINIMAL + "audit:\n  dominance_warning: .nan\n",
        "audit.dominance_warning must be a number in [0, 1] (got nan, a float)", id="nan"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - {feature: a, max_share: 0.1}\n"
        "    - {feature: a, max_rank: 2}\n",
        "audit.proxies[1].feature 'a' is declared twice", id="duplicate-proxy"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - feature: copy_length\n",
        "audit.proxies[0] needs a limit: max_share, max_rank or both", id="proxy-without-limit"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    feature: copy_length\n",
        "audit.proxies must be a list of {feature, max_share, max_rank} (got {'feature': "
        "'copy_length'}, a dict)", id="proxies-not-a-list"),
    pytest.param(
        MINIMAL + "audit:\n  proxies:\n    - max_share: 0.1\n",
        "missing required key 'audit.proxies[0].feature'", id="proxy-without-feature"),
    pytest.param(
        MINIMAL + "  formats: [csv, pdf]\n",
        f"report.formats[1] must be one of {', '.join(WRITERS)} (got 'pdf', a str)",
        id="bad-report-format"),
    pytest.param(
        MINIMAL + "  formats: csv\n",
        f"report.formats must be a non-empty list drawn from {list(WRITERS)} "
        "(got 'csv', a str)", id="report-formats-not-a-list"),
    pytest.param(
        MINIMAL + "  formats: []\n",
        f"report.formats must be a non-empty list drawn from {list(WRITERS)} "
        "(got [], a list)", id="report-formats-empty"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: m.pt2\n  device: gpu"),
        "model.device must be one of auto, cpu, cuda (got 'gpu', a str)", id="bad-device"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: m.pt2\n  trust_model_code: 'yes'"),
        "model.trust_model_code must be true or false (got 'yes', a str)",
        id="trust-model-code-string"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: m.pt2\n  trust_pickle: true"),
        "unknown key 'trust_pickle' in model; did you mean 'trust_model_code'? (allowed: path, "
        "class, class_file, kwargs, trust_model_code, output, output_names, device, features, "
        "transform)", id="removed-trust-pickle"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: m.pt2\n  class_file: arch.py"),
        "model.class_file needs model.class: the name of the class to build from it",
        id="class-file-without-class"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2",
                        "  path: m.pt2\n  class_file: arch.py\n  class: other:Scorer"),
        "model.class must be the name of a class in model.class_file ('ClassName' or "
        "'arch:ClassName') (got 'other:Scorer', a str)", id="class-file-other-module"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: m.pt2\n  class: mymodels.Scorer"),
        "model.class must be 'package.module:ClassName' (got 'mymodels.Scorer', a str)",
        id="class-without-colon"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: ''"),
        "model.path must be a non-empty string (got '', a str)", id="empty-path"),
    pytest.param(
        MINIMAL.replace("  path: m.pt2", "  path: 42"),
        "model.path must be a non-empty string (got 42, an int)", id="path-not-a-string"),
    pytest.param(
        MINIMAL.replace("  path: d.csv", "  path: d.csv\n  features: [a, b, a]"),
        "data.features lists 'a' more than once", id="duplicate-feature"),
    pytest.param(
        MINIMAL.replace("  path: d.csv", "  path: d.csv\n  on_missing: skip"),
        "data.on_missing must be one of error, drop (got 'skip', a str)", id="bad-on-missing"),
    pytest.param(
        MINIMAL.replace("model:\n  path: m.pt2", "model: m.pt2"),
        "model must be a mapping (got 'm.pt2', a str)", id="section-not-a-mapping"),
    pytest.param(
        MINIMAL + "compare:\n  confidence: 1\n",
        # The value as written (1), not as converted (1.0).
        "compare.confidence must be a number strictly between 0 and 1 (got 1, an int)",
        id="confidence-one"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_config_message(tmp_path, text, message):
    assert _message(tmp_path, text) == f"{tmp_path / 'audit.yaml'}: {message}"


def test_model_section_is_optional_for_compare_but_run_needs_it(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("data:\n  path: d.csv\nreport:\n  dir: out\n")
    assert load_config(path).model is None  # compare names its two models
    with pytest.raises(ConfigError) as err:
        load_config(path, require_model=True)
    assert str(err.value) == f"{path}: missing required key 'model'"
    with pytest.raises(ConfigError) as err:
        sensaudit.audit(load_config(path))
    assert str(err.value) == f"{path}: missing required key 'model'"


def test_messages_are_one_line(tmp_path):
    for param in BAD:
        text, _ = param.values
        assert "\n" not in _message(tmp_path, text)


@pytest.mark.parametrize("kwargs,message", [
    ({"top_k": 0}, "AuditSettings: top_k must be an integer >= 1 (got 0, an int)"),
    ({"examples_in_report": -1},
     "AuditSettings: examples_in_report must be an integer >= 0 (got -1, an int)"),
    ({"dominance_warning": 1.5},
     "AuditSettings: dominance_warning must be a number in [0, 1] (got 1.5, a float)"),
    ({"batch_size": 0},
     "AuditSettings: batch_size must be an integer >= 1 or None (got 0, an int)"),
])
def test_audit_settings_built_in_python_are_checked(kwargs, message):
    with pytest.raises(ConfigError) as err:
        AuditSettings(**kwargs)
    assert str(err.value) == message


def test_an_unregistered_method_built_in_python_is_refused_before_any_row_is_read():
    # The settings sit below the registries (they cannot ask them), so the name is checked
    # when the audit builds its method: before the model is probed or a row attributed.
    import torch

    frame = __import__("pandas").DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    with pytest.raises(ConfigError) as err:
        sensaudit.audit_frame(torch.nn.Linear(2, 1), frame,
                              settings=AuditSettings(method="saliency"))
    assert f"audit.method must be one of {', '.join(METHODS)} (got 'saliency')" in str(err.value)
