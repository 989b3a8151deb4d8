"""model.trust_model_code / --trust-model-code / trust_model_code=: the file is trusted like code
you run. Each effect has a test: whole pickled modules are unpickled, and the .pt2 and
TorchScript checks are skipped (so a crafted file's payload does run: the switch is honest about
that).
"""

from __future__ import annotations

from pathlib import Path

import helpers_crafted as crafted
import pytest
import torch
from helpers_bad import cli, config, export, write_config, write_csv
from typer.testing import CliRunner

from sensaudit import ModelLoadError, load_config, load_model
from sensaudit.cli.app import app
from sensaudit.settings.sections import ModelConfig


def _crafted_pt2(folder: Path, marker: Path) -> Path:
    # guards_code: a file that loads and audits fine, and runs its payload on each call
    good = export(crafted.WithConstant(), folder / "good.pt2")
    return crafted.guards_code(good, folder / "evil.pt2", marker)


def _crafted_torchscript(folder: Path, marker: Path) -> Path:
    return crafted.from_file_in_setstate(folder, marker)


def _whole_module(folder: Path, marker: Path) -> Path:
    torch.save(torch.nn.Linear(3, 1), folder / "whole.pt")
    return folder / "whole.pt"


EFFECTS = {"unpickles whole modules": _whole_module,
           "skips the .pt2 checks": _crafted_pt2,
           "skips the TorchScript checks": _crafted_torchscript}


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_keyword(tmp_path, effect):
    marker = tmp_path / "PAYLOAD_RAN"
    path = EFFECTS[effect](tmp_path, marker)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=path, device="cpu"))
    assert "set model.trust_model_code: true (--trust-model-code)" in str(err.value)
    assert not marker.exists()
    loaded = load_model(ModelConfig(path=path, device="cpu"), trust_model_code=True)
    loaded.module(torch.ones(2, 3))
    assert marker.exists() or effect == "unpickles whole modules"


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_config_key_and_cli_flag(tmp_path, effect):
    marker = tmp_path / "PAYLOAD_RAN"
    path = EFFECTS[effect](tmp_path, marker)
    write_csv(tmp_path / "data.csv")
    plain = write_config(tmp_path, config(tmp_path, model={"path": path.name}), "plain.yaml")
    assert cli("run", str(plain), "--quiet").exit_code == 2
    assert not marker.exists()
    assert cli("run", str(plain), "--quiet", "--trust-model-code").exit_code in (0, 1)
    if effect != "unpickles whole modules":
        assert marker.exists()
        marker.unlink()
    trusted = write_config(tmp_path, config(tmp_path, model={"path": path.name,
                                                              "trust_model_code": True}))
    assert load_config(trusted).model.trust_model_code is True
    assert cli("run", str(trusted), "--quiet").exit_code in (0, 1)
    assert marker.exists() or effect == "unpickles whole modules"


@pytest.mark.parametrize("command", ["run", "compare"])
def test_help_says_what_the_switch_allows(command):
    text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
                    .output.split())
    assert "--trust-model-code" in text
    assert "unpickle whole pickled modules and skip sensaudit's checks of .pt2 and TorchScript" \
           in text
    assert "--trust-pickle" not in text
