"""The bad-input matrix: every way a file handed to the audit can be wrong.

Each case runs ``sensaudit run`` (in-process with typer's CliRunner, a few in a fresh
interpreter) and asserts exit code 2, one ``Error: `` line on stderr naming the file and the
key, column or row, and no traceback. Messages are asserted exactly, or by their exact key parts
where they quote torch's or pandas' own words.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers_bad import (
    ROWS,
    Fn,
    Scorer,
    cli,
    cli_error,
    config,
    export,
    payload_bytes,
    script,
    state_dict,
    subprocess_run,
    tamper_pt2,
    write_config,
    write_csv,
)

import sensaudit
from sensaudit import DataError, ModelLoadError, load_model
from sensaudit.config.sections import audit_keys
from sensaudit.methods import METHODS
from sensaudit.reports import WRITERS
from sensaudit.settings.sections import ModelConfig

TRUST_HINT = ("set model.trust_model_code: true (--trust-model-code) only if you trust the "
              "file like code you run")
REFUSE_PICKLE = (
    "refusing to unpickle: the file holds pickled Python objects (a whole module or other "
    "code), and unpickling runs whatever code the file names. Save a safe format instead "
    "(torch.export.save to .pt2, or torch.save(model.state_dict()) with model.class), or "
    + TRUST_HINT)
REFUSE_PT2_TAIL = (
    ". A crafted .pt2 can run code when loaded or run; re-export the model with "
    "torch.export.save, or " + TRUST_HINT)
TRUNCATED_ZIP = (
    "corrupt or truncated model file: it starts as a zip archive (as torch.save, "
    "torch.jit.save and torch.export.save write) but its end is missing or damaged")
NOT_A_MODEL = (
    "not a PyTorch model file: expected a zip archive (torch.export.save, torch.jit.save, "
    "torch.save) or a legacy torch.save file")
NO_GRADIENT = (
    "the model's output has no gradient path to its input (it detaches, casts to integers, or "
    "uses argmax/rounding), so its sensitivity cannot be measured")


@pytest.fixture
def setup(tmp_path: Path):
    """A good model.pt2 and data.csv in tmp_path; call it with config overrides to get the
    config path."""
    export(Scorer(), tmp_path / "model.pt2")
    write_csv(tmp_path / "data.csv")

    def make(**sections) -> Path:
        return write_config(tmp_path, config(tmp_path, **sections))

    return make


# --- the control: the good setup passes ---------------------------------------------------


def test_good_setup_passes(setup, tmp_path):
    result = cli("run", str(setup()), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "reports" / "summary.json").is_file()


# --- missing or unreadable files ------------------------------------------------------------


def test_missing_config(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert cli_error("run", str(missing)) == f"{missing}: config file not found"


def test_config_is_a_directory(tmp_path):
    message = cli_error("run", str(tmp_path))
    assert message.startswith(f"{tmp_path}: cannot read config file (")


def test_missing_model(setup, tmp_path):
    (tmp_path / "model.pt2").unlink()
    message = cli_error("run", str(setup()))
    assert message == f"{tmp_path / 'model.pt2'}: model file not found (model.path)"


def test_model_is_a_directory(setup, tmp_path):
    (tmp_path / "folder.pt2").mkdir()
    message = cli_error("run", str(setup(model={"path": "folder.pt2"})))
    assert message == f"{tmp_path / 'folder.pt2'}: model.path is a directory, not a model file"


def test_missing_data(setup, tmp_path):
    (tmp_path / "data.csv").unlink()
    message = cli_error("run", str(setup()))
    assert message == f"{tmp_path / 'data.csv'}: data file not found (data.path)"


def test_data_is_a_directory(setup, tmp_path):
    (tmp_path / "rows").mkdir()
    message = cli_error("run", str(setup(data={"path": "rows"})))
    assert message == (f"{tmp_path / 'rows'}: data.path is a folder with no Parquet files in "
                       "it; name a CSV or Parquet file, a folder of Parquet files or a glob")


def _deny(monkeypatch, denied: Path) -> None:
    """Make opening ``denied`` fail as an unreadable file does (tests may run as root, where
    chmod 000 does not stop reads)."""
    import builtins
    import io

    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def guarded_os_open(file, *args, **kwargs):  # configs are opened with O_NONBLOCK
        if isinstance(file, (str, os.PathLike)) and Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)


def test_unreadable_model(setup, tmp_path, monkeypatch):
    cfg = setup()
    model = tmp_path / "model.pt2"
    _deny(monkeypatch, model)
    assert cli_error("run", str(cfg)) == (
        f"{model}: cannot read model file ([Errno 13] Permission denied: '{model}')")


def test_unreadable_data(setup, tmp_path, monkeypatch):
    cfg = setup()
    data = tmp_path / "data.csv"
    _deny(monkeypatch, data)
    assert cli_error("run", str(cfg)) == (
        f"{data}: cannot read data ([Errno 13] Permission denied: '{data}')")


def test_unreadable_config(setup, monkeypatch):
    cfg = setup()
    _deny(monkeypatch, cfg)
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: cannot read config file ([Errno 13] Permission denied: '{cfg}')")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_files_by_mode(setup, tmp_path):
    cfg = setup()
    (tmp_path / "data.csv").chmod(0)
    try:
        message = cli_error("run", str(cfg))
    finally:
        (tmp_path / "data.csv").chmod(0o644)
    assert message.startswith(f"{tmp_path / 'data.csv'}: cannot read data (")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_requested_without_cuda(setup, tmp_path):
    cfg = setup(model={"path": "model.pt2", "device": "cuda"})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'model.pt2'}: model.device is 'cuda' but no CUDA device is available "
        "here; use 'auto' or 'cpu'")


def test_report_dir_is_a_file(setup, tmp_path):
    (tmp_path / "reports").write_text("not a folder")
    message = cli_error("run", str(setup()))
    assert message == f"{tmp_path / 'reports'}: cannot write reports (report.dir): File exists"


# --- corrupt or truncated model files -------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_exported_model(setup, tmp_path):
    _truncate(tmp_path / "model.pt2")
    assert cli_error("run", str(setup())) == f"{tmp_path / 'model.pt2'}: {TRUNCATED_ZIP}"


def test_truncated_torchscript_model(setup, tmp_path):
    _truncate(script(Scorer(), tmp_path / "scripted.pt"))
    message = cli_error("run", str(setup(model={"path": "scripted.pt"})))
    assert message == f"{tmp_path / 'scripted.pt'}: {TRUNCATED_ZIP}"


def test_truncated_state_dict(setup, tmp_path):
    _truncate(state_dict(tmp_path / "weights.pt"))
    message = cli_error("run", str(setup(model={"path": "weights.pt",
                                                "class": "badmodels:Scorer",
                                                "class_file": "badmodels.py"})))
    assert message == f"{tmp_path / 'weights.pt'}: {TRUNCATED_ZIP}"


def test_empty_model_file(setup, tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"")
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'model.pt2'}: the model file is empty (model.path)")


def test_garbage_model_file(setup, tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"this is not a model at all")
    assert cli_error("run", str(setup())) == f"{tmp_path / 'model.pt2'}: {NOT_A_MODEL}"


def test_text_file_as_model(setup, tmp_path):
    # Regression: every weights_only failure was reported as a refused pickle, a text file included.
    (tmp_path / "model.pt2").write_text("model: 1\n")
    assert cli_error("run", str(setup())) == f"{tmp_path / 'model.pt2'}: {NOT_A_MODEL}"


def test_truncated_legacy_checkpoint(setup, tmp_path):
    old = tmp_path / "old.pt"
    torch.save(Scorer().state_dict(), old, _use_new_zipfile_serialization=False)
    old.write_bytes(old.read_bytes()[:100])
    message = cli_error("run", str(setup(model={"path": "old.pt", "class": "badmodels:Scorer",
                                                "class_file": "badmodels.py"})))
    assert message == (f"{tmp_path / 'old.pt'}: not a readable PyTorch model file: corrupt, "
                       "truncated or another format? (EOFError)")


def test_exported_model_with_damaged_graph(setup, tmp_path):
    def damage(name: str, data: bytes) -> bytes:
        return b"{not json" if name.endswith("models/model.json") else data

    tamper_pt2(tmp_path / "model.pt2", tmp_path / "damaged.pt2", damage)
    message = cli_error("run", str(setup(model={"path": "damaged.pt2"})))
    assert message.startswith(f"{tmp_path / 'damaged.pt2'}: cannot load torch.export program: "
                              "corrupt or truncated file? (")


# --- pickles: refused without opt-in, and their payload never runs --------------------------


def test_pickled_module_is_refused(setup, tmp_path):
    torch.save(torch.nn.Linear(3, 1), tmp_path / "whole.pt")
    message = cli_error("run", str(setup(model={"path": "whole.pt"})))
    assert message == f"{tmp_path / 'whole.pt'}: {REFUSE_PICKLE}"


def test_pickled_module_loads_when_trusted(setup, tmp_path):
    torch.save(torch.nn.Linear(3, 1), tmp_path / "whole.pt")
    cfg = setup(model={"path": "whole.pt"})
    result = cli("run", str(cfg), "--quiet", "--trust-model-code")
    assert result.exit_code in (0, 1), result.stderr
    cfg = setup(model={"path": "whole.pt", "trust_model_code": True})
    assert cli("run", str(cfg), "--quiet").exit_code in (0, 1)


MALICIOUS = {
    "torch.save (zip)": lambda marker: payload_bytes(marker),
    "torch.save (legacy)": lambda marker: _legacy_payload(marker),
    "pickle.dumps": lambda marker: pickle.dumps(_payload(marker)),
    "pickle protocol 0": lambda marker: pickle.dumps(_payload(marker), protocol=0),
}


def _payload(marker: Path):
    from helpers_bad import Payload

    return Payload(marker)


def _legacy_payload(marker: Path) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(_payload(marker), buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_malicious_pickle_never_runs_via_cli(setup, tmp_path, kind):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "evil.pt").write_bytes(MALICIOUS[kind](marker))
    message = cli_error("run", str(setup(model={"path": "evil.pt"})))
    assert message.startswith(f"{tmp_path / 'evil.pt'}: ")
    assert "refusing to unpickle" in message or NOT_A_MODEL in message
    assert not marker.exists()


@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_malicious_pickle_never_runs_via_load_model(tmp_path, kind):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "evil.pt").write_bytes(MALICIOUS[kind](marker))
    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelConfig(path=tmp_path / "evil.pt", device="cpu"))
    assert str(caught.value).startswith(f"{tmp_path / 'evil.pt'}: ")
    assert not marker.exists()


def test_malicious_pickle_payload_is_real(tmp_path):
    """The control: trusted, the same file does run its payload, so the tests above prove a
    refusal, not a dud."""
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "evil.pt").write_bytes(payload_bytes(marker))
    with pytest.raises(ModelLoadError):  # the payload returns None, which is not a model
        load_model(ModelConfig(path=tmp_path / "evil.pt", device="cpu"), trust_model_code=True)
    assert marker.read_text() == "payload ran"


@pytest.mark.slow
def test_malicious_pickle_never_runs_in_a_fresh_interpreter(setup, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "evil.pt").write_bytes(payload_bytes(marker))
    done = subprocess_run("run", str(setup(model={"path": "evil.pt"})))
    assert done.returncode == 2
    assert done.stderr == f"Error: {tmp_path / 'evil.pt'}: {REFUSE_PICKLE}\n"
    assert "Traceback" not in done.stderr
    assert not marker.exists()


# A .pt2 is a zip of JSON and tensors, yet torch.export.load runs code from a crafted one in
# three ways (see sensaudit/inputs/pt2_safety.py). Each archive below is a good export with one part
# replaced.


def _evil_sample_inputs(marker):
    def edit(name, data):
        return payload_bytes(marker) if name.endswith("sample_inputs/model.pt") else data
    return edit


def _evil_pickled_weight(marker):
    def edit(name, data):
        if name.endswith("weights_config.json"):
            index = json.loads(data)
            index["config"]["w"]["use_pickle"] = True
            return json.dumps(index).encode()
        if name.endswith("weights/weight_0"):
            return payload_bytes(marker)
        return data
    return edit


def _evil_shape_expression(marker):
    def edit(name, data):
        if name.endswith("models/model.json"):
            graph = json.loads(data)
            code = f"exec(\"open({str(marker)!r}, 'w').write('payload ran')\")"
            graph["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0] = {
                "as_expr": {"expr_str": code, "hint": {"as_int": 4}}}
            return json.dumps(graph).encode()
        return data
    return edit


def _evil_graph_op(marker):
    def edit(name, data):
        if name.endswith("models/model.json"):
            return data.replace(b"torch.ops.aten.matmul.default",
                                b"torch.serialization.os.system")
        return data
    return edit


EVIL_PT2 = {
    "pickled sample inputs": (_evil_sample_inputs, "its sample inputs hold a pickled reference "
                              "to '__builtin__.exec', which is not on the list of what torch "
                              "writes for tensors"),
    "pickled weight": (_evil_pickled_weight, "its weight or constant 'w' is a pickled object, "
                       "not a plain tensor"),
    "shape expression": (_evil_shape_expression, "a shape expression holds 'exec', which is "
                         "not sympy arithmetic"),
    "graph op": (_evil_graph_op, "its graph calls 'torch.serialization.os.system', which is "
                 "not a torch operator"),
}


@pytest.mark.parametrize("kind", list(EVIL_PT2))
def test_crafted_pt2_never_runs_code(setup, tmp_path, kind):
    marker = tmp_path / "PAYLOAD_RAN"
    edit, reason = EVIL_PT2[kind]
    evil = tamper_pt2(tmp_path / "model.pt2", tmp_path / "evil.pt2", edit(marker))
    cfg = setup(model={"path": "evil.pt2"})
    assert cli_error("run", str(cfg)) == (
        f"{evil}: refusing to load this torch.export file: {reason}{REFUSE_PT2_TAIL}")
    assert not marker.exists()
    with pytest.raises(ModelLoadError):
        load_model(ModelConfig(path=evil, device="cpu"))
    assert not marker.exists()


def test_crafted_pt2_payload_is_real(setup, tmp_path):
    """The control: torch.export.load by itself runs the pickled sample inputs' payload."""
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tamper_pt2(tmp_path / "model.pt2", tmp_path / "evil.pt2",
                      _evil_sample_inputs(marker))
    with pytest.raises(Exception):  # noqa: B017 - the payload returns None, which torch rejects
        torch.export.load(str(evil))
    assert marker.exists()


