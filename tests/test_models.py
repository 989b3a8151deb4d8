"""sensaudit.inputs.models: every supported format loads into an eval-mode scorer; unsafe
pickles are refused without running their payload; broken files get a ModelLoadError naming the
file."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from models import save_exported
from torch import nn

from sensaudit import ModelLoadError, load_model
from sensaudit.settings.sections import ModelConfig

REFUSED = ("refusing to unpickle: the file holds pickled Python objects (a whole module or "
           "other code), and unpickling runs whatever code the file names. Save a safe format "
           "instead (torch.export.save to .pt2, or torch.save(model.state_dict()) with "
           "model.class), or set model.trust_model_code: true (--trust-model-code) only if you "
           "trust the file like code you run")

MYMODELS = textwrap.dedent("""\
    import torch
    from torch import nn


    class Scorer(nn.Module):
        def __init__(self, n_features=3, hidden=4):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.Dropout(0.5),
                                      nn.Linear(hidden, 1))

        def forward(self, x):
            return self.body(x).squeeze(1)


    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 2)

        def forward(self, x):
            return self.proj(x)


    class NotAModule:
        pass
    """)


def _scorer() -> nn.Module:
    """Linear(3, 4) -> Dropout(0.5) -> Linear(4, 1): dropout shows whether eval mode is on."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))


def _scorer_weights(source: nn.Module) -> dict[str, torch.Tensor]:
    """``source``'s weights under the names mymodels.Scorer uses (its layers sit in .body)."""
    return {f"body.{name}": tensor for name, tensor in source.state_dict().items()}


def _inputs() -> torch.Tensor:
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(9))


def _load(path: Path, **kwargs):
    return load_model(ModelConfig(path=path, device="cpu", **kwargs))


def _load_error(path: Path, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as err:
        _load(path, **kwargs)
    return str(err.value)


@pytest.fixture
def mymodels(tmp_path):
    """A class file 'mymodels.py' beside the model files (named by model.class_file)."""
    (tmp_path / "mymodels.py").write_text(MYMODELS, encoding="utf-8")
    return tmp_path


# --- formats ----------------------------------------------------------------------------------


def test_torch_export_program(tmp_path):
    model = _scorer().eval()
    path = save_exported(model, tmp_path / "scorer.pt2", n_features=3)
    loaded = _load(path)
    x = _inputs()
    assert loaded.format == "torch.export"
    assert loaded.path == path
    assert loaded.device == torch.device("cpu")
    assert loaded.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x), rtol=1e-6, atol=1e-7)
        # Dropout was exported in eval mode: repeated calls agree (exported graphs fix their
        # train/eval behaviour at export time and cannot be switched afterwards).
        assert torch.equal(loaded.module(x), loaded.module(x))
    # The batch dimension is dynamic: any number of rows.
    assert loaded.module(torch.zeros(1, 3)).shape == (1, 1)
    assert loaded.module(torch.zeros(50, 3)).shape == (50, 1)


def test_format_is_told_by_contents_not_name(tmp_path):
    exported = save_exported(_scorer().eval(), tmp_path / "scorer.pt2", n_features=3)
    renamed = exported.rename(tmp_path / "scorer.bin")
    assert _load(renamed).format == "torch.export"
    torch.jit.save(torch.jit.script(_scorer()), str(tmp_path / "scripted.pt2"))
    assert _load(tmp_path / "scripted.pt2").format == "torchscript"


def test_torchscript_archive_comes_back_in_eval_mode(tmp_path):
    model = _scorer().train()
    path = tmp_path / "scorer.ts"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = _load(path)
    x = _inputs()
    assert loaded.format == "torchscript"
    assert loaded.module.training is False
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model.eval()(x), rtol=0, atol=0)


def test_state_dict_with_its_class_file(mymodels, monkeypatch):
    monkeypatch.chdir("/")  # the import must not depend on the working directory
    source = _scorer()
    path = mymodels / "weights.pt"
    torch.save(_scorer_weights(source), path)
    path_before, modules_before = list(sys.path), set(sys.modules)

    loaded = _load(path, class_path="mymodels:Scorer", class_file=mymodels / "mymodels.py",
                   kwargs={"n_features": 3, "hidden": 4})

    assert loaded.format == "state_dict"
    assert type(loaded.module).__name__ == "Scorer"
    assert loaded.module.training is False
    assert sys.path == path_before  # the model's folder was never put on sys.path
    added = set(sys.modules) - modules_before  # only the class file, under a private name
    assert len(added) == 1 and added.pop().startswith("_sensaudit_class_file_")
    assert "mymodels" not in sys.modules
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), source.eval()(x).squeeze(1), rtol=0,
                                   atol=0)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_wrapped_training_checkpoint(mymodels, key):
    source = _scorer()
    path = mymodels / "checkpoint.pt"
    torch.save({key: _scorer_weights(source), "epoch": 7, "lr": 0.01}, path)
    loaded = _load(path, class_path="mymodels:Scorer", class_file=mymodels / "mymodels.py")
    assert loaded.format == "state_dict"
    for name, tensor in _scorer_weights(source).items():
        assert torch.equal(loaded.module.state_dict()[name], tensor)


