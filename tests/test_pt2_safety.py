""".pt2 files: every member, field and size must be what torch.export.save writes.

Exploits show the payload running on plain torch, then refused (marker absent) through
load_model and the CLI. The other cases check one allowlist each: members, fields, sizes,
versions. test_bad_inputs.py keeps the first four crafted-.pt2 exploits.
"""

from __future__ import annotations

import json
from pathlib import Path

import helpers_crafted as crafted
import pytest
import torch
from helpers_bad import Scorer, cli_error, config, export, tamper_pt2, write_config, write_csv

from sensaudit import ModelLoadError, load_model
from sensaudit.inputs import archive_checks, pt2_safety
from sensaudit.settings.sections import ModelConfig

TAIL = (". A crafted .pt2 can run code when loaded or run; re-export the model with "
        "torch.export.save, or set model.trust_model_code: true (--trust-model-code) only if you "
        "trust the file like code you run")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A good export with a weight and a tensor constant (read-only: tests copy it)."""
    return export(crafted.WithConstant(), tmp_path_factory.mktemp("pt2") / "model.pt2")


def _refusal(path: Path) -> str:
    with pytest.raises(pt2_safety.UnsafeExport) as err:
        pt2_safety.check_archive(path)
    return str(err.value)


def _cli_refuses(tmp_path: Path, evil: Path, reason: str, marker: Path) -> None:
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": str(evil)}))
    assert cli_error("run", str(cfg)) == (f"{evil}: refusing to load this torch.export file: "
                                          f"{reason}{TAIL}")
    assert not marker.exists()


def test_the_good_export_passes_and_loads(good):
    pt2_safety.check_archive(good)
    loaded = load_model(ModelConfig(path=good, device="cpu"))
    x = torch.ones(2, 3)
    torch.testing.assert_close(loaded.module(x), crafted.WithConstant()(x))


# --- exploits ---------------------------------------------------------------------------------

OPAQUE = ("it holds a member 'data/constants/opaque_obj_0', which torch.export.save does not "
          "write")
GUARDS = "it holds guards_code, which torch runs as Python code"


def test_opaque_constant_runs_on_plain_torch(good, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.opaque_constant(good, tmp_path / "evil.pt2", marker)
    torch.export.load(str(evil))  # picks pickle.loads by the member's name
    assert marker.read_text() == "payload ran"


def test_opaque_constant_is_refused(good, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.opaque_constant(good, tmp_path / "evil.pt2", marker)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    assert str(err.value) == f"{evil}: refusing to load this torch.export file: {OPAQUE}{TAIL}"
    assert not marker.exists()
    _cli_refuses(tmp_path, evil, OPAQUE, marker)


def test_guards_code_runs_on_plain_torch(good, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.guards_code(good, tmp_path / "evil.pt2", marker)
    module = torch.export.load(str(evil)).module()  # exec's the guards into a function
    module(torch.ones(2, 3))  # which runs on every call
    assert marker.read_text() == "payload ran"


def test_guards_code_is_refused(good, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = crafted.guards_code(good, tmp_path / "evil.pt2", marker)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(path=evil, device="cpu"))
    assert str(err.value) == f"{evil}: refusing to load this torch.export file: {GUARDS}{TAIL}"
    _cli_refuses(tmp_path, evil, GUARDS, marker)


def test_inflating_member_is_refused_from_the_directory_alone(good, tmp_path):
    # 3 MB on disk, 3 GB inflated: refused before anything is read, in bounded time and memory.
    bomb = crafted.inflating_weight(good, tmp_path / "bomb.pt2")
    assert bomb.stat().st_size < 4 * 2**20
    message, elapsed, peak = crafted.refusal_cost(bomb)
    assert message == (f"{bomb}: refusing to load this torch.export file: its member "
                       "'model/data/weights/weight_0' is compressed, which torch does not "
                       f"do for it{TAIL}")
    assert elapsed < 2 and peak < 50 * 2**20


# --- members and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize("member", ["data/aotinductor/model/model.so", "data/weights/model.pt",
                                    "data/constants/custom_obj_0", "models/other.json"])
def test_members_torch_export_save_does_not_write_are_refused(good, tmp_path, member):
    evil = crafted.rebuild(good, tmp_path / "extra.pt2", extra={member: b"\x7fELF"})
    assert _refusal(evil) == (f"it holds a member '{member}', which torch.export.save does not "
                              "write")


def test_constant_index_naming_an_unpickled_member_is_refused(good, tmp_path):
    # The index alone cannot pick another reader: its member names are checked too.
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_constants_config.json"):
            index = json.loads(data)
            index["config"]["k"]["path_name"] = "opaque_obj_0"
            return json.dumps(index).encode()
        return data
    evil = crafted.rebuild(good, tmp_path / "index.pt2", edit)
    assert _refusal(evil) == ("its weight or constant 'k' is stored as 'opaque_obj_0', not as a "
                              "plain tensor member")


def test_member_far_larger_than_its_tensor_is_refused(good, tmp_path):
    evil = crafted.rebuild(good, tmp_path / "big.pt2", lambda name, data: (
        bytes(2**20) if name.endswith("weights/weight_0") else data))
    assert _refusal(evil) == ("its member 'data/weights/weight_0' is 1,048,576 bytes, far more "
                              "than the 12 its tensors cover")


def test_tensor_larger_than_its_member_is_refused(good, tmp_path):
    # torch would allocate the tensor_meta's size for an empty member (torch.zeros)
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            index = json.loads(data)
            index["config"]["w"]["tensor_meta"]["sizes"] = [{"as_int": 10**12}]
            return json.dumps(index).encode()
        return b"" if name.endswith("weights/weight_0") else data
    evil = crafted.rebuild(good, tmp_path / "zeros.pt2", edit)
    assert _refusal(evil) == ("its member 'data/weights/weight_0' is 0 bytes where its tensors "
                              "need 4,000,000,000,000")


def test_total_size_is_capped(good, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_checks, "MAX_ARCHIVE_BYTES", 1000)
    assert _refusal(good).endswith("bytes, over the 1,000 sensaudit opens")


@pytest.mark.parametrize("where, edit, found", [
    ("an unknown field in a node", lambda g: g["graph_module"]["graph"]["nodes"][0].update(
        evil=1), "its models/model.json.graph_module.graph.nodes[0] has a field 'evil' that "
                 "torch.export.save does not write"),
    ("a union with two members", lambda g: g["graph_module"]["graph"]["nodes"][0]["outputs"][0]
     .update(as_none=True), "its models/model.json.graph_module.graph.nodes[0].outputs[0] has 2 "
                            "members where one is expected"),
    ("unknown node metadata", lambda g: g["graph_module"]["graph"]["nodes"][0]["metadata"]
     .update(code="x"), "its node metadata has a field 'code' that torch.export.save does not "
                        "write"),
    ("a getattr path in source_fn_stack", lambda g: g["graph_module"]["graph"]["nodes"][0][
        "metadata"].update(source_fn_stack="f,torch.serialization.os.__dict__"),
     "its source_fn_stack names 'torch.serialization.os.__dict__'"),
    ("a dunder in a parameter name", lambda g: g["graph_module"]["signature"]["input_specs"][0][
        "parameter"].update(parameter_name="__class__"),
     "its parameter_name '__class__' names a special attribute"),
    ("an unknown verifier", lambda g: g.update(verifiers=["os.system"]),
     "it names verifier 'os.system'"),
    ("a newer schema", lambda g: g.update(schema_version={"major": 9, "minor": 0}),
     f"its schema version 9.0 is not one this torch ({torch.__version__}) reads (8.x)"),
    ("a field this torch does not know", lambda g: g.update(guards_source="import os"),
     "its models/model.json has a field 'guards_source' that torch.export.save does not "
     "write"),
])
def test_graph_json_fields_are_checked(good, tmp_path, where, edit, found):
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            edit(program)
            return json.dumps(program).encode()
        return data
    assert _refusal(tamper_pt2(good, tmp_path / "edited.pt2", change)) == found


def test_a_file_from_another_torch_release_is_judged_by_its_content(good, tmp_path):
    # No version pin: the torch_version a file records is text, never a reason to refuse.
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            program["torch_version"] = "2.99.0"
            return json.dumps(program).encode()
        return data
    edited = tamper_pt2(good, tmp_path / "edited.pt2", change)
    assert load_model(ModelConfig(path=edited, device="cpu")).module is not None


def test_running_under_a_newer_torch_is_not_refused(good, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.14.1")
    assert load_model(ModelConfig(path=good, device="cpu")).module is not None


def test_running_under_a_torch_older_than_the_layout_is_refused(good, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.7.1")
    assert _refusal(good) == ("this is torch 2.7.1; sensaudit's checks read the file layouts "
                              "of torch 2.8 and newer")


def test_loading_patches_nothing_process_wide(good, monkeypatch):
    # The old checks swapped torch.load for the whole process while torch.export.load ran.
    seen = []
    real_export_load = torch.export.load

    def spy(*args, **kwargs):
        seen.append(torch.load)
        return real_export_load(*args, **kwargs)

    monkeypatch.setattr(torch.export, "load", spy)
    load_model(ModelConfig(path=good, device="cpu"))
    assert seen == [torch.serialization.load]


def test_untrusted_module_has_no_guard_code(good):
    # The guard function is Python source built from the file and exec'd: not built untrusted.
    module = load_model(ModelConfig(path=good, device="cpu")).module
    assert not hasattr(module, "_guards_fn")


def test_scorer_export_from_the_bad_input_tests_passes(tmp_path):
    pt2_safety.check_archive(export(Scorer(), tmp_path / "scorer.pt2"))