# --- state_dict checkpoints -----------------------------------------------------------------


def test_state_dict_without_class(setup, tmp_path):
    state_dict(tmp_path / "weights.pt")
    message = cli_error("run", str(setup(model={"path": "weights.pt"})))
    assert message == (
        f"{tmp_path / 'weights.pt'}: the file holds a state_dict (weights only); set "
        "model.class: 'package.module:ClassName' (and model.kwargs) so the model can be built")


def test_state_dict_loads_with_its_class(setup, tmp_path):
    state_dict(tmp_path / "weights.pt")
    cfg = setup(model={"path": "weights.pt", "class": "badmodels:Scorer",
                       "class_file": "badmodels.py"})
    assert cli("run", str(cfg), "--quiet").exit_code == 0


@pytest.mark.parametrize("class_path, kwargs, expected", [
    ("nosuchmodule:Scorer", {},
     "model.class 'nosuchmodule:Scorer': cannot import module 'nosuchmodule' "
     "(ModuleNotFoundError: No module named 'nosuchmodule')"),
    ("badmodels:Missing", {},
     "model.class 'badmodels:Missing': module 'badmodels' has no attribute 'Missing'"),
    ("badmodels:Broken", {},
     "model.class 'badmodels:Broken': cannot construct it with model.kwargs {} "
     "(constructor exploded)"),
    ("badmodels:Scorer", {"depth": 2},
     "model.class 'badmodels:Scorer': cannot construct it with model.kwargs {'depth': 2} "
     "(Scorer.__init__() got an unexpected keyword argument 'depth')"),
    ("badmodels:Other", {},
     "state_dict does not match model.class 'badmodels:Other': Error(s) in loading state_dict "
     "for Other: Missing key(s) in state_dict: \"layer.weight\", \"layer.bias\". Unexpected "
     "key(s) in state_dict: \"w\"."),
    ("badmodels:Scorer", {"n_features": 2},
     "state_dict does not match model.class 'badmodels:Scorer': Error(s) in loading state_dict "
     "for Scorer: size mismatch for w: copying a param with shape torch.Size([3]) from "
     "checkpoint, the shape in current model is torch.Size([2])."),
])
def test_state_dict_class_missing_or_mismatched(setup, tmp_path, class_path, kwargs, expected):
    state_dict(tmp_path / "weights.pt")
    class_file = {"class_file": "badmodels.py"} if class_path.startswith("badmodels:") else {}
    cfg = setup(model={"path": "weights.pt", "class": class_path, "kwargs": kwargs,
                       **class_file})
    assert cli_error("run", str(cfg)) == f"{tmp_path / 'weights.pt'}: {expected}"