def test_state_dict_that_does_not_match_the_class(mymodels):
    path = mymodels / "weights.pt"
    torch.save(_scorer_weights(_scorer()), path)
    assert _load_error(path, class_path="mymodels:Other",
                       class_file=mymodels / "mymodels.py") == (
        f"{path}: state_dict does not match model.class 'mymodels:Other': Error(s) in loading "
        'state_dict for Other: Missing key(s) in state_dict: "proj.weight", "proj.bias". '
        'Unexpected key(s) in state_dict: "body.0.weight", "body.0.bias", "body.2.weight", '
        '"body.2.bias".')


def test_state_dict_with_wrong_shapes(mymodels):
    path = mymodels / "weights.pt"
    torch.save(_scorer_weights(_scorer()), path)
    message = _load_error(path, class_path="mymodels:Scorer", kwargs={"hidden": 5},
                          class_file=mymodels / "mymodels.py")
    assert message.startswith(f"{path}: state_dict does not match model.class "
                              "'mymodels:Scorer': Error(s) in loading state_dict for Scorer: "
                              "size mismatch for body.0.weight: copying a param with shape "
                              "torch.Size([4, 3]) from checkpoint, the shape in current model "
                              "is torch.Size([5, 3]).")


def test_state_dict_class_errors(mymodels):
    path = mymodels / "weights.pt"
    torch.save(_scorer().state_dict(), path)
    class_file = mymodels / "mymodels.py"
    assert _load_error(path, class_path="mymodels:Missing", class_file=class_file) == (
        f"{path}: model.class 'mymodels:Missing': module 'mymodels' has no attribute "
        "'Missing'")
    assert _load_error(path, class_path="no_such_module_xyz:Scorer") == (
        f"{path}: model.class 'no_such_module_xyz:Scorer': cannot import module "
        "'no_such_module_xyz' (ModuleNotFoundError: No module named 'no_such_module_xyz')")
    assert _load_error(path, class_path="mymodels:NotAModule", class_file=class_file) == (
        f"{path}: model.class 'mymodels:NotAModule' is not a torch.nn.Module subclass; it is "
        "not built")
    assert _load_error(path, class_path="mymodels:Scorer", kwargs={"width": 3},
                       class_file=class_file) == (
        f"{path}: model.class 'mymodels:Scorer': cannot construct it with model.kwargs "
        "{'width': 3} (Scorer.__init__() got an unexpected keyword argument 'width')")


def test_state_dict_without_class(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_scorer().state_dict(), path)
    assert _load_error(path) == (
        f"{path}: the file holds a state_dict (weights only); set model.class: "
        "'package.module:ClassName' (and model.kwargs) so the model can be built")


def test_checkpoint_without_weights(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "note": "no weights here"}, path)
    assert _load_error(path, class_path="mymodels:Scorer") == (
        f"{path}: the file holds a dict that is neither a state_dict of tensors nor a model")


# --- pickles ----------------------------------------------------------------------------------


def test_whole_pickled_module_is_refused_by_default(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_scorer(), path)
    assert _load_error(path) == f"{path}: {REFUSED}"


@pytest.mark.parametrize("how", ["argument", "config"])
def test_whole_pickled_module_loads_when_trusted(tmp_path, how):
    model = _scorer().train()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    if how == "argument":
        loaded = load_model(ModelConfig(path=path, device="cpu"), trust_model_code=True)
    else:
        loaded = _load(path, trust_model_code=True)
    assert loaded.format == "pickle"
    assert loaded.module.training is False
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model.eval()(x), rtol=0, atol=0)


def test_trust_argument_overrides_the_config(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_scorer(), path)
    with pytest.raises(ModelLoadError):
        load_model(ModelConfig(path=path, device="cpu", trust_model_code=True),
                   trust_model_code=False)


