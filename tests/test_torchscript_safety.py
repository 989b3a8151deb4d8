"""TorchScript files are code: sensaudit loads only those whose code is tensor math.

Each crafted archive is a good torch.jit.save with one part replaced. Each exploit test shows the
payload running on plain torch (its marker appears), then refused through load_model and the
CLI with its marker absent, so it cannot pass on a dud payload.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import helpers_crafted as crafted
import pytest
import torch
from helpers_bad import Scorer, cli_error, config, write_config, write_csv
from torch import nn

from sensaudit import ModelLoadError, load_model
from sensaudit.inputs import torchscript_safety
from sensaudit.inputs.torchscript_code import UnsafeCode, check_code
from sensaudit.inputs.torchscript_debug import BadDebugInfo, check_debug_pickle
from sensaudit.settings.sections import ModelConfig

REFUSED = "refusing to load this TorchScript file: "
TAIL = ("TorchScript is code that runs when the file is loaded and run, and sensaudit accepts "
        "only tensor math from standard layers; convert the model to .pt2 with "
        "torch.export.save, or set model.trust_model_code: true (--trust-model-code) only if "
        "you trust the file like code you run")


def _mlp() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.LayerNorm(8), nn.BatchNorm1d(8),
                         nn.Dropout(0.1), nn.GELU(), nn.Tanh(), nn.Linear(8, 1),
                         nn.Sigmoid()).eval()


class Clamped(nn.Module):
    """A custom forward: x @ w, clamp, where, exp: tensor math written by hand."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(x @ self.w, -5.0, 5.0)
        return torch.where(y > 0, torch.exp(-y), y * 0.5) + x.mean(1)


class Embedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x.long().clamp(0, 4)).mean(1)).squeeze(1)


BENIGN = {
    "scripted mlp": lambda: torch.jit.script(_mlp()),
    "traced mlp": lambda: torch.jit.trace(_mlp(), torch.rand(4, 3)),
    "scripted custom forward": lambda: torch.jit.script(Clamped()),
    "traced custom forward": lambda: torch.jit.trace(Clamped(), torch.rand(4, 3)),
    "scripted embedding": lambda: torch.jit.script(Embedded().eval()),
    "scripted linear": lambda: torch.jit.script(Scorer()),
}


@pytest.mark.parametrize("kind", list(BENIGN))
def test_standard_layers_and_tensor_math_load_without_a_flag(tmp_path, kind):
    path = tmp_path / "model.pt"
    torch.jit.save(BENIGN[kind](), str(path))
    loaded = load_model(ModelConfig(path=path, device="cpu"))
    assert loaded.format == "torchscript"
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), torch.jit.load(str(path))(x))


EXPLOITS = {
    # name: (builder, when the payload runs on plain torch, why sensaudit refuses)
    "from_file write in __setstate__": (
        crafted.from_file_in_setstate, "load",
        "__torch__.helpers_crafted.StatefulScorer: a __setstate__ method: custom "
        "state code runs while the file loads"),
    "aten::save in __setstate__": (
        crafted.save_in_setstate, "load",
        "__torch__.helpers_crafted.StatefulScorer: a __setstate__ method: custom "
        "state code runs while the file loads"),
    "aten::save in forward": (
        crafted.save_in_forward, "run",
        "__torch__.helpers_bad.Scorer.forward: a call or reference to 'torch.save', which is "
        "not on sensaudit's list of tensor operations"),
    # Found while writing the checks: payloads outside the module's own methods.
    "ops.aten.save in a helper function of another code file": (
        crafted.ops_save_in_helper_function, "run",
        "__torch__.torch.nn.functional.relu: a call or reference to 'ops.aten.save', which is "
        "not on sensaudit's list of tensor operations"),
    "__setstate__ of a TorchScript class held as an attribute": (
        crafted.save_in_helper_class_setstate, "load",
        "__torch__.helpers_crafted.Scale: a __setstate__ method: custom state "
        "code runs while the file loads"),
    "C++ custom class aten.OpaqueObject in data.pkl, declared by a code file": (
        crafted.opaque_object, "load",
        "__torch__.torch.classes.aten: a definition of '__torch__.torch.classes.aten."
        "OpaqueObject', a name torch resolves to its C++ custom classes "
        "(__torch__.torch.classes.*), not to this code"),
}


