"""Operators in a .pt2 graph: admitted by what they do (sensaudit.inputs.operator_policy).

The attack: a graph may call any torch operator, and ``aten.from_file(path, shared=True)``
followed by the graph's own ``copy_`` writes chosen bytes to a chosen file (a ``.pth`` file in
site-packages runs at every later Python start). Shown working on plain torch, then refused on
every command and engine, with nothing written. The policy's rules are tested one by one: the
operators standard layers export to are admitted; each operator with a side effect is refused
by name.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import helpers_crafted_pt2 as crafted
import pytest
import torch
from helpers_bad import cli, cli_error, config, write_config, write_csv
from torch import nn

from sensaudit import ModelLoadError, load_model
from sensaudit.inputs import operator_policy, pt2_safety
from sensaudit.settings.sections import ModelConfig

TAIL = (". A crafted .pt2 can run code when loaded or run; re-export the model with "
        "torch.export.save, or set model.trust_model_code: true (--trust-model-code) only if you "
        "trust the file like code you run")
FROM_FILE = ("its graph calls 'torch.ops.aten.from_file.default': aten::from_file takes a "
             "string 'filename'")
PAYLOAD = b"import os; os.system('echo pwned')\n"


@pytest.fixture
def writer(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "site-packages" / "evil.pth"
    victim.parent.mkdir()
    victim.write_bytes(b"#" * len(PAYLOAD))  # a shared mapping writes over an existing file
    return crafted.file_writer(tmp_path, victim, PAYLOAD), victim


def _refusal(path: Path) -> str:
    with pytest.raises(pt2_safety.UnsafeExport) as err:
        pt2_safety.check_archive(path)
    return str(err.value)


def test_the_file_writing_graph_writes_on_plain_torch(writer):
    model, victim = writer
    torch.export.load(str(model)).module()(torch.randn(4, 3))
    assert victim.read_bytes() == PAYLOAD


def test_the_file_writing_graph_is_refused_before_loading(writer):
    model, victim = writer
    assert _refusal(model) == FROM_FILE
    with pytest.raises(ModelLoadError):
        load_model(ModelConfig(path=model, device="cpu"))
    assert victim.read_bytes() == b"#" * len(PAYLOAD)


def test_the_file_writing_graph_is_refused_on_every_command(writer, tmp_path):
    model, victim = writer
    data = write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": str(model)}))
    expected = f"{model}: refusing to load this torch.export file: {FROM_FILE}{TAIL}"
    assert cli_error("run", str(cfg)) == expected
    assert cli_error("compare", str(model), str(model), "--config", str(cfg),
                     "--out", str(tmp_path / "cmp")) == expected
    assert cli_error("init", str(model), str(data), "--config",
                     str(tmp_path / "new.yaml")) == expected
    assert victim.read_bytes() == b"#" * len(PAYLOAD)
    assert not (tmp_path / "new.yaml").exists() and not (tmp_path / "cmp").exists()


def test_the_file_writing_graph_is_refused_on_the_ray_engine(writer, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine's tests need Ray")
    model, victim = writer
    write_csv(tmp_path / "data.csv")
    cfg = write_config(tmp_path, config(tmp_path, model={"path": str(model)}))
    # The driver loads every model with the safe loader before any Ray worker starts.
    result = cli("run", str(cfg), "--engine", "ray")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: {model}: refusing to load this torch.export file: {FROM_FILE}{TAIL}")
    assert victim.read_bytes() == b"#" * len(PAYLOAD)


# --- the policy, rule by rule ------------------------------------------------------------------

class _Zoo(nn.Module):
    """The standard layers scorers are built from."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 3)
        self.body = nn.Sequential(
            nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.LayerNorm(8),
            nn.GELU(), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.Tanh(), nn.SiLU(), nn.ELU(),
            nn.LeakyReLU(), nn.Softplus(), nn.Linear(8, 2), nn.Sigmoid())
        self.conv = nn.Conv1d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x[:, 0].clamp(0, 9).long())
        feats = torch.cat([x[:, :3], tokens], dim=1)
        wave = self.conv(x[:, None, :3]).flatten(1).mean(1, keepdim=True)
        scores = self.body(feats)
        return torch.softmax(scores, -1)[:, :1] + wave / 2 - x.float().div(3, rounding_mode=None)[
            :, :1].clamp_min(0).sqrt().abs()


@pytest.mark.parametrize("decompose", [False, True], ids=["training IR", "decomposed"])
def test_every_operator_standard_layers_export_to_is_admitted(decompose):
    program = torch.export.export(_Zoo().eval(), (torch.rand(5, 3),))
    if decompose:
        program = program.run_decompositions()
    called = {n.target for n in program.graph.nodes if n.op == "call_function"}
    assert len(called) > 10
    pt2_safety.check_graph_ops(program)  # raises for the first refused call


