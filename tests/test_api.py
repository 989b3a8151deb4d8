"""The notebook-sized API: audit_frame takes every kind of model a user holds (a module, an
exported program's ``.module()``, what load_model returns), compare_frames compares two in
memory, and write_reports writes a result's files as the CLI does.

The scorer is audit_setup's y = w.x, whose shares have a closed form (expected_shares)."""

from __future__ import annotations

import filecmp
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from audit_setup import FEATURES, WEIGHTS, expected_shares, write_assets, write_config
from models import Linear

import sensaudit
from sensaudit import (
    ConfigError,
    ModelConfig,
    ReportError,
    audit,
    audit_frame,
    compare_frames,
    compare_models,
    load_config,
    load_model,
    run_audit,
    run_compare,
    write_reports,
)
from sensaudit.reports import WRITERS
from sensaudit.results.comparison import OutputAgreement, ProxyIncrease
from sensaudit.settings.sections import CompareSettings

TESTS = Path(__file__).parent
REPORT = "report:\n  dir: {dir}\n  formats: [{formats}]\n  examples: top\n"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """scorer.pt2 (exported), scorer.ts (TorchScript), scorer.pth (a state_dict of
    models.Linear), all y = w.x with audit_setup's weights, and eval.csv."""
    folder = write_assets(tmp_path_factory.mktemp("api"))
    scorer = Linear(torch.tensor(WEIGHTS), n_features=3).eval()
    torch.jit.save(torch.jit.script(scorer), str(folder / "scorer.ts"))
    torch.save(scorer.state_dict(), folder / "scorer.pth")
    return folder


def _frame(assets: Path) -> pd.DataFrame:
    return pd.read_csv(assets / "eval.csv")


def _shares(result) -> dict[str, float]:
    return dict(zip(result.table["feature"], result.table["share"], strict=True))


def _assert_closed_form(result, frame: pd.DataFrame) -> None:
    expected = expected_shares(frame)
    # The weights are float32 values (torch.tensor(WEIGHTS)) held in float64: 1e-7 apart.
    assert _shares(result) == pytest.approx(expected, rel=1e-6)


MODEL_FILES = {
    "torch.export": ModelConfig(path=Path("scorer.pt2")),
    "torchscript": ModelConfig(path=Path("scorer.ts")),
    "state_dict": ModelConfig(path=Path("scorer.pth"), class_path="models:Linear",
                              class_file=TESTS / "models.py", kwargs={"n_features": 3}),
}


def test_audit_frame_takes_an_exported_programs_module(assets):
    """Regression: exported graphs refuse eval(), and audit_frame called it (a
    NotImplementedError traceback)."""
    module = torch.export.load(str(assets / "scorer.pt2")).module()
    result = audit_frame(module, _frame(assets), id="ad_id", label="quality")
    _assert_closed_form(result, _frame(assets))
    assert result.features == FEATURES


@pytest.mark.parametrize("kind", MODEL_FILES)
def test_audit_frame_takes_what_load_model_returns(assets, kind):
    """Regression: a LoadedModel was called as the model itself, which failed as a
    misleading 'does its input width match' error."""
    config = MODEL_FILES[kind]
    loaded = load_model(replace(config, path=assets / config.path))
    assert loaded.format == kind
    result = audit_frame(loaded, _frame(assets), id="ad_id", label="quality")
    _assert_closed_form(result, _frame(assets))
    assert (result.model_path, result.model_format) == (str(assets / config.path), kind)


def test_a_module_in_training_mode_is_audited_in_eval_mode_and_handed_back(assets):
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), Linear(torch.tensor(WEIGHTS), 3))
    result = audit_frame(model.train(), _frame(assets), id="ad_id", label="quality")
    _assert_closed_form(result, _frame(assets))  # dropout off: the closed form holds
    assert model.training


def test_a_loaded_model_is_audited_where_it_was_loaded(assets):
    loaded = load_model(ModelConfig(path=assets / "scorer.pt2", device="cpu"))
    with pytest.raises(ConfigError) as err:
        audit_frame(loaded, _frame(assets), device="meta")
    assert str(err.value) == (f"{assets / 'scorer.pt2'} was loaded on cpu, not meta; load it "
                              "with ModelConfig(device='meta') instead")


def test_audit_frame_refuses_what_is_not_a_model(assets):
    with pytest.raises(ConfigError, match=r"model must be a torch module .* \(got a str\)"):
        audit_frame("scorer.pt2", _frame(assets))  # type: ignore[arg-type]


# --- compare_frames ------------------------------------------------------------------------------


def _models(assets: Path) -> tuple[Path, Path]:
    """scorer.pt2 and grown.pt2, in which length weighs 4 times more."""
    from models import save_exported

    grown = assets / "grown.pt2"
    if not grown.exists():
        save_exported(Linear(torch.tensor([0.04, 1.0, 0.5]), n_features=3), grown,
                      n_features=3, dtype=torch.float64)
    return assets / "scorer.pt2", grown


def _config(assets: Path, tmp_path: Path, formats: str) -> Path:
    return write_config(tmp_path / "cfg.yaml", assets, max_share=0.9,
                        extra="compare:\n  bootstrap_samples: 50\n"
                              "  max_proxy_share_increase: 0.01\n",
                        report=REPORT.format(dir=tmp_path / "cli", formats=formats))