@pytest.mark.parametrize("kind", list(EXPLOITS))
def test_exploit_runs_on_plain_torch(tmp_path, kind):
    build, when, _ = EXPLOITS[kind]
    marker = tmp_path / "PAYLOAD_RAN"
    module = torch.jit.load(str(build(tmp_path, marker)))
    if when == "run":
        assert not marker.exists()
        module(torch.ones(2, 3))
    assert marker.exists()


@pytest.mark.parametrize("kind", list(EXPLOITS))
def test_exploit_is_refused_and_never_runs(tmp_path, kind):
    build, _, reason = EXPLOITS[kind]
    marker = tmp_path / "PAYLOAD_RAN"
    evil = build(tmp_path, marker)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    assert str(err.value) == f"{evil}: {REFUSED}{reason}. {TAIL}"
    assert not marker.exists()
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": evil.name}))
    assert cli_error("run", str(cfg)) == f"{evil}: {REFUSED}{reason}. {TAIL}"
    assert not marker.exists()


# --- the archive: members, versions, pickles -------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return crafted.scripted(Scorer(), tmp_path_factory.mktemp("ts") / "plain.pt")


def _refusal(path: Path) -> str:
    with pytest.raises(torchscript_safety.UnsafeTorchScript) as err:
        torchscript_safety.check_archive(path)
    return str(err.value)


def test_the_plain_archive_passes(plain):
    torchscript_safety.check_archive(plain)


def test_unknown_member_is_refused(plain, tmp_path):
    evil = crafted.rebuild(plain, tmp_path / "extra.pt", extra={"bytecode.pkl": b"\x80\x02N."})
    assert _refusal(evil) == ("it holds a member 'bytecode.pkl', which torch.jit.save does not "
                              "write")


def test_code_outside_the_torch_namespace_is_refused(plain, tmp_path):
    evil = crafted.rebuild(plain, tmp_path / "code.pt", extra={"code/os.py": b"x = 1\n"})
    assert _refusal(evil) == "it holds a member 'code/os.py', which torch.jit.save does not write"


def test_pickle_global_off_the_list_is_refused(plain, tmp_path):
    evil = crafted.rebuild(plain, tmp_path / "global.pt", crafted.edit_pickle_global(
        "data.pkl", b"collections\nOrderedDict", b"builtins\neval"))
    assert _refusal(evil) == ("its data.pkl holds a pickled reference to 'builtins.eval', which "
                              "is not on the list of what torch writes for tensors")


def test_storage_larger_than_its_tensor_is_refused(plain, tmp_path):
    evil = crafted.rebuild(plain, tmp_path / "big.pt",
                           lambda name, data: bytes(2**20) if name.endswith("data/0") else data)
    assert _refusal(evil) == ("its member 'data/0' is 1,048,576 bytes where its tensor needs 12")


def test_unreviewed_format_version_is_refused(plain, tmp_path):
    evil = crafted.rebuild(plain, tmp_path / "version.pt", lambda name, data: (
        b"99\n" if name.endswith("version") and "serialization" not in name else data))
    assert _refusal(evil) == ("its format version '99' is not one sensaudit's checks were "
                              "written for (3 to 10)")


def test_duplicate_member_is_refused(plain, tmp_path):
    evil = tmp_path / "dup.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(evil, "w") as out, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked for
        for info in src.infolist():
            out.writestr(info, src.read(info))
        out.writestr(src.infolist()[0], b"")
    assert _refusal(evil).startswith("it holds two members named ")


# --- the code check, on source alone ---------------------------------------------------------

MODULE = "class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n{body}"