def test_checkpoint_without_tensors(setup, tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "weights.pt")
    message = cli_error("run", str(setup(model={"path": "weights.pt",
                                                "class": "badmodels:Scorer",
                                                "class_file": "badmodels.py"})))
    assert message == (f"{tmp_path / 'weights.pt'}: the file holds a dict that is neither a "
                       "state_dict of tensors nor a model")


# --- models that cannot be audited ----------------------------------------------------------

WIDTH_TAIL = "; does its input width match the data's features?"


def test_input_width_differs_exported(setup, tmp_path):
    export(Scorer(4), tmp_path / "wide.pt2", n_features=4)
    message = cli_error("run", str(setup(model={"path": "wide.pt2"})))
    # torch's input check (its generated guard code is not built for files from elsewhere)
    assert message == (f"{tmp_path / 'wide.pt2'}: the model failed on a batch of 3 features "
                       "(Expected input at *args[0].shape[1] to be equal to 4, but got 3. If you "
                       "meant for this dimension to be dynamic, please re-export and specify "
                       f"dynamic_shapes (e.g. with Dim.DYNAMIC)){WIDTH_TAIL}")


def test_input_width_differs_torchscript(setup, tmp_path):
    script(Scorer(4), tmp_path / "wide.pt")
    message = cli_error("run", str(setup(model={"path": "wide.pt"})))
    # Regression: the TorchScript interpreter's first line ("The following operation failed...")
    # was quoted instead of the error on its last line.
    assert message == (f"{tmp_path / 'wide.pt'}: the model failed on a batch of 3 features "
                       "(RuntimeError: size mismatch, got input (6), mat (6x3), vec (4))"
                       f"{WIDTH_TAIL}")


def test_input_width_differs_state_dict(setup, tmp_path):
    state_dict(tmp_path / "narrow.pt", Scorer(2).state_dict())
    cfg = setup(model={"path": "narrow.pt", "class": "badmodels:Scorer",
                       "class_file": "badmodels.py", "kwargs": {"n_features": 2}})
    message = cli_error("run", str(cfg))
    assert message.startswith(f"{tmp_path / 'narrow.pt'}: the model failed on a batch of 3 "
                              "features (")
    assert message.endswith(WIDTH_TAIL)


