"""model.class imports only installed code; model.class_file runs the one file you name.

Files that arrive with a model (a planted torch/ or mypkg/ beside weights.pt) are never put
first on sys.path, and no imported module is dropped to make room for them. Each planted package
writes a marker when imported: shown live in a fresh interpreter that puts the folder first (as
sensaudit used to), then absent after sensaudit loads the model.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers_bad import MODELS_SOURCE, Scorer, cli, config, write_config, write_csv
from torch import nn

from sensaudit import ModelLoadError, load_model
from sensaudit.settings.sections import ModelConfig

PAYLOAD = "open({marker!r}, 'w').write('payload ran')\n"


def _plant(folder: Path, package: str, marker: Path, modules: dict[str, str]) -> None:
    """A package ``folder/package`` whose every module writes ``marker`` when imported."""
    root = folder / package
    root.mkdir()
    (root / "__init__.py").write_text(PAYLOAD.format(marker=str(marker)))
    for name, body in modules.items():
        (root / f"{name}.py").write_text(PAYLOAD.format(marker=str(marker)) + body)


def _imported_first_from(folder: Path, module: str) -> None:
    """The control: a fresh interpreter with ``folder`` first on sys.path imports it."""
    code = f"import sys; sys.path.insert(0, {str(folder)!r}); import {module}"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)


def test_planted_torch_beside_the_weights_is_not_imported(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    _plant(tmp_path, "torch", marker, {"nn": "class Linear:\n    pass\n"})
    _imported_first_from(tmp_path, "torch.nn")
    assert marker.exists()  # live: whatever puts this folder first runs it
    marker.unlink()
    torch.save(nn.Linear(3, 1).state_dict(), tmp_path / "weights.pt")

    loaded = load_model(ModelConfig(path=tmp_path / "weights.pt", device="cpu",
                                    class_path="torch.nn:Linear",
                                    kwargs={"in_features": 3, "out_features": 1}))

    assert type(loaded.module) is nn.Linear  # the installed torch's class
    assert not marker.exists()
    assert sys.modules["torch"] is torch


def test_planted_package_shadowing_an_installed_one_is_not_imported(tmp_path, monkeypatch):
    installed, model_dir = tmp_path / "site", tmp_path / "model"
    installed.mkdir()
    model_dir.mkdir()
    (installed / "mypkg_under_test").mkdir()
    (installed / "mypkg_under_test" / "__init__.py").write_text("")
    (installed / "mypkg_under_test" / "models.py").write_text(MODELS_SOURCE)
    monkeypatch.syspath_prepend(str(installed))  # as if pip-installed
    monkeypatch.delitem(sys.modules, "mypkg_under_test", raising=False)
    monkeypatch.delitem(sys.modules, "mypkg_under_test.models", raising=False)
    marker = tmp_path / "PAYLOAD_RAN"
    _plant(model_dir, "mypkg_under_test", marker, {"models": MODELS_SOURCE})
    _imported_first_from(model_dir, "mypkg_under_test.models")
    assert marker.exists()
    marker.unlink()
    torch.save(Scorer().state_dict(), model_dir / "weights.pt")

    loaded = load_model(ModelConfig(path=model_dir / "weights.pt", device="cpu",
                                    class_path="mypkg_under_test.models:Scorer"))

    assert Path(sys.modules[type(loaded.module).__module__].__file__).parent.parent == installed
    assert not marker.exists()
    for name in ("mypkg_under_test", "mypkg_under_test.models"):
        sys.modules.pop(name, None)


def test_module_beside_the_model_is_not_imported_and_the_message_says_why(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    (tmp_path / "arch_beside.py").write_text(PAYLOAD.format(marker=str(marker)) + MODELS_SOURCE)
    torch.save(Scorer().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=tmp_path / "weights.pt", device="cpu",
                               class_path="arch_beside:Scorer"))
    assert str(err.value) == (
        f"{tmp_path / 'weights.pt'}: model.class 'arch_beside:Scorer': cannot import module "
        "'arch_beside' (ModuleNotFoundError: No module named 'arch_beside'); modules beside the "
        "model file are not imported: set model.class_file: arch_beside.py to use that file")
    assert not marker.exists()
    assert "arch_beside" not in sys.modules


@pytest.mark.parametrize("class_name", ["Scorer", "arch:Scorer"])
def test_class_file_through_the_cli(tmp_path, class_name):
    models = tmp_path / "models"
    models.mkdir()
    (models / "arch.py").write_text(MODELS_SOURCE)
    torch.save(Scorer().state_dict(), models / "weights.pt")
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={
        "path": "models/weights.pt", "class": class_name, "class_file": "models/arch.py"}))
    result = cli("run", str(cfg), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "arch" not in sys.modules


def test_two_class_files_with_one_name_keep_their_own_classes(tmp_path):
    paths = {}
    for version, width in (("v1", 3), ("v2", 5)):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "arch.py").write_text(textwrap.dedent(f"""\
            from torch import nn

            WIDTH = {width}


            class Scorer(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = nn.Linear(WIDTH, 1)

                def forward(self, x):
                    return self.linear(x)
            """))
        torch.save({f"linear.{k}": v for k, v in nn.Linear(width, 1).state_dict().items()},
                   folder / "weights.pt")
        paths[version] = folder
    first, second = (load_model(ModelConfig(path=f / "weights.pt", device="cpu",
                                            class_path="Scorer", class_file=f / "arch.py"))
                     for f in paths.values())
    assert (first.module.linear.in_features, second.module.linear.in_features) == (3, 5)
    first_module = sys.modules[type(first.module).__module__]
    assert first_module is not sys.modules[type(second.module).__module__]
    assert first_module.WIDTH == 3  # loading v2 did not replace v1's module
    assert "arch" not in sys.modules


@pytest.mark.parametrize("content, expected", [
    (None, "model.class_file {file} is not a file"),
    ("raise RuntimeError('no GPU here')\n",
     "model.class_file {file}: cannot import it (RuntimeError: no GPU here)"),
])
def test_class_file_errors_are_one_line(tmp_path, content, expected):
    file = tmp_path / "arch.py"
    if content is not None:
        file.write_text(content)
    torch.save(Scorer().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=tmp_path / "weights.pt", device="cpu", class_path="Scorer",
                               class_file=file))
    assert str(err.value) == f"{tmp_path / 'weights.pt'}: " + expected.format(file=file)