def test_compare_frames_equals_compare_models_on_the_same_rows(assets, tmp_path):
    old, new = _models(assets)
    config = load_config(_config(assets, tmp_path, "json"))
    on_files = compare_models(config, old, new)
    in_memory = compare_frames(
        load_model(ModelConfig(path=old)), torch.export.load(str(new)).module(),
        _frame(assets), id="ad_id", label="quality", settings=config.audit,
        compare=config.compare)
    pd.testing.assert_frame_equal(in_memory.table, on_files.table, check_exact=False,
                                  rtol=1e-12)
    assert in_memory.findings == on_files.findings
    assert in_memory.settings == on_files.settings
    # length's share grew by ~0.15 > 0.01: one typed increase, as compare_models finds it.
    assert [type(i) for i in in_memory.proxy_increases] == [ProxyIncrease]
    assert in_memory.proxy_increases[0].feature == "length"
    assert not in_memory.passed and not on_files.passed
    for name, agreement in on_files.overall.items():
        other = in_memory.overall[name]
        assert isinstance(other, OutputAgreement)
        for field in fields(OutputAgreement):
            mine, theirs = getattr(other, field.name), getattr(agreement, field.name)
            if field.name.endswith("_rows"):
                assert [(r.id, r.output) for r in mine] == [(r.id, r.output) for r in theirs]
                mine, theirs = ([v for r in rows for v in (r.score_old, r.score_new, r.cosine)]
                                for rows in (mine, theirs))
            elif field.name in ("cosine", "score_change"):
                mine, theirs = vars(mine), vars(theirs)
            assert mine == pytest.approx(theirs, rel=1e-12), field.name


def test_compare_frames_takes_replicas(assets):
    old, new = _models(assets)
    frame = _frame(assets)
    models = [torch.export.load(str(p)).module() for p in (old, new, old, new)]
    result = compare_frames(*models[:2], frame, old_replicas=[models[2]],
                            new_replicas=[models[3]], label="quality", id="ad_id",
                            compare=CompareSettings(bootstrap_samples=0))
    assert result.settings["noise"] == "rows and retraining"
    assert result.settings["old_replicas"] == result.settings["new_replicas"] == [
        "<in-memory model>"]


# --- write_reports -------------------------------------------------------------------------------

ALL_FORMATS = ", ".join(WRITERS)


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if not p.name.startswith(".sensaudit.lock"))
    assert names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".sensaudit.lock"))
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])


@pytest.mark.slow  # every format twice, charts included
def test_write_reports_writes_what_run_audit_writes(assets, tmp_path):
    config = load_config(write_config(tmp_path / "cfg.yaml", assets, report=REPORT.format(
        dir=tmp_path / "cli", formats=ALL_FORMATS)))
    run_audit(config)
    written = write_reports(audit(config), tmp_path / "api", list(WRITERS))
    assert sorted(p.name for p in written) == sorted(
        p.name for p in (tmp_path / "api").iterdir() if not p.name.startswith("."))
    _same_files(tmp_path / "cli", tmp_path / "api")


@pytest.mark.slow
def test_write_reports_writes_what_run_compare_writes(assets, tmp_path):
    old, new = _models(assets)
    config = load_config(_config(assets, tmp_path, ALL_FORMATS))
    run_compare(config, old, new)
    write_reports(compare_models(config, old, new), tmp_path / "api", list(WRITERS))
    _same_files(tmp_path / "cli", tmp_path / "api")


def test_write_reports_default_formats_and_the_users_files(assets, tmp_path):
    result = audit_frame(torch.export.load(str(assets / "scorer.pt2")).module(),
                         _frame(assets), id="ad_id", label="quality")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.csv").write_text("mine\n")
    written = write_reports(result, folder)
    assert sorted(p.name for p in written) == ["examples.csv", "report.md", "sensitivity.csv",
                                               "summary.json", "suspects.csv"]
    assert (folder / "notes.csv").read_text() == "mine\n"
    examples = pd.read_csv(folder / "examples.csv")
    assert len(examples) == len(result.examples) and "label" in examples.columns
    # A second call with fewer formats removes only the reports the first one wrote.
    assert [p.name for p in write_reports(result, folder, ["json"])] == ["summary.json"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "notes.csv", "summary.json"]


def test_write_reports_never_replaces_the_results_input(assets, tmp_path):
    data = tmp_path / "here" / "examples.csv"
    data.parent.mkdir()
    data.write_bytes((assets / "eval.csv").read_bytes())
    config = load_config(write_config(tmp_path / "cfg.yaml", assets), require_model=True)
    result = audit(replace(config, data=replace(config.data, path=data)))
    with pytest.raises(ReportError, match="would overwrite the input file"):
        write_reports(result, data.parent, ["csv"])
    assert data.read_bytes() == (assets / "eval.csv").read_bytes()
    assert sorted(p.name for p in data.parent.iterdir() if not p.name.startswith(".")) == [
        "examples.csv"]


def test_write_reports_names_the_registered_formats(assets):
    result = audit_frame(torch.export.load(str(assets / "scorer.pt2")).module(),
                         _frame(assets), id="ad_id", label="quality")
    with pytest.raises(ConfigError) as err:
        write_reports(result, assets / "never", ["jsn"])
    assert str(err.value) == ("write_reports: unknown report format 'jsn'; did you mean "
                              f"'json'? (formats: {', '.join(WRITERS)})")
    assert not (assets / "never").exists()


def test_the_new_names_are_exported():
    for name in ("compare_frames", "write_reports", "OutputAgreement", "ProxyIncrease"):
        assert name in sensaudit.__all__