@pytest.mark.parametrize("body, found", [
    ('    _0 = torch.from_file("/tmp/x", True, 5)\n    return x\n', "'torch.from_file'"),
    ('    _0 = ops.aten.from_file("/tmp/x", True, 5)\n    return x\n', "'ops.aten.from_file'"),
    ('    _0 = ops.prim.Print(x)\n    return x\n', "'ops.prim.Print'"),
    ('    _0 = ops.quantized.linear(x)\n    return x\n', "'ops.quantized.linear'"),
    ("    print(x)\n    return x\n", "a call to 'print'"),
    ("    _0 = fork(x)\n    return x\n", "a call to 'fork'"),
    ("    _0 = torch\n    return x\n", "'torch' used on its own"),
    ("    _0 = getattr(torch, \"save\")\n    return x\n", "getattr/hasattr other than"),
    ("    _0 = x.__class__\n    return x\n", "the attribute '__class__'"),
    ("    _0 = torch.empty([3])\n    return x\n", "'torch.empty'"),
    ("    _0 = __torch__.torch.classes.dist.Store(x)\n    return x\n",
     "'__torch__.torch.classes.dist.Store'"),
    # a name assigned in one branch only is TorchScript's global of that name in the other
    ("    if True:\n      f = 1\n    else:\n      _0 = f(x)\n    return x\n", "a call to 'f'"),
    ("    if True:\n      f = 1\n    else:\n      pass\n    _0 = f\n    return x\n",
     "the name 'f'"),
    ("    if True:\n      f = 1\n    else:\n      f = 2\n    _0 = f\n    return x\n", None),
    ("    torch = x\n    return x\n", "an assignment to 'torch'"),
    ("    _0 = [i for i in x]\n    return x\n", "an expression of kind ListComp"),
    ("    import os\n    return x\n", "a statement of kind Import"),
    ("    # comment\n    return x\n", "a comment"),
    ('    _0 = """torch.save"""\n    return x\n', "a string literal"),
    ("    return x.set_(x)\n", "the method 'set_'"),
])
def test_code_off_the_list_is_refused(body, found):
    source = MODULE.format(body=body)
    if found is None:
        check_code({"__torch__": source})
        return
    with pytest.raises(UnsafeCode) as err:
        check_code({"__torch__": source})
    assert found in str(err.value)


# --- names torch resolves elsewhere: C++ custom classes, operators behind method names -------

OPAQUE = ("__torch__.torch.classes.aten: a definition of "
          "'__torch__.torch.classes.aten.OpaqueObject', a name torch resolves to its C++ custom "
          "classes (__torch__.torch.classes.*), not to this code")
OPAQUE_UNDECLARED = ("its data.pkl holds a pickled reference to "
                     "'__torch__.torch.classes.aten.OpaqueObject', which is not on the list of "
                     "what torch writes for tensors")


@pytest.mark.parametrize("declare, reason", [(True, OPAQUE), (False, OPAQUE_UNDECLARED)])
def test_a_cpp_custom_class_in_data_pkl_runs_on_plain_torch_and_is_refused(tmp_path, declare,
                                                                           reason):
    """aten.OpaqueObject's C++ __setstate__ unpickles its state with Python's pickle: the
    payload runs while torch.jit.load reads data.pkl, whether or not a code file declares a
    class of that name (torch looks among its C++ classes first)."""
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.opaque_object(tmp_path, marker, declare=declare)
    torch.jit.load(str(evil))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    assert str(err.value) == f"{evil}: {REFUSED}{reason}. {TAIL}"
    assert not marker.exists()