@pytest.mark.parametrize("kind, expected", [
    ("shape", "the model returned shape [6, 3, 1] for 6 rows; expected [6] or [6, outputs]"),
    ("scalar", "the model returned shape [] for 6 rows; expected [6] or [6, outputs]"),
    ("integer", "the model returned torch.int64 scores; expected floating point (integer "
                "outputs have no gradient)"),
    ("all_nan", "the model gave non-finite scores or gradients on all 6 rows (first ids: r1, "
                "r2, r3, r4, r5), so there is nothing to rank"),
    ("argmax", NO_GRADIENT),
    ("int_cast", NO_GRADIENT),
    ("constant", "every gradient is exactly zero on all 6 rows: the score does not respond to "
                 "any feature (a step function, rounding, or a constant output?), so there is "
                 "nothing to rank"),
])
def test_model_output_unusable(setup, tmp_path, kind, expected):
    export(Fn(kind), tmp_path / f"{kind}.pt2")
    message = cli_error("run", str(setup(model={"path": f"{kind}.pt2"})))
    assert message == f"{tmp_path / f'{kind}.pt2'}: {expected}"


def test_detaching_torchscript_model(setup, tmp_path):
    script(Fn("detach"), tmp_path / "detach.pt")
    message = cli_error("run", str(setup(model={"path": "detach.pt"})))
    assert message == f"{tmp_path / 'detach.pt'}: {NO_GRADIENT}"


# --- non-finite scores or gradients on some rows: counted, named, and gating ---------------


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "reports" / "summary.json").read_text())


def test_nonfinite_rows_fail_the_audit(setup, tmp_path):
    export(Fn("nan_row"), tmp_path / "nan.pt2")  # NaN score and gradient on row r4
    result = cli("run", str(setup(model={"path": "nan.pt2"})))
    assert result.exit_code == 1, result.stderr
    assert result.stderr == ""
    assert "1 rows gave non-finite gradients; first ids: r4" in result.stdout
    assert "Audit FAILED: 0 flag(s), 0 warning(s), 1 non-finite row(s), 5 rows;" in result.stdout
    summary = _summary(tmp_path)
    assert summary["passed"] is False
    assert summary["nonfinite_gradient_rows"] == 1
    assert summary["nonfinite_gradient_ids"] == ["r4"]
    assert summary["rows"] == 5
    assert ("- 1 rows gave non-finite scores or gradients and were left out of the statistics "
            "(this fails the audit (set audit.allow_nonfinite: true to accept)); first ids: r4."
            ) in (tmp_path / "reports" / "report.md").read_text()


def test_nonfinite_rows_allowed_still_reported(setup, tmp_path):
    export(Fn("nan_row"), tmp_path / "nan.pt2")
    cfg = setup(model={"path": "nan.pt2"},
                audit={"allow_nonfinite": True,
                       "proxies": [{"feature": "c", "max_share": 0.9}]})
    result = cli("run", str(cfg), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "1 non-finite row(s) (allowed), 5 rows;" in result.stdout
    summary = _summary(tmp_path)
    assert summary["passed"] is True
    assert (summary["nonfinite_gradient_rows"], summary["nonfinite_gradient_ids"]) == (1, ["r4"])


def test_infinite_gradient_with_finite_score(setup, tmp_path):
    """y = sqrt(a) + b - c: at a = 0 the score is finite and dy/da is infinite."""
    export(Fn("sqrt"), tmp_path / "sqrt.pt2")
    rows = _rows_with(1, ("r2", 0.0, 1.0, 0.5, 0))
    rows[4] = ("r5", 0.0, 2.5, 0.0, 1)
    write_csv(tmp_path / "data.csv", rows)
    cfg = setup(model={"path": "sqrt.pt2"}, data={"path": "data.csv", "label": "label"})
    assert cli("run", str(cfg), "--quiet").exit_code == 1
    summary = _summary(tmp_path)
    # Without data.id, rows are named by their 1-based row numbers.
    assert (summary["nonfinite_gradient_rows"], summary["nonfinite_gradient_ids"]) == (2, [2, 5])
    assert summary["features"] == ["a", "b", "c"]  # the text id column is not a feature


# --- data files -----------------------------------------------------------------------------


def _rows_with(index: int, row: tuple) -> list[tuple]:
    rows = list(ROWS)
    rows[index] = row
    return rows


def test_empty_data_file(setup, tmp_path):
    (tmp_path / "data.csv").write_text("")
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: the file is empty; expected a CSV header row")


@pytest.mark.parametrize("features", [None, ["a", "b", "c"]])
def test_header_only_data(setup, tmp_path, features):
    write_csv(tmp_path / "data.csv", rows=[])
    cfg = setup(data={"path": "data.csv", "features": features} if features else
                {"path": "data.csv"})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'data.csv'}: the data has a header but no rows")


def test_single_row(setup, tmp_path):
    write_csv(tmp_path / "data.csv", rows=ROWS[:1])
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: 1 usable row(s); an audit needs at least 2 to measure how "
        "much each feature varies")


@pytest.mark.parametrize("data, key, column", [
    ({"features": ["a", "b", "d"]}, "data.features[2]", "d"),
    ({"label": "quality"}, "data.label", "quality"),
    ({"id": "ad_id"}, "data.id", "ad_id"),
])
def test_declared_column_missing(setup, tmp_path, data, key, column):
    cfg = setup(data={"path": "data.csv", **data})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'data.csv'}: column '{column}' named by {key} is not in the data "
        "(columns: id, a, b, c, label)")


@pytest.mark.parametrize("data", [
    {"features": ["a", "b", "c"]},
    {},  # Regression: with features inferred, a column of numbers and text was silently skipped
    {"features": ["a", "b", "c"], "chunk_rows": 2},  # the bad row in a later chunk
])
def test_text_in_numeric_column(setup, tmp_path, data):
    write_csv(tmp_path / "data.csv", _rows_with(3, ("r4", 4.0, "oops", 2.0, 0)))
    cfg = setup(data={"path": "data.csv", "id": "id", "label": "label", **data})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'data.csv'}: column 'b' has text in row 4 ('oops'); expected numbers")


def test_text_in_numeric_parquet_column(setup, tmp_path):
    frame = pd.DataFrame(ROWS, columns=["id", "a", "b", "c", "label"]).astype({"b": str})
    frame.loc[3, "b"] = "oops"
    frame.to_parquet(tmp_path / "data.parquet")
    cfg = setup(data={"path": "data.parquet", "features": ["a", "b", "c"]})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'data.parquet'}: column 'b' has text in row 4 ('oops'); expected numbers")


