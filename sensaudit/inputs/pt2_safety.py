"""Checks that make loading a ``torch.export`` file (.pt2) run none of its author's code.

``torch.export.load`` alone is not safe on a crafted file (torch's docs say as much: it "uses
pickle under the hood"). In torch 2.13 a .pt2 can run code three ways:

- unpickling: tensors it cannot read with ``weights_only=True`` (the example inputs, weights
  or constants marked ``use_pickle``) are read again with ``weights_only=False``, and opaque
  constants with ``pickle.loads``;
- symbolic shapes: every ``expr_str`` in the graph is parsed by ``sympy.sympify``, which
  evaluates Python;
- graph ops: a node may name any callable reachable as ``torch.<a>.<b>...`` (``os.system``
  among them, through ``torch.serialization.os``), called when the model runs.

So before loading, :func:`check_archive` reads the archive's JSON and refuses pickled payloads,
symbolic expressions outside a small sympy vocabulary, and ops outside ``torch.ops``; during
loading, :func:`weights_only_unpickling` forces ``weights_only=True`` on every ``torch.load``;
after loading, :func:`check_graph_ops` checks that every call in every graph is a torch
operator or a symbolic-shape operation. The loader skips all three only for ``trust_pickle``.
"""

from __future__ import annotations

import io
import json
import math
import operator
import pickle
import re
import tokenize
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

# Names that appear in torch.export's serialised sympy expressions (sympy's srepr), plus the
# torch sympy functions the deserialiser itself provides. Anything else is refused.
SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Piecewise",
    "ExprCondPair", "true", "false", "True", "False", "None", "oo", "zoo", "nan", "Infinity",
    "NegativeInfinity", "NaN", "Zero", "One", "NegativeOne", "Half", "floor", "ceiling",
    "BooleanTrue", "BooleanFalse", "Tuple",
    # assumptions in Symbol(...)
    "positive", "negative", "integer", "nonnegative", "nonpositive", "real", "finite",
    "zero", "nonzero", "even", "odd", "commutative", "precision",
    # torch.utils._sympy.functions, which the deserialiser names
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_EXPR_OPERATOR_CHARS = frozenset("(),=+-*/%<>!&|~^")
_EXPR_STRING = re.compile(r"'[\w.+\-]*'")
# Graph node, tensor, parameter and input names; type names; versions. No quotes, spaces,
# brackets or semicolons: nothing that can close a string or start a statement in the code
# torch generates from these names.
SAFE_TEXT = re.compile(r"[\w.+\-:]*")
_OP_PATH = re.compile(r"torch\.ops\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")

# Graph calls that are not torch operators but appear in exported graphs: tuple indexing for
# multi-output ops, and arithmetic on symbolic sizes (torch._export.serde.serialize._SYM_OPS).
SYMBOLIC_OPS = frozenset({
    operator.getitem, operator.eq, operator.ne, operator.le, operator.ge, operator.lt,
    operator.gt, operator.neg, operator.pos, operator.mul, operator.add, operator.sub,
    operator.floordiv, operator.mod, operator.pow, operator.truediv, operator.and_,
    operator.or_, operator.lshift, operator.rshift, math.trunc, torch.sym_not, torch.sym_int,
    torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_sqrt,
})
_SYMBOLIC_OP_NAMES = frozenset(
    f"{'_operator' if f.__module__ in ('operator', '_operator') else f.__module__}.{f.__name__}"
    for f in SYMBOLIC_OPS)


class UnsafeExport(Exception):
    """The archive holds something that would run code when loaded or run; the message says
    what, in a few words."""


def check_archive(path: Path) -> None:
    """Refuse (UnsafeExport) a .pt2 whose JSON asks for unpickling, eval or non-torch ops."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("_config.json") and ("/data/weights/" in name
                                                  or "/data/constants/" in name):
                _check_payload_config(json.loads(archive.read(name)))
            elif "/models/" in name and name.endswith(".json"):
                _check_graph_json(json.loads(archive.read(name)), "")


@contextmanager
def weights_only_unpickling() -> Iterator[None]:
    """Make every ``torch.load`` inside the block read tensors and plain containers only."""
    real_load = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(*args, **kwargs)
        except pickle.UnpicklingError as exc:
            if "unsupported global" not in str(exc).lower():
                raise
            # torch.export.load retries a failed read with weights_only=False: this message
            # is what the caller sees, since that retry fails the same way.
            raise UnsafeExport("it holds pickled Python objects (classes or functions), "
                               "not only tensors") from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = real_load


def check_graph_ops(program: Any) -> None:
    """Every call in every graph of a loaded ExportedProgram is a torch operator."""
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("call_method", "call_module"):
                raise UnsafeExport(f"its graph calls {node.op} '{node.target}'")
            if node.op != "call_function":
                continue
            target = node.target
            if isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
                continue
            if target in SYMBOLIC_OPS:
                continue
            raise UnsafeExport(f"its graph calls {getattr(target, '__name__', target)!r}, "
                               "which is not a torch operator")


def _check_payload_config(config: Any) -> None:
    entries = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeExport("its weights or constants index is not a mapping")
    for fqn, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") or not entry.get("tensor_meta"):
            raise UnsafeExport(f"its weight or constant '{str(fqn)[:60]}' is a pickled object, "
                               "not a plain tensor")


def _check_graph_json(value: Any, key: str) -> None:
    if key == "metadata":
        return  # stack traces and module paths, kept as text, never evaluated
    if isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, "a key")
            _check_graph_json(v, k)
    elif isinstance(value, list):
        for item in value:
            _check_graph_json(item, key)
    elif isinstance(value, str):
        if key == "expr_str":
            _check_expression(value)
        elif key in ("in_spec", "out_spec"):
            _check_spec(_json(value, key))
        elif key == "target":
            if not (_OP_PATH.fullmatch(value) and "__" not in value
                    or value in _SYMBOLIC_OP_NAMES):
                raise UnsafeExport(f"its graph calls '{value[:60]}', which is not a torch "
                                   "operator")
        elif key not in ("as_string", "as_strings"):  # op arguments such as einsum equations
            _check_text(value, key)


def _check_spec(value: Any) -> None:
    """A pytree spec (how inputs nest): type names and keys, with keys JSON-encoded inside."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "context" and isinstance(v, str):
                _check_spec(_json(v, "context"))
            else:
                _check_spec(v)
    elif isinstance(value, list):
        for item in value:
            _check_spec(item)
    elif isinstance(value, str):
        _check_text(value, "an input spec")


def _check_text(value: str, where: str) -> None:
    if not SAFE_TEXT.fullmatch(value):
        raise UnsafeExport(f"{where} holds unexpected text {value[:60]!r}")


def _check_expression(text: str) -> None:
    """A symbolic shape expression, parsed by sympy with eval: sympy names, numbers only."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        raise UnsafeExport(f"a shape expression does not parse: {text[:60]!r}") from None
    for token in tokens:
        ok = (token.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL,
                             tokenize.ENDMARKER)
              or token.type == tokenize.NAME and token.string in SYMPY_NAMES
              or token.type == tokenize.STRING and _EXPR_STRING.fullmatch(token.string)
              or token.type == tokenize.OP and set(token.string) <= _EXPR_OPERATOR_CHARS)
        if not ok:
            raise UnsafeExport(f"a shape expression holds {token.string[:40]!r}, which is not "
                               "sympy arithmetic")


def _json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise UnsafeExport(f"{key} is not valid JSON") from None