class _Payload:
    """Unpickling this writes a marker file: a stand-in for a malicious model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def _save_malicious(path: Path, marker: Path, how: str) -> None:
    if how == "torch.save":
        torch.save({"weights": torch.zeros(2), "extra": _Payload(marker)}, path)
    else:  # a bare pickle, as a legacy file would be
        with path.open("wb") as handle:
            pickle.dump(_Payload(marker), handle)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_does_not_run_by_default(tmp_path, how):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    _save_malicious(path, marker, how)

    assert _load_error(path, class_path="mymodels:Scorer") == f"{path}: {REFUSED}"
    assert not marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_payload_is_live(tmp_path, how):
    # The control for the test above: trusting the file does run the payload, so the
    # marker's absence there means the loader refused, not that the payload was inert.
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    _save_malicious(path, marker, how)
    with pytest.raises(ModelLoadError) as err:
        _load(path, trust_model_code=True)
    assert marker.read_text() == "payload ran"
    if how == "torch.save":
        assert str(err.value) == f"{path}: the pickle holds a dict, not a model"
    else:  # torch's legacy reader unpickles a magic number first: the payload, then None
        assert str(err.value) == (f"{path}: cannot load pickled module: corrupt or truncated "
                                  "file? (Invalid magic number; corrupt file?)")


# --- broken files -----------------------------------------------------------------------------


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _exported(tmp_path: Path) -> Path:
    return save_exported(_scorer().eval(), tmp_path / "scorer.pt2", n_features=3)


def _scripted(tmp_path: Path) -> Path:
    path = tmp_path / "scorer.ts"
    torch.jit.save(torch.jit.script(_scorer()), str(path))
    return path


def _state_dict(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save(_scorer().state_dict(), path)
    return path


def _legacy_state_dict(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.pt"
    torch.save(_scorer().state_dict(), path, _use_new_zipfile_serialization=False)
    return path


TRUNCATED_ZIP = ("corrupt or truncated model file: it starts as a zip archive (as torch.save, "
                 "torch.jit.save and torch.export.save write) but its end is missing or damaged")


@pytest.mark.parametrize("make", [_exported, _scripted, _state_dict])
def test_truncated_archive(tmp_path, make):
    path = _truncate(make(tmp_path))
    assert _load_error(path, class_path="mymodels:Scorer") == f"{path}: {TRUNCATED_ZIP}"


def test_truncated_legacy_file(tmp_path):
    path = _truncate(_legacy_state_dict(tmp_path))
    assert _load_error(path, class_path="mymodels:Scorer") == (
        f"{path}: not a readable PyTorch model file: corrupt, truncated or another format? "
        "(EOFError)")


def test_garbage_files(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    assert _load_error(path) == f"{path}: the model file is empty (model.path)"
    path.write_bytes(b"PK\x03\x04garbage")
    assert _load_error(path) == f"{path}: {TRUNCATED_ZIP}"


def test_text_file_is_not_taken_for_a_pickle(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("definitely not a model")
    assert _load_error(path) == (
        f"{path}: not a PyTorch model file: expected a zip archive (torch.export.save, "
        "torch.jit.save, torch.save) or a legacy torch.save file")


def test_exported_archive_with_corrupt_member(tmp_path):
    import zipfile

    source = _exported(tmp_path)
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("models/model.json"):
                data = b"{not json"
            dst.writestr(item, data)
    message = _load_error(broken)
    assert message.startswith(f"{broken}: cannot load torch.export program: corrupt or "
                              "truncated file? (")


def test_missing_file_and_directory(tmp_path):
    assert _load_error(tmp_path / "nope.pt2") == (
        f"{tmp_path / 'nope.pt2'}: model file not found (model.path)")
    assert _load_error(tmp_path) == f"{tmp_path}: model.path is a directory, not a model file"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda(tmp_path):
    path = _exported(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=path, device="cuda"))
    assert str(err.value) == (f"{path}: model.device is 'cuda' but no CUDA device is "
                              "available here; use 'auto' or 'cpu'")


def test_same_class_file_name_for_two_models(tmp_path):
    # v1/arch.py and v2/arch.py define different Scorer classes; loading v2 after v1 in one
    # process (as `sensaudit compare` does) must build v2's class, not reuse v1's module.
    loaded = {}
    for version, width in (("v1", 3), ("v2", 5)):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "arch.py").write_text(textwrap.dedent(f"""\
            from torch import nn


            class Scorer(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = nn.Linear({width}, 1)

                def forward(self, x):
                    return self.linear(x)
            """))
        weights = {f"linear.{k}": v for k, v in nn.Linear(width, 1).state_dict().items()}
        torch.save(weights, folder / "weights.pt")
        loaded[version] = _load(folder / "weights.pt", class_path="arch:Scorer",
                                class_file=folder / "arch.py")
    assert "arch" not in sys.modules
    assert loaded["v1"].module.linear.in_features == 3
    assert loaded["v2"].module.linear.in_features == 5
