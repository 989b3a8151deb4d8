"""Issue 18 (inputs and report folder): configs that name code, reports that replace or delete
files they did not write. Each exploit is shown working in plain Python, then refused through
sensaudit with exit 2 and a one-line message naming the file and the key."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from helpers_bad import cli_error, config, state_dict, write_config, write_csv

# --- model.class naming a function: the command must never run -------------------------------


def _marker_command(marker: Path) -> str:
    return f'"{sys.executable}" -c "open(r\'{marker}\', \'w\').close()"'


def test_os_system_as_model_class_runs_a_command_in_plain_python(tmp_path):
    marker = tmp_path / "ran"
    # What a loader that calls whatever model.class names does with these settings.
    module, _, name = "os:system".partition(":")
    getattr(importlib.import_module(module), name)(**{"command": _marker_command(marker)})
    assert marker.exists()


def test_os_system_as_model_class_is_not_called(tmp_path):
    marker = tmp_path / "ran"
    state_dict(tmp_path / "weights.pt")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={
        "path": "weights.pt", "class": "os:system",
        "kwargs": {"command": _marker_command(marker)}}))
    message = cli_error("run", str(cfg))
    assert message == (f"{tmp_path / 'weights.pt'}: model.class 'os:system' names a "
                       "builtin_function_or_method, not a torch.nn.Module class; it is not "
                       "called")
    assert not marker.exists()