@pytest.mark.parametrize("cells, column, count, row", [
    ({2: ("r3", None, 1.0, 2.0, 0), 4: ("r5", "nan", 1.0, 2.0, 0)}, "a", 2, 3),
    ({1: ("r2", 1.0, "inf", 2.0, 0)}, "b", 1, 2),
    ({5: ("r6", 1.0, 2.0, "-inf", 0)}, "c", 1, 6),
])
def test_missing_or_infinite_values_are_errors_by_default(setup, tmp_path, cells, column, count,
                                                          row):
    rows = list(ROWS)
    for index, replacement in cells.items():
        rows[index] = replacement
    write_csv(tmp_path / "data.csv", rows)
    plural = "s" if count != 1 else ""
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: column '{column}' has {count} missing or infinite "
        f"value{plural} (first at row {row}); fix the data or set data.on_missing: drop to skip "
        "such rows")


def test_missing_values_in_parquet(setup, tmp_path):
    frame = pd.DataFrame(ROWS, columns=["id", "a", "b", "c", "label"])
    frame.loc[3, "b"] = float("nan")
    frame.to_parquet(tmp_path / "data.parquet")
    data = {"path": "data.parquet", "id": "id", "label": "label"}
    assert cli_error("run", str(setup(data=data))) == (
        f"{tmp_path / 'data.parquet'}: column 'b' has 1 missing or infinite value (first at "
        "row 4); fix the data or set data.on_missing: drop to skip such rows")


def test_on_missing_drop_drops_and_says_how_many(setup, tmp_path):
    rows = _rows_with(2, ("r3", None, 1.0, 2.0, 0))
    rows[4] = ("r5", 1.0, "-inf", 2.0, 0)
    write_csv(tmp_path / "data.csv", rows)
    cfg = setup(data={"path": "data.csv", "id": "id", "label": "label", "on_missing": "drop"})
    result = cli("run", str(cfg), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "4 rows (2 dropped for missing values)" in result.stdout
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert (summary["rows"], summary["rows_dropped"]) == (4, 2)
    assert "4 rows audited, 2 dropped for missing values" in (
        tmp_path / "reports" / "report.md").read_text()
    examples = pd.read_csv(tmp_path / "reports" / "examples.csv")
    assert sorted(examples["id"]) == ["r1", "r2", "r4", "r6"]


def test_on_missing_drop_of_every_row(setup, tmp_path):
    write_csv(tmp_path / "data.csv", [(r[0], None, *r[2:]) for r in ROWS])
    cfg = setup(data={"path": "data.csv", "features": ["a", "b", "c"], "on_missing": "drop"})
    assert cli_error("run", str(cfg)) == (
        f"{tmp_path / 'data.csv'}: 0 usable row(s); an audit needs at least 2 to measure how "
        "much each feature varies")


def test_value_too_large_for_a_float32_model(setup, tmp_path):
    write_csv(tmp_path / "data.csv", _rows_with(2, ("r3", 1e39, 1.0, 2.0, 0)))
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: column 'a' has a value too large for the model's float32 "
        "inputs (row 3: 1e+39)")


def test_values_too_large_to_measure_their_spread(setup, tmp_path):
    # Regression: the variance overflowed to infinity and ranking the NaN shares crashed. The
    # float32 model cannot even see such a value: the read names the cell.
    write_csv(tmp_path / "data.csv", _rows_with(2, ("r3", 1.0, 1e200, 2.0, 0)))
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: column 'b' has a value too large for the model's float32 "
        "inputs (row 3: 1e+200)")


def test_values_too_large_to_measure_their_spread_in_float64(tmp_path):
    # A float64 model sees 1e200, but its variance (1e400) overflows: no NaN shares, an error.
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 1e200, -1e200]})
    model = torch.nn.Linear(2, 1).double()
    with pytest.raises(DataError) as err:
        sensaudit.audit_frame(model, frame)
    assert str(err.value) == ("<DataFrame>: column 'b' has values too large to measure how "
                              "much it varies (its variance overflows); rescale it")


def test_missing_ids_in_the_first_chunk(setup, tmp_path):
    # Regression: a first chunk without ids typed examples.csv's id column as null; the next chunk's
    # ids could not be written (a traceback).
    write_csv(tmp_path / "data.csv", [("", *r[1:]) if i < 2 else r for i, r in enumerate(ROWS)])
    cfg = setup(data={"path": "data.csv", "id": "id", "label": "label", "chunk_rows": 2})
    assert cli("run", str(cfg), "--quiet").exit_code == 0
    examples = pd.read_csv(tmp_path / "reports" / "examples.csv", keep_default_na=False)
    assert list(examples["id"]) == ["", "", "r3", "r4", "r5", "r6"]


def test_control_character_in_a_message_stays_on_one_line(setup, tmp_path):
    # Regression: a value quoted from the config ("\x1e" counts as a line break) split the message.
    cfg = setup(audit={"proxies": [{"feature": "c\x1ed\n", "max_share": 0.2}]})
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: audit.proxies[0].feature 'c\\x1ed\\n' is not an audited feature "
        "(features: a, b, c)")


def test_duplicate_csv_columns(setup, tmp_path):
    write_csv(tmp_path / "data.csv", header=("id", "a", "b", "a", "label"))
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: column 'a' appears more than once in the header")


def test_duplicate_parquet_columns(setup, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array([1.0, 2.0]), pa.array([1.0, 2.0]), pa.array([3.0, 4.0])]
    pq.write_table(pa.Table.from_arrays(columns, names=["a", "b", "a"]), tmp_path / "d.parquet")
    assert cli_error("run", str(setup(data={"path": "d.parquet"}))) == (
        f"{tmp_path / 'd.parquet'}: column 'a' appears more than once in the header")


def test_unnamed_csv_column(setup, tmp_path):
    # Regression: an empty header cell escaped as KeyError ''.
    write_csv(tmp_path / "data.csv", header=("id", "a", "b", "", "label"))
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: column 4 of the header has no name")


def test_byte_order_mark_is_ignored(setup, tmp_path):
    # Regression: a UTF-8 BOM (Excel's CSV export) made the first column '\ufeffid'.
    data = tmp_path / "data.csv"
    data.write_bytes(b"\xef\xbb\xbf" + data.read_bytes())
    assert cli("run", str(setup()), "--quiet").exit_code == 0


def test_binary_data_file(setup, tmp_path):
    (tmp_path / "data.csv").write_bytes(b"\xff\xfe\x00\x01 binary")
    assert cli_error("run", str(setup())) == (
        f"{tmp_path / 'data.csv'}: not a UTF-8 text CSV file (is it Parquet? name it .parquet)")