def test_a_cpp_custom_class_is_refused_by_run_compare_and_init(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.opaque_object(tmp_path, marker)
    good = crafted.scripted(Scorer(), tmp_path / "good.pt")
    expected = f"{evil}: {REFUSED}{OPAQUE}. {TAIL}"
    data = write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": evil.name}))
    assert cli_error("run", str(cfg)) == expected
    for old, new in ((evil, good), (good, evil)):
        assert cli_error("compare", str(old), str(new), "--config", str(cfg)) == expected
    assert cli_error("init", str(evil), str(data), "--label", "label", "--config",
                     str(tmp_path / "new.yaml")) == expected
    assert not marker.exists() and not (tmp_path / "new.yaml").exists()


def test_code_may_not_define_names_among_the_cpp_custom_classes():
    for module, source in [("__torch__.torch.classes.aten", "class OpaqueObject(Module):\n"
                            "  __parameters__ = []\n"),
                           ("__torch__.torch.classes.aten", "def OpaqueObject(x: int) -> int:\n"
                            "  return x\n"),
                           ("__torch__.torch", "class classes(Module):\n  __parameters__ = []\n")]:
        with pytest.raises(UnsafeCode) as err:
            check_code({module: source})
        assert "a name torch resolves to its C++ custom classes" in str(err.value)


@pytest.mark.parametrize("name", list(crafted.OPERATOR_METHOD_CALLS))
def test_a_method_named_like_an_unlisted_operator_reaches_it_on_plain_torch_and_is_refused(
        tmp_path, name):
    """The archive defines a method ``name``; forward's ``w.name(...)`` on a tensor compiles to
    aten::name (_reshape_alias makes a view with no bounds check, empty_like reads uninitialised
    memory), not to the method."""
    evil = crafted.operator_method(tmp_path, name)
    kinds = {node.kind() for node in torch.jit.load(str(evil)).forward.graph.nodes()}
    assert f"aten::{name}" in kinds
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    reason = (f"__torch__.helpers_bad.Scorer.forward: a call to the method '{name}', which is "
              "not on the list")
    assert str(err.value) == f"{evil}: {REFUSED}{reason}. {TAIL}"


@pytest.mark.parametrize("name", [*crafted.OPERATOR_METHOD_CALLS, "resize_", "save", "Print"])
def test_a_method_named_like_any_operator_is_refused_where_defined(name):
    source = MODULE.format(body="    return x\n") + f"  def {name}(self: __torch__.M) -> int:\n" \
        "    return 1\n"
    with pytest.raises(UnsafeCode) as err:
        check_code({"__torch__": source})
    assert str(err.value) == (f"__torch__.M.{name}: a method named '{name}', like an operator "
                              "that is off the list")


# --- debug pickles ------------------------------------------------------------------------------


def test_a_debug_pickle_index_out_of_range_crashes_plain_torch_and_is_refused(tmp_path):
    """A 1.7 KB file that loads on plain torch, and whose first error (here a wrong input
    shape) is a SIGSEGV: torch indexes the debug pickle's string table unchecked."""
    evil = crafted.debug_index_out_of_range(tmp_path)
    ran = subprocess.run([sys.executable, "-c", "import sys, torch; m = torch.jit.load(sys.argv"
                          "[1]); print('loaded', flush=True); m(torch.ones(2, 5))", str(evil)],
                         capture_output=True, text=True, timeout=120)
    assert ran.stdout == "loaded\n" and ran.returncode == -signal.SIGSEGV
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    reason = ("its code/__torch__/helpers_bad.py.debug_pkl holds a debug pickle index outside "
              "its string table")
    assert str(err.value) == f"{evil}: {REFUSED}{reason}. {TAIL}"


def _debug(entries: tuple, table: tuple = ("", "x = 1\n", "f.py"),
           tag: str = "FORMAT_WITH_STRING_TABLE") -> bytes:
    return pickle.dumps((tag, table, entries), protocol=2)


@pytest.mark.parametrize("data, found", [
    (_debug(((0, (([], 0, 0), 0, 0), 0), (3, (([1], 2, 1), 0, 5), 1))), None),
    (_debug(((0, (([], 0, 0), 0, 1), 0),)), None),  # as torch writes for generated code
    (_debug((), tag="OTHER"), "a debug pickle not in the layout torch writes"),
    (_debug(((0, (([3], 0, 0), 0, 0), 0),)), "a debug pickle index outside its string table"),
    (_debug(((0, (([1], 3, 0), 0, 0), 0),)), "a debug pickle index outside its string table"),
    (_debug(((0, (([1], 2, 0), 0, 8), 0),)), "a debug pickle range outside its text"),
    (_debug(((0, (([1], 2, 0), -1, 2), 0),)), "a debug pickle range outside its text"),
    (_debug(((4, (([], 0, 0), 0, 0), 0), (3, (([], 0, 0), 0, 0), 0))),
     "a debug pickle whose offsets are out of order or past its code"),
    (_debug(((99, (([], 0, 0), 0, 0), 0),)),
     "a debug pickle whose offsets are out of order or past its code"),
    (_debug(((0, (([], 0, 0), 0), 0),)), "a debug pickle entry not in the layout torch writes"),
    (_debug(((0, (([], 0, 0.5), 0, 0), 0),)),
     "a debug pickle entry not in the layout torch writes"),
    (pickle.dumps(OrderedDict(), protocol=2), "a debug pickle naming collections.OrderedDict"),
])
def test_debug_pickles_are_checked_in_full(data, found):
    code = "def f() -> int:\n  return 1\n"  # 28 bytes: offsets up to 28
    if found is None:
        check_debug_pickle(data, code)
        return
    with pytest.raises(BadDebugInfo) as err:
        check_debug_pickle(data, code)
    assert str(err.value) == found