def test_the_sample_models_use_only_admitted_operators():
    root = Path(__file__).resolve().parents[1] / "sensaudit/sample/sample_data"
    for path in sorted(root.glob("*.pt2")):
        pt2_safety.check_archive(path)
        pt2_safety.check_graph_ops(torch.export.load(str(path)))


REFUSED = {
    "aten.from_file.default": "aten::from_file takes a string 'filename'",
    "aten.save.default": "aten::save returns nothing: it acts only by side effect",
    "aten._print.default": "aten::_print is a torch-internal operator that sensaudit has not "
                           "reviewed",
    "aten._reshape_alias.default": "aten::_reshape_alias is a torch-internal operator that "
                                   "sensaudit has not reviewed",
    "aten._copy_from.default": "aten::_copy_from is a torch-internal operator that sensaudit "
                               "has not reviewed",
    "aten._unsafe_index_put.default": "aten::_unsafe_index_put is a torch-internal operator "
                                      "that sensaudit has not reviewed",
    "aten.set_data.default": "aten::set_data returns nothing: it acts only by side effect",
    "aten.set_.source_Storage": "aten::set_ changes which memory a tensor views",
    "aten.set_.source_Tensor": "aten::set_ changes which memory a tensor views",
    "aten.as_strided_.default": "aten::as_strided_ changes which memory a tensor views",
    "aten.set.source_Tensor": "aten::set changes which memory a tensor views",
    "aten.resize_.default": "aten::resize_ returns uninitialised memory",
    "aten.empty_like.default": "aten::empty_like returns uninitialised memory",
    "aten.empty.memory_format": "aten::empty returns uninitialised memory",
    "aten.new_empty_strided.default": "aten::new_empty_strided returns uninitialised memory",
    "aten.rand.default": "aten::rand draws from the process's random state",
    "aten.bernoulli.p": "aten::bernoulli draws from the process's random state",
    "aten.normal_.default": "aten::normal_ draws from the process's random state",
    "aten.sparse_coo_tensor.indices": "aten::sparse_coo_tensor is a low-level (sparse, nested "
                                      "or backend-specific) operator",
    "aten.to_mkldnn.default": "aten::to_mkldnn is a low-level (sparse, nested or "
                              "backend-specific) operator",
    "profiler._record_function_enter_new.default": "profiler::_record_function_enter_new is "
                                                   "outside the operator namespaces sensaudit "
                                                   "admits (aten)",
}


@pytest.mark.parametrize("path", list(REFUSED))
def test_each_operator_with_a_side_effect_is_refused_by_name(path):
    operator = operator_policy.resolve(f"torch.ops.{path}")
    assert operator is not None, path
    assert operator_policy.refusal(operator) == REFUSED[path]


@pytest.mark.parametrize("path", ["aten.linear.default", "aten.relu_.default",
                                  "aten.dropout.default", "aten.gelu.default",
                                  "aten.div.Tensor_mode", "aten._softmax.default",
                                  "aten.copy_.default", "aten._to_copy.default",
                                  "aten.detach_.default", "aten.unsqueeze_.default"])
def test_operators_that_compute_on_tensors_are_admitted(path):
    assert operator_policy.refusal(operator_policy.resolve(f"torch.ops.{path}")) is None


def test_higher_order_operators_that_call_an_operator_argument_are_refused():
    assert operator_policy.refusal(torch.ops.higher_order.cond) is None
    assert operator_policy.refusal(torch.ops.higher_order.auto_functionalized) == (
        "the higher-order operator 'auto_functionalized' is not one sensaudit admits")


@pytest.mark.parametrize("text", ["torch.ops.aten.linear", "torch.ops.aten.linear.nosuch",
                                  "torch.ops.aten.__class__.default", "torch.nn.functional.linear",
                                  "torch.ops.aten.linear.default.__call__"])
def test_only_operator_paths_resolve(text):
    assert operator_policy.resolve(text) is None


def test_a_refused_operator_in_the_json_is_refused_before_loading(tmp_path):
    evil = crafted.with_operator(tmp_path, "torch.ops.aten.full.default",
                                 "torch.ops.aten.empty.memory_format")
    assert _refusal(evil) == ("its graph calls 'torch.ops.aten.empty.memory_format': "
                              "aten::empty returns uninitialised memory")