@pytest.mark.parametrize("content", [b"PAR1 then garbage", None])
def test_damaged_parquet(setup, tmp_path, content):
    path = tmp_path / "data.parquet"
    if content is None:  # a real file cut in half
        pd.DataFrame(ROWS, columns=["id", "a", "b", "c", "label"]).to_parquet(path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    message = cli_error("run", str(setup(data={"path": "data.parquet"})))
    assert message.startswith(f"{path}: cannot read data (")


# "A huge file": not created here. What matters is that the audit reads in chunks (so memory
# does not grow with the file), that chunking changes nothing, and that a bad line deep inside
# a long file is named.


def _long_rows(n: int) -> list[tuple]:
    return [(f"r{i}", (i * 7) % 11 * 0.5, (i * 3) % 5 - 1.0, (i * 13) % 17 / 4, i % 2)
            for i in range(1, n + 1)]


@pytest.mark.parametrize("name", ["data.csv", "data.parquet"])
def test_chunked_reading_gives_the_same_report(setup, tmp_path, name):
    write_csv(tmp_path / "data.csv", _long_rows(10))
    if name.endswith(".parquet"):
        pd.read_csv(tmp_path / "data.csv").to_parquet(tmp_path / name)
    reports = {}
    for chunk_rows in (3, 1000):
        cfg = setup(data={"path": name, "id": "id", "label": "label", "chunk_rows": chunk_rows},
                    report={"dir": f"reports_{chunk_rows}"})
        assert cli("run", str(cfg), "--quiet").exit_code == 0
        folder = tmp_path / f"reports_{chunk_rows}"
        reports[chunk_rows] = ((folder / "sensitivity.csv").read_text(),
                               pd.read_csv(folder / "examples.csv"))
    assert reports[3][0] == reports[1000][0]
    # Contributions are measured from the feature means, whose last float64 bit depends on
    # how the rows were chunked (summation order): equal to rounding, every row and driver
    # the same.
    pd.testing.assert_frame_equal(reports[3][1], reports[1000][1], check_exact=False,
                                  rtol=1e-12, atol=1e-15)


def test_malformed_line_deep_in_a_long_file(setup, tmp_path):
    # Regression: past the first 1,000 rows (the header sample), a line with an extra field was cut
    # silently (pandas' usecols), shifting values; now it is named.
    data = write_csv(tmp_path / "data.csv", _long_rows(1500))
    lines = data.read_text().splitlines()
    lines[1300] += ",9"
    data.write_text("\n".join(lines) + "\n")
    cfg = setup(data={"path": "data.csv", "id": "id", "label": "label", "chunk_rows": 100})
    assert cli_error("run", str(cfg)) == (
        f"{data}: malformed CSV: expected 5 fields in line 1301, saw 6 (line 1 is the header)")


def test_first_row_with_an_extra_field(setup, tmp_path):
    # Regression: pandas read the first column as the index, shifting every value one column over.
    data = write_csv(tmp_path / "data.csv", _long_rows(5))
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:1] + [line + ",9" for line in lines[1:]]) + "\n")
    assert cli_error("run", str(setup())) == (
        f"{data}: malformed CSV: row 1 has more fields than the header's 5 column names")


