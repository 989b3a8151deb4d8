"""Checks that make loading a ``torch.export`` file (.pt2) run none of its author's code.

``torch.export.load`` alone is not safe on a crafted file (torch's docs say as much: it "uses
pickle under the hood"). A .pt2 can run code while loading, or when the loaded
program is turned into a module or run:

- unpickling: weights or constants marked ``use_pickle``, constants whose *member name* starts
  with ``opaque_obj_`` (``pickle.loads``, whatever the JSON says) or ``custom_obj_``, and the
  sample inputs, which torch reads again with ``weights_only=False`` if ``weights_only`` fails;
- shared libraries: members under ``data/aotinductor/`` are loaded as compiled models;
- Python text: ``expr_str`` is parsed by ``sympy.sympify`` (eval), ``guards_code`` is
  ``exec``'d by ``ExportedProgram.module()``, op names are resolved with ``getattr``;
- graph ops: a node may name any callable reachable as ``torch.<a>.<b>...``, and among torch's
  own operators some write files (``aten::from_file`` with ``shared=True``, ``aten::save``),
  return uninitialised memory or skip bounds checks (:mod:`.operator_policy`);
- sizes: torch allocates what the zip directory and ``tensor_meta`` say, before reading.

So :func:`check_archive` reads the archive without loading it and accepts it only when all of
it is on an allowlist: each member one of the names ``torch.export.save`` writes; each JSON
document exactly torch's schema, with every evaluated text checked (:mod:`.pt2_graph`);
weights and constants raw tensor bytes whose member sizes match their ``tensor_meta``; the
sample inputs a ``torch.save`` of tensors only (:mod:`.pickle_walk`); versions the allowlists
were written for. Nothing is patched: once the archive holds no pickle that can name anything
but tensor-rebuilding functions, even torch's fallback to full unpickling can call nothing
else. After loading, :func:`check_graph_ops` checks every call in every graph again; the loader then
builds the module without guard code (``module(check_guards=False)``), so nothing from the file
is ever ``exec``'d. The loader skips all of this only in trusted mode.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch._export.serde import schema

from sensaudit.inputs import operator_policy
from sensaudit.inputs.archive_checks import (
    MAX_DOCUMENT_BYTES,
    DamagedArchive,
    Inventory,
    UnsafeArchive,
    check_storages,
    check_torch_version,
    read_member,
    take_inventory,
)
from sensaudit.inputs.pickle_walk import (
    ORDERED_DICT,
    REBUILD_TENSOR,
    PicklePolicy,
    UnsafePickle,
    walk,
)
from sensaudit.inputs.pt2_graph import SAFE_TEXT, check_fields, check_program
from sensaudit.inputs.pt2_names import SYMBOLIC_OPS

# What torch.export.save writes, by name below the archive's folder (the same from torch 2.8 to
# 2.14 at least; tests/test_torch_versions.py loads files written by other releases).
_FIXED = {"archive_format": b"pt2", "archive_version": b"0", "byteorder": b"little"}
_REQUIRED = {"models/model.json", "data/sample_inputs/model.pt",
             "data/weights/model_weights_config.json",
             "data/constants/model_constants_config.json", *_FIXED}
_MEMBER = re.compile(r"data/weights/weight_\d+|data/constants/tensor_\d+|extra/[\w.\-]+"
                     r"|\.data/version|\.data/serialization_id")
_PAYLOADS = {  # folder: (index, what torch names its raw tensor members)
    "data/weights/": ("data/weights/model_weights_config.json", re.compile(r"weight_\d+")),
    "data/constants/": ("data/constants/model_constants_config.json", re.compile(r"tensor_\d+")),
}
# The torch.save archive inside (the sample inputs): tensors, and the records torch.save adds.
_SAMPLE_MEMBER = re.compile(r"data\.pkl|data/\d+|byteorder|version|\.format_version"
                            r"|\.storage_alignment|\.data/version|\.data/serialization_id")
_TENSORS_ONLY = PicklePolicy(calls=frozenset({REBUILD_TENSOR, ORDERED_DICT}))
_STRIDED = 7  # schema.Layout.Strided
_ELEMENT_SIZES = {
    schema.ScalarType.BYTE: 1, schema.ScalarType.CHAR: 1, schema.ScalarType.SHORT: 2,
    schema.ScalarType.INT: 4, schema.ScalarType.LONG: 8, schema.ScalarType.HALF: 2,
    schema.ScalarType.FLOAT: 4, schema.ScalarType.DOUBLE: 8, schema.ScalarType.COMPLEXHALF: 4,
    schema.ScalarType.COMPLEXFLOAT: 8, schema.ScalarType.COMPLEXDOUBLE: 16,
    schema.ScalarType.BOOL: 1, schema.ScalarType.BFLOAT16: 2, schema.ScalarType.UINT16: 2,
    schema.ScalarType.UINT32: 4, schema.ScalarType.UINT64: 8,
}
# A member may hold more than its tensors cover (torch saves a view's whole storage), but not
# far more: this much beyond twice what they cover is refused before anything is read.
_SLACK_BYTES = 64 * 1024


class UnsafeExport(Exception):
    """The archive holds something off the allowlist; the message says what, in a few words."""


def check_archive(path: Path) -> None:
    """Refuse (UnsafeExport) a .pt2 holding anything but what ``torch.export.save`` writes for
    a graph of torch operators and plain tensors."""
    try:
        check_torch_version()
        with zipfile.ZipFile(path) as archive:
            inventory = take_inventory(archive, path.stat().st_size)
            _check_members(archive, inventory)
            program = _document(archive, inventory, "models/model.json", schema.ExportedProgram)
            check_program(program)
            for folder, (index, names) in _PAYLOADS.items():
                config = _document(archive, inventory, index, schema.PayloadConfig)
                _check_payloads(inventory, config["config"], folder, names)
            _check_sample_inputs(read_member(archive, inventory, "data/sample_inputs/model.pt"))
    except UnsafeArchive as exc:
        raise UnsafeExport(str(exc)) from None


def check_graph_ops(program: Any) -> None:
    """Every call in every graph of a loaded ExportedProgram is one :mod:`.operator_policy`
    admits, called as it admits (dropout only with train=False)."""
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("call_method", "call_module"):
                raise UnsafeExport(f"its graph calls {node.op} '{node.target}'")
            if node.op != "call_function" or node.target in SYMBOLIC_OPS:
                continue
            target = node.target
            why = (operator_policy.refusal(target)
                   or operator_policy.call_refusal(target, node.args, node.kwargs))
            if why is not None:
                name = getattr(target, "__name__", target)
                raise UnsafeExport(f"its graph calls {name!r}: {why}")


def _check_members(archive: zipfile.ZipFile, inventory: Inventory) -> None:
    names = inventory.members
    for name in names:
        if name not in _REQUIRED and not _MEMBER.fullmatch(name):
            raise UnsafeArchive(f"it holds a member '{name[:80]}', which torch.export.save does "
                                "not write")
        # torch reads every member but the tensor data whole, as text or bytes
        if not name.startswith(tuple(_PAYLOADS)) and inventory.size(name) > MAX_DOCUMENT_BYTES:
            raise UnsafeArchive(f"its member '{name}' is {inventory.size(name):,} bytes, over "
                                f"the {MAX_DOCUMENT_BYTES:,} expected for it")
    missing = sorted(_REQUIRED - names.keys())
    if missing:
        raise UnsafeArchive(f"it lacks '{missing[0]}', which torch.export.save writes")
    for name, expected in _FIXED.items():
        found = read_member(archive, inventory, name, limit=64)
        if found != expected:
            raise UnsafeArchive(f"its {name} is {found[:20]!r}, not {expected!r} (the archive "
                                "layout sensaudit's checks were written for)")


def _document(archive: zipfile.ZipFile, inventory: Inventory, name: str, cls: type) -> Any:
    try:
        document = json.loads(read_member(archive, inventory, name))
    except (ValueError, RecursionError) as exc:
        raise DamagedArchive(f"{name} is not valid JSON: {str(exc)[:80]}") from None
    check_fields(document, cls, name)
    return document


def _check_payloads(inventory: Inventory, entries: dict[str, Any], folder: str,
                    member_name: re.Pattern[str]) -> None:
    """Weights or constants: raw tensor bytes only, each member sized as its tensors say."""
    needed: dict[str, list[int]] = {}  # member -> [bytes the tensors cover, element sizes...]
    for fqn, entry in entries.items():
        label = f"its weight or constant '{str(fqn)[:60]}'"
        if not SAFE_TEXT.fullmatch(fqn) or any(p.startswith("__") for p in fqn.split(".")):
            raise UnsafeArchive(f"{label} has an unexpected name")
        meta = entry.get("tensor_meta")
        if entry.get("use_pickle") or meta is None:
            raise UnsafeArchive(f"{label} is a pickled object, not a plain tensor")
        path_name = entry["path_name"]
        # torch picks how to read a constant from its member name (opaque_obj_* is unpickled
        # whatever the rest says), so the name must be one it reads as raw tensor bytes.
        if not member_name.fullmatch(path_name) or folder + path_name not in inventory.members:
            raise UnsafeArchive(f"{label} is stored as '{path_name[:40]}', not as a plain "
                                "tensor member")
        size, element = _extent(meta, label)
        covered = needed.setdefault(folder + path_name, [0])
        covered[0] = max(covered[0], size)
        covered.append(element)
    for name in inventory.members:
        if name.startswith(folder) and not name.endswith(".json") and name not in needed:
            raise UnsafeArchive(f"its member '{name}' is not the data of any tensor")
    for name, (extent, *elements) in needed.items():
        actual = inventory.size(name)
        if actual < extent or any(actual % e for e in elements):
            raise UnsafeArchive(f"its member '{name}' is {actual:,} bytes where its tensors "
                                f"need {extent:,}")
        if actual > 2 * extent + _SLACK_BYTES:
            raise UnsafeArchive(f"its member '{name}' is {actual:,} bytes, far more than the "
                                f"{extent:,} its tensors cover")


def _extent(meta: dict[str, Any], label: str) -> tuple[int, int]:
    """(bytes of storage the tensor reaches, bytes per element), from plain integer sizes."""
    element = _ELEMENT_SIZES.get(meta["dtype"])
    fields = [*meta["sizes"], *meta["strides"], meta["storage_offset"]]
    if (element is None or meta["layout"] != _STRIDED
            or meta["device"]["type"] not in ("cpu", "cuda")
            or len(meta["sizes"]) != len(meta["strides"])
            or not all("as_int" in f and f["as_int"] >= 0 for f in fields)):
        raise UnsafeArchive(f"{label} is not a plain dense tensor of fixed size")
    sizes = [s["as_int"] for s in meta["sizes"]]
    strides = [s["as_int"] for s in meta["strides"]]
    if 0 in sizes:
        return 0, element
    last = meta["storage_offset"]["as_int"] + sum((n - 1) * s for n, s in
                                                  zip(sizes, strides, strict=True))
    return (last + 1) * element, element


def _check_sample_inputs(data: bytes) -> None:
    """The example inputs: a torch.save archive of tensors, the only pickle torch reads here."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UnsafeArchive("its sample inputs are not a torch.save archive") from None
    with inner:
        inventory = take_inventory(inner, len(data))
        for name in inventory.members:
            if not _SAMPLE_MEMBER.fullmatch(name):
                raise UnsafeArchive(f"its sample inputs hold a member '{name[:60]}'")
        if "data.pkl" not in inventory.members:
            raise UnsafeArchive("its sample inputs lack data.pkl")
        try:
            facts = walk(read_member(inner, inventory, "data.pkl"), _TENSORS_ONLY)
        except UnsafePickle as exc:
            raise UnsafeArchive(f"its sample inputs hold {exc}") from None
        check_storages(inventory, "data/", facts.storages)