def test_dropout_is_admitted_only_in_eval_mode(tmp_path):
    model = load_model(ModelConfig(path=crafted.dropout(tmp_path, train=False), device="cpu"))
    x = torch.randn(4, 3)
    torch.testing.assert_close(model.module(x), model.module(x))  # no random state used
    training = crafted.dropout(tmp_path, train=True)
    pt2_safety.check_archive(training)  # the operator is admitted; the call is not
    with pytest.raises(pt2_safety.UnsafeExport, match="aten::dropout is called in training "
                                                      "mode, which draws random numbers"):
        pt2_safety.check_graph_ops(torch.export.load(str(training)))
    with pytest.raises(ModelLoadError):
        load_model(ModelConfig(path=training, device="cpu"))


# --- shape expressions: bounded before sympy evaluates them ----------------------------------

BOMB = "Pow(Integer(9), Pow(Integer(9), Pow(Integer(9), Integer(9))))"


@pytest.mark.slow
def test_a_power_tower_hangs_plain_torch(tmp_path):
    good = crafted.dropout(tmp_path, train=False)
    evil = crafted.expression(good, tmp_path / "bomb.pt2", BOMB)
    code = f"import torch; torch.export.load({str(evil)!r})"
    with pytest.raises(subprocess.TimeoutExpired):  # 9**(9**387420489): it never ends
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=5)


@pytest.mark.parametrize("text, found", [
    (BOMB, "a shape expression raises to a power that is not a literal number"),
    ("Symbol('s0', positive=True) + 9**9**9**9", "a shape expression holds"),
    ("Mul(Symbol('s0'), Pow(Integer(2), Integer(99999)))", "a shape expression computes"),
    ("PowByNatural(Integer(3), Integer(10000000))", "a shape expression computes"),
    ("LShift(Integer(1), Integer(10000000))", "a shape expression computes"),
    ("Pow(Symbol('s0'), Symbol('s1'))", "a shape expression raises to a power that is not"),
    ("Float('1.5', precision=100000000)", "a shape expression holds 'precision=100000000'"),
    ("Integer(" + "9" * 2000 + ")", "a shape expression computes"),
    ("Add(" * 100 + "Integer(1)" + ")" * 100, "a shape expression is nested more than 64"),
    ("Integer(1).__class__", "a shape expression holds"),
    ("Symbol('s0')[0]", "a shape expression holds"),
])
def test_oversized_or_non_srepr_expressions_are_refused_fast(tmp_path, text, found):
    good = crafted.dropout(tmp_path, train=False)
    evil = crafted.expression(good, tmp_path / "bomb.pt2", text)
    started = time.perf_counter()
    assert _refusal(evil).startswith(found)
    assert time.perf_counter() - started < 2  # the refusal needs no big number: far below 2 s


@pytest.mark.parametrize("text", [
    "Symbol('s31', positive=True, integer=True)",
    "Add(Mul(Integer(2), Symbol('s0', positive=True, integer=True)), Integer(-1))",
    "Pow(Symbol('s0', positive=True, integer=True), Integer(2))",
    "FloorDiv(Symbol('s0', positive=True, integer=True), Integer(4))",
    "Max(Integer(1), Symbol('s0', positive=True, integer=True))",
])
def test_the_expressions_torch_writes_pass(text):
    from sensaudit.inputs.pt2_expressions import check_expression
    check_expression(text)


# --- TorchScript's list, held to the same rules ----------------------------------------------

# Why a TorchScript overload may be refused by the tensor-graph policy and still be safe: it
# works on TorchScript's own values (lists, dicts, strings, generic elements), which a .pt2
# graph never holds, or it is a Python operator spelled as a dunder.
_INTERPRETER_VALUES = re.compile(r"aten::\w+ (takes a (t|Any|AnyEnumType|Dict\[.*\]) '\w+'"
                                 r"|takes a string '(a|b|s|self|string|substr|el|t|type)'"
                                 r"|is a torch-internal operator .*)$")


def test_the_torchscript_list_admits_no_operator_the_policy_refuses_for_a_side_effect():
    from sensaudit.inputs.torchscript_ops import ATEN_OPS

    refused = {}
    for name in sorted(ATEN_OPS):
        if not hasattr(torch.ops.aten, name):
            continue
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            why = operator_policy.refusal(getattr(packet, overload))
            if why is None or (_INTERPRETER_VALUES.fullmatch(why)
                               and ("internal" not in why or name.startswith("__"))):
                continue
            refused[f"{name}.{overload}"] = why
    # In-place dropout, like dropout, draws only in training (TorchScript passes
    # self.training, and sensaudit runs models in eval mode); list.extend returns nothing.
    assert refused == {
        "alpha_dropout_.default": "aten::alpha_dropout_ draws from the process's random state",
        "dropout_.default": "aten::dropout_ draws from the process's random state",
        "feature_dropout_.default": "aten::feature_dropout_ draws from the process's random "
                                    "state",
        "extend.t": "aten::extend returns nothing: it acts only by side effect",
    }