def test_unclosed_quote(setup, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text('id,a,b,c,label\nr1,1,2,3,0\nr2,1,"2,3,0\nr3,1,2,3,1\n')
    assert cli_error("run", str(setup())) == (
        f"{data}: malformed CSV: EOF inside string starting at row 2")


def test_short_row_is_a_missing_value(setup, tmp_path):
    data = write_csv(tmp_path / "data.csv", _long_rows(30))
    lines = data.read_text().splitlines()
    lines[20] = "r20,1"
    data.write_text("\n".join(lines) + "\n")
    assert cli_error("run", str(setup())) == (
        f"{data}: column 'b' has 1 missing or infinite value (first at row 20); 1 more "
        "column(s) have some too; fix the data or set data.on_missing: drop to skip such rows")


# --- the YAML config ------------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path):
    cfg = write_config(tmp_path, "model:\n  path: [model.pt2\ndata:\n  path: data.csv\n")
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: invalid YAML at line 3, column 5: expected ',' or ']', but got ':'")


def test_yaml_tab_indentation(tmp_path):
    cfg = write_config(tmp_path, "model:\n\tpath: model.pt2\n")
    message = cli_error("run", str(cfg))
    assert message.startswith(f"{cfg}: invalid YAML at line 2, column 1: ")


@pytest.mark.parametrize("text, expected", [
    ("", "the config must be a mapping with sections model, data, audit, compare, report "
         "(got None, a NoneType)"),
    ("- model\n- data\n", "the config must be a mapping with sections model, data, audit, "
                          "compare, report (got ['model', 'data'], a list)"),
    ("model: {path: m.pt2}\nreport: {dir: r}\n", "missing required key 'data'"),
    ("data: {path: d.csv}\nreport: {dir: r}\n", "missing required key 'model'"),
])
def test_config_shape(tmp_path, text, expected):
    cfg = write_config(tmp_path, text)
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"


@pytest.mark.parametrize("sections, expected", [
    ({"reprot": {"dir": "r"}},
     "unknown key 'reprot'; did you mean 'report'? (allowed: data, report, model, audit, "
     "compare, engine, ray)"),
    ({"data": {"path": "data.csv", "chunk_row": 5}},
     "unknown key 'chunk_row' in data; did you mean 'chunk_rows'? (allowed: path, features, "
     "label, id, on_missing, chunk_rows, train)"),
    ({"audit": {"proxies": [{"feature": "c", "max_shares": 0.2}]}},
     "unknown key 'max_shares' in audit.proxies[0]; did you mean 'max_share'? (allowed: "
     "feature, max_share, max_rank, reason)"),
    ({"audit": {"allow_nonfinit": True}},
     "unknown key 'allow_nonfinit' in audit; did you mean 'allow_nonfinite'? (allowed: "
     f"{', '.join(audit_keys())})"),
    ({"model": {"path": "model.pt2", "zzz": 1}},
     "unknown key 'zzz' in model (allowed: path, class, class_file, kwargs, trust_model_code, "
     "output, output_names, device, features, transform)"),
    ({"model": {"path": "model.pt2", "trust_pickle": True}},  # the removed old name
     "unknown key 'trust_pickle' in model; did you mean 'trust_model_code'? (allowed: path, "
     "class, class_file, kwargs, trust_model_code, output, output_names, device, features, "
     "transform)"),
])
def test_unknown_keys_suggest_the_right_one(setup, tmp_path, sections, expected):
    cfg = write_config(tmp_path, {**config(tmp_path), **sections})
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"


@pytest.mark.parametrize("sections, expected", [
    ({"audit": {"top_k": "3"}}, "audit.top_k must be an integer >= 1 (got '3', a str)"),
    ({"audit": {"top_k": 0}}, "audit.top_k must be an integer >= 1 (got 0, an int)"),
    ({"audit": {"proxies": {"feature": "c"}}},
     "audit.proxies must be a list of {feature, max_share, max_rank} (got {'feature': 'c'}, "
     "a dict)"),
    ({"audit": {"proxies": [{"feature": "c"}]}},
     "audit.proxies[0] needs a limit: max_share, max_rank or both"),
    ({"audit": {"allow_nonfinite": "yes"}},
     "audit.allow_nonfinite must be true or false (got 'yes', a str)"),
    ({"model": {"path": "model.pt2", "trust_model_code": 1}},
     "model.trust_model_code must be true or false (got 1, an int)"),
    ({"model": {"path": 3}}, "model.path must be a non-empty string (got 3, an int)"),
    ({"model": {"path": "model.pt2", "device": "gpu"}},
     "model.device must be one of auto, cpu, cuda (got 'gpu', a str)"),
    ({"data": {"path": "data.csv", "features": "a,b,c"}},
     "data.features must be a non-empty list of names (got 'a,b,c', a str)"),
    ({"data": {"path": "data.csv", "features": ["a", "a"]}},
     "data.features lists 'a' more than once"),
    ({"data": {"path": "data.csv", "on_missing": "skip"}},
     "data.on_missing must be one of error, drop (got 'skip', a str)"),
    ({"data": {"path": "data.csv", "chunk_rows": 0}},
     "data.chunk_rows must be an integer >= 1 (got 0, an int)"),
    ({"report": {"dir": "r", "formats": ["pdf"]}},
     f"report.formats[0] must be one of {', '.join(WRITERS)} (got 'pdf', a str)"),
    ({"report": "reports"}, "report must be a mapping (got 'reports', a str)"),
])
def test_wrong_types(setup, tmp_path, sections, expected):
    cfg = write_config(tmp_path, {**config(tmp_path), **sections})
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"


@pytest.mark.parametrize("sections, expected", [
    ({"audit": {"proxies": [{"feature": "c", "max_share": 1.5}]}},
     "audit.proxies[0].max_share must be a number in [0, 1] (got 1.5, a float)"),
    ({"audit": {"proxies": [{"feature": "c", "max_share": -0.1}]}},
     "audit.proxies[0].max_share must be a number in [0, 1] (got -0.1, a float)"),
    ({"audit": {"proxies": [{"feature": "c", "max_share": float("nan")}]}},
     "audit.proxies[0].max_share must be a number in [0, 1] (got nan, a float)"),
    ({"audit": {"dominance_warning": 2}},
     "audit.dominance_warning must be a number in [0, 1] (got 2, an int)"),
    ({"audit": {"dominance_warning": True}},
     "audit.dominance_warning must be a number in [0, 1] (got True, a bool)"),
    ({"compare": {"confidence": 1.0}},
     "compare.confidence must be a number strictly between 0 and 1 (got 1.0, a float)"),
])
def test_limits_outside_zero_one(setup, tmp_path, sections, expected):
    cfg = write_config(tmp_path, {**config(tmp_path), **sections})
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"


@pytest.mark.parametrize("compare, expected", [
    # Regressions: both crashed with exit 3, out of memory and in numpy's uint64 conversion.
    ({"bootstrap_samples": 100_000_000},
     "compare.bootstrap_samples must be an integer from 0 to 100000 (got 100000000, an int)"),
    ({"seed": 2**70},
     "compare.seed must be an integer from 0 to 2**64 - 1 (got 1180591620717411303424, an int)"),
    ({"seed": -1}, "compare.seed must be an integer from 0 to 2**64 - 1 (got -1, an int)"),
])
def test_compare_settings_out_of_bounds(setup, tmp_path, compare, expected):
    cfg = write_config(tmp_path, {**config(tmp_path), "compare": compare})
    model = str(tmp_path / "model.pt2")
    assert cli_error("compare", model, model, "--config", str(cfg)) == f"{cfg}: {expected}"
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"


def test_compare_settings_at_their_bounds_run(setup, tmp_path):
    cfg = write_config(tmp_path, {**config(tmp_path),
                                  "compare": {"bootstrap_samples": 100_000, "seed": 2**64 - 1}})
    model = str(tmp_path / "model.pt2")
    result = cli("compare", model, model, "--config", str(cfg), "--out",
                 str(tmp_path / "cmp"), "--quiet")
    assert result.exit_code == 0, result.output
    assert '"bootstrap_samples": 100000' in (tmp_path / "cmp" / "comparison.json").read_text()


def test_proxy_naming_an_unknown_feature(setup, tmp_path):
    cfg = setup(audit={"proxies": [{"feature": "cc", "max_share": 0.2}]})
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: audit.proxies[0].feature 'cc' is not an audited feature; did you mean 'c'? "
        "(features: a, b, c)")


def test_proxy_declared_twice(setup, tmp_path):
    cfg = setup(audit={"proxies": [{"feature": "c", "max_share": 0.2},
                                   {"feature": "c", "max_rank": 1}]})
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: audit.proxies[1].feature 'c' is declared twice")


# --- end to end in a fresh interpreter, and --debug -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("breakage", ["missing model", "text cell", "yaml"])
def test_one_line_error_in_a_fresh_interpreter(setup, tmp_path, breakage):
    cfg = setup()
    if breakage == "missing model":
        (tmp_path / "model.pt2").unlink()
        expected = f"{tmp_path / 'model.pt2'}: model file not found (model.path)"
    elif breakage == "text cell":
        write_csv(tmp_path / "data.csv", _rows_with(3, ("r4", 4.0, "oops", 2.0, 0)))
        expected = (f"{tmp_path / 'data.csv'}: column 'b' has text in row 4 ('oops'); "
                    "expected numbers")
    else:
        cfg.write_text("model: [\n")
        expected = (f"{cfg}: invalid YAML at line 2, column 1: expected the node content, "
                    "but found '<stream end>'")
    done = subprocess_run("run", str(cfg))
    assert done.returncode == 2
    assert done.stderr == f"Error: {expected}\n"
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback(setup, tmp_path):
    (tmp_path / "model.pt2").unlink()
    done = subprocess_run("run", str(setup()), "--debug")
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert f"ModelLoadError: {tmp_path / 'model.pt2'}: model file not found" in done.stderr


# --- attribution methods: audit.method, audit.baseline and the methods' settings -------------

METHOD_NAMES = ", ".join(METHODS)


