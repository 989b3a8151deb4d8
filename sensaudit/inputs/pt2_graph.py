"""The JSON documents of a .pt2 archive, checked field by field before torch reads them.

Two layers. :func:`check_fields` walks a document against torch's own schema classes
(``torch._export.serde.schema``, the structure ``torch.export.save`` writes): an unknown field,
a union with two members or a value of the wrong type is refused. Then :func:`check_program`
checks the meaning of every text field torch feeds to ``eval``, ``exec``, ``import`` or
``getattr`` while loading, and the names it turns into generated code:

- ``expr_str`` (parsed by ``sympy.sympify``, which evaluates Python): sympy arithmetic only;
- node ``target`` and ``as_operator`` (resolved with ``getattr`` from ``torch``): operators
  :mod:`.operator_policy` admits, or symbolic-size arithmetic; ``source_fn_stack`` likewise
  names only dotted paths;
- ``guards_code`` (``exec``'d by ``ExportedProgram.module()``): must be empty, as
  ``torch.export.save`` writes it;
- custom (C++ or opaque) objects: refused, as they are unpickled;
- input specs, verifiers, names: the text torch writes (identifiers, dots, dashes).

The schema is the running torch's own (``torch._export.serde.schema``), not a copy for one
release: a file written by another torch is accepted when every field in it is one this torch
knows and checks, and refused naming the first one it does not.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from typing import Any

import torch
from torch._export.serde import schema
from torch._export.serde.union import _Union

from sensaudit.inputs import operator_policy
from sensaudit.inputs.archive_checks import UnsafeArchive
from sensaudit.inputs.pt2_expressions import check_expression
from sensaudit.inputs.pt2_names import SYMBOLIC_OP_NAMES

VERIFIERS = frozenset({"ATEN", "TRAINING"})
NODE_METADATA = frozenset({"stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn",
                           "custom", "from_node"})
# Graph node, tensor, parameter and input names; type names; versions. No quotes, spaces,
# brackets or semicolons: nothing that can close a string or start a statement in the code
# torch generates from these names.
SAFE_TEXT = re.compile(r"[\w.+\-:]*")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Names torch uses as attribute paths on the rebuilt module (parameter and buffer names).
_FQN_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "fqn",
                       "user_input_name"})
_CUSTOM_OBJECTS = frozenset({"as_custom_obj", "custom_obj"})
_FREE_TEXT = frozenset({"as_string", "as_strings"})  # op arguments: constants in the graph
_SPECIAL_FLOATS = ("Infinity", "-Infinity", "NaN")


def check_fields(value: Any, cls: type, where: str) -> None:
    """``value`` (parsed JSON) has exactly the structure of schema class ``cls``."""
    try:
        _conforms(value, cls, where)
    except RecursionError:
        raise UnsafeArchive(f"its {where} is nested too deeply") from None


def check_program(document: dict[str, Any]) -> None:
    """models/model.json: versions, then every text torch evaluates or resolves."""
    # The running torch's schema: its major version marks changes it cannot read; a file from a
    # newer minor may hold fields this torch does not know, which check_fields has refused.
    major, _minor = schema.SCHEMA_VERSION[:2]
    version = document.get("schema_version") or {}
    if version.get("major") != major:
        raise UnsafeArchive(f"its schema version {version.get('major')}.{version.get('minor')} "
                            f"is not one this torch ({torch.__version__}) reads ({major}.x)")
    if document.get("guards_code"):
        raise UnsafeArchive("it holds guards_code, which torch runs as Python code")
    for verifier in document.get("verifiers", []):
        if verifier not in VERIFIERS:
            raise UnsafeArchive(f"it names verifier {str(verifier)[:40]!r}")
    try:
        _check_value(document, "")
    except RecursionError:
        raise UnsafeArchive("its models/model.json is nested too deeply to check") from None


def _conforms(value: Any, hint: Any, where: str) -> None:
    if isinstance(hint, str):
        hint = getattr(schema, hint)
    if isinstance(hint, typing.ForwardRef):
        hint = getattr(schema, hint.__forward_arg__)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return
        if len(options) != 1:
            raise UnsafeArchive(f"its {where} has a type sensaudit does not check")
        _conforms(value, options[0], where)
    elif origin is list:
        _expect(isinstance(value, list), where, "a list")
        for i, item in enumerate(value):
            _conforms(item, typing.get_args(hint)[0], f"{where}[{i}]")
    elif origin is dict:
        _expect(isinstance(value, dict), where, "a mapping")
        for key, item in value.items():
            _conforms(item, typing.get_args(hint)[1], f"{where}.{key}")
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        _expect(isinstance(value, dict), where, "a mapping")
        hints = typing.get_type_hints(hint, globalns=vars(schema))
        if issubclass(hint, _Union) and len(value) != 1:
            raise UnsafeArchive(f"its {where} has {len(value)} members where one is expected")
        for key, item in value.items():
            if key not in hints or key.startswith("_"):
                raise UnsafeArchive(f"its {where} has a field '{str(key)[:40]}' that "
                                    f"torch.export.save does not write")
            _conforms(item, hints[key], f"{where}.{key}")
    elif isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        _expect(type(value) is int and value in {m.value for m in hint}, where, hint.__name__)
    elif hint is bool:
        _expect(isinstance(value, bool), where, "true or false")
    elif hint is int:
        _expect(type(value) is int, where, "an integer")
    elif hint is float:  # torch writes the special values as text
        _expect(type(value) in (int, float) or value in _SPECIAL_FLOATS, where, "a number")
    elif hint is str:
        _expect(isinstance(value, str), where, "text")
    else:
        raise UnsafeArchive(f"its {where} has a type sensaudit does not check")


def _expect(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise UnsafeArchive(f"its {where} is not {what}")


def _check_value(value: Any, key: str) -> None:
    if key in _CUSTOM_OBJECTS or (key == "custom_obj_values" and value):
        raise UnsafeArchive("it holds custom (C++ or opaque) objects, which torch unpickles")
    if key == "metadata":
        _check_metadata(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, "a key")
            _check_value(v, k)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, key)
    elif isinstance(value, str):
        _check_string(value, key)


def _check_string(value: str, key: str) -> None:
    if key == "expr_str":
        check_expression(value)
    elif key in ("in_spec", "out_spec"):
        _check_spec(_json(value, key))
    elif key in ("target", "as_operator"):
        _check_operator(value)
    elif key in _FQN_KEYS:
        _check_text(value, key)
        if any(part.startswith("__") for part in value.split(".")):
            raise UnsafeArchive(f"its {key} {value[:60]!r} names a special attribute")
    elif key not in _FREE_TEXT:
        _check_text(value, key)


def _check_operator(path: str) -> None:
    """A node's target: symbolic-size arithmetic, or an operator the policy admits."""
    if path in SYMBOLIC_OP_NAMES:
        return
    operator = operator_policy.resolve(path)
    if operator is None:
        raise UnsafeArchive(f"its graph calls '{path[:60]}', which is not a torch operator")
    why = operator_policy.refusal(operator)
    if why is not None:
        raise UnsafeArchive(f"its graph calls '{path[:60]}': {why}")


def _check_metadata(metadata: Any) -> None:
    """Node metadata: kept as text, except source_fn_stack (resolved with getattr from torch)
    and custom/from_node (JSON)."""
    if not isinstance(metadata, dict):
        return  # check_fields has already refused a non-mapping
    for key, text in metadata.items():
        if key not in NODE_METADATA:
            raise UnsafeArchive(f"its node metadata has a field '{str(key)[:40]}' that "
                                "torch.export.save does not write")
        if key == "source_fn_stack":
            for item in text.split(";"):
                name, _, target = item.partition(",")
                _check_text(name, key)
                if not (_DOTTED.fullmatch(target) and "__" not in target):
                    raise UnsafeArchive(f"its source_fn_stack names {target[:60]!r}")
        elif key in ("custom", "from_node"):
            _json(text, key)
        elif not text.isprintable() and key != "stack_trace":
            raise UnsafeArchive(f"its {key} metadata holds control characters")


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
        raise UnsafeArchive(f"{where} holds unexpected text {value[:60]!r}")


def _json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise UnsafeArchive(f"{key} is not valid JSON") from None