@pytest.mark.parametrize("audit, expected", [
    ({"method": "shap"},
     f"audit.method must be one of {METHOD_NAMES} (got 'shap', a str)"),
    ({"baseline": "average"},
     "audit.baseline must be one of mean, zero, median, or a mapping feature -> number (got "
     "'average', a str)"),
    ({"baseline": None},
     "audit.baseline must be one of mean, zero, median, or a mapping feature -> number (got "
     "None, a NoneType)"),
    ({"baseline": {}},
     "audit.baseline must be one of mean, zero, median, or a mapping feature -> number (got "
     "{}, a dict)"),
    ({"baseline": {"a": "high"}}, "audit.baseline.a must be a finite number (got 'high', a str)"),
    ({"baseline": {"a": float("nan")}},
     "audit.baseline.a must be a finite number (got nan, a float)"),
    ({"baseline": {"a": True}}, "audit.baseline.a must be a finite number (got True, a bool)"),
    ({"baseline": {"aa": 1}},
     "audit.baseline names 'aa', which is not an audited feature; did you mean 'a'? (features: "
     "a, b, c)"),
    ({"method": "smoothgrad", "samples": 0},
     "audit.samples must be an integer from 1 to 10000 (got 0, an int)"),
    ({"method": "smoothgrad", "samples": 10**6},
     "audit.samples must be an integer from 1 to 10000 (got 1000000, an int)"),
    ({"method": "smoothgrad", "noise": 0},
     "audit.noise must be a finite number > 0 (got 0, an int)"),
    ({"method": "smoothgrad", "noise": "0.1"},
     "audit.noise must be a finite number > 0 (got '0.1', a str)"),
    ({"method": "smoothgrad", "noise": float("inf")},
     "audit.noise must be a finite number > 0 (got inf, a float)"),
    ({"method": "smoothgrad", "seed": 2**64},
     "audit.seed must be an integer from 0 to 2**64 - 1 (got 18446744073709551616, an int)"),
    ({"method": "smoothgrad", "seed": -1},
     "audit.seed must be an integer from 0 to 2**64 - 1 (got -1, an int)"),
    ({"method": "integrated_gradients", "steps": 0},
     "audit.steps must be an integer from 1 to 10000 (got 0, an int)"),
    ({"method": "integrated_gradients", "steps": 2.5},
     "audit.steps must be an integer from 1 to 10000 (got 2.5, a float)"),
    # A setting of another method would be silently ignored: refused, as unknown keys are.
    ({"steps": 10}, "audit.steps is a setting of audit.method integrated_gradients, not of "
                    "'gradient'"),
    ({"method": "integrated_gradients", "noise": 0.1},
     "audit.noise is a setting of audit.method smoothgrad, not of 'integrated_gradients'"),
    ({"method": "gradient_x_input", "samples": 5},
     "audit.samples is a setting of audit.method smoothgrad, not of 'gradient_x_input'"),
    ({"checks": {"completeness": {}}},
     "audit.checks.completeness applies to methods whose attributions add up to the score "
     f"({', '.join(name for name, m in METHODS.items() if m.complete)}); audit.method is "
     "'gradient'"),
    ({"method": "integrated_gradients", "checks": {"completeness": {"max_relative_gap": 2}}},
     "audit.checks.completeness.max_relative_gap must be a number in (0, 1] (got 2, an int)"),
    ({"method": "integrated_gradients", "checks": {"completeness": {"max_gap": 0.1}}},
     "unknown key 'max_gap' in audit.checks.completeness; did you mean 'max_relative_gap'? "
     "(allowed: max_relative_gap)"),
])
def test_method_settings_errors(setup, tmp_path, audit, expected):
    cfg = setup(audit=audit)
    assert cli_error("run", str(cfg)) == f"{cfg}: {expected}"
    assert not (tmp_path / "reports").exists()  # nothing written, not even a folder


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_x_input"])
def test_methods_needing_statistics_refuse_a_single_row(setup, tmp_path, method):
    write_csv(tmp_path / "data.csv", rows=ROWS[:1])
    assert cli_error("run", str(setup(audit={"method": method}))) == (
        f"{tmp_path / 'data.csv'}: 1 usable row(s); an audit needs at least 2 to measure how "
        "much each feature varies")


@pytest.mark.parametrize("method", ["gradient_x_input", "smoothgrad", "integrated_gradients"])
def test_every_method_runs_through_the_cli(setup, tmp_path, method):
    result = cli("run", str(setup(audit={"method": method, "baseline": "median"})), "--quiet")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["method"]["name"] == method


@pytest.mark.parametrize("kwargs, expected", [
    ({"baseline": "avg"}, "baseline must be one of mean, zero, median, or a mapping feature -> "
                          "number (got 'avg', a str)"),
    ({"baseline": {"a": "x"}}, "baseline must be one of mean, zero, median, or a mapping "
                               "feature -> number (got {'a': 'x'}, a dict)"),
])
def test_audit_settings_built_in_python_are_checked(kwargs, expected):
    with pytest.raises(sensaudit.ConfigError) as err:
        sensaudit.AuditSettings(**kwargs)
    assert str(err.value) == f"AuditSettings: {expected}"


@pytest.mark.parametrize("method, options, expected", [
    ("smoothgrad", {"samples": 0}, "samples must be an integer from 1 to 10000 (got 0, an int)"),
    ("smoothgrad", {"noise": -1.0}, "noise must be a finite number > 0 (got -1.0, a float)"),
    ("smoothgrad", {"seed": 2**64},
     "seed must be an integer from 0 to 2**64 - 1 (got 18446744073709551616, an int)"),
    ("integrated_gradients", {"steps": True},
     "steps must be an integer from 1 to 10000 (got True, a bool)"),
])
def test_method_options_built_in_python_are_checked(method, options, expected):
    # Each method checks its own options, as it declares them: built directly, and when an
    # audit builds the method from AuditSettings.method_options (named as the config key).
    cls = METHODS[method]
    with pytest.raises(sensaudit.ConfigError) as err:
        cls.Options(**options)
    assert str(err.value) == f"{cls.Options.__name__}: {expected}"
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    settings = sensaudit.AuditSettings(method=method, method_options=options)
    with pytest.raises(sensaudit.ConfigError) as err:
        sensaudit.audit_frame(torch.nn.Linear(2, 1).double(), frame, settings=settings)
    assert str(err.value) == f"<DataFrame>: audit.{expected}"


def test_an_option_of_another_method_built_in_python_is_refused():
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    settings = sensaudit.AuditSettings(method="gradient", method_options={"samples": 5})
    with pytest.raises(sensaudit.ConfigError) as err:
        sensaudit.audit_frame(torch.nn.Linear(2, 1).double(), frame, settings=settings)
    assert str(err.value) == ("<DataFrame>: audit.samples is not a setting of audit.method "
                              "'gradient' (it has none)")
