"""Checks that make loading a TorchScript file (``torch.jit.save``) run none of its author's code.

TorchScript is code: ``torch.jit.load`` compiles the archive's ``code/`` and runs a class's
``__setstate__`` while loading, and ``forward`` runs when the model is audited. Both can call any
registered operator, including ``aten::save`` and ``aten::from_file``, which write files. So
:func:`check_archive` reads the archive without loading it and accepts it only when everything
in it is on an allowlist:

- members: only the names ``torch.jit.save`` writes, one root folder, sizes capped
  (:mod:`.archive_checks`), code and debug pickles capped in size, lines, deflate ratio and
  nesting before they are read or checked (:mod:`.torchscript_limits`);
- code: every statement, name and call is tensor math or what standard layers compile to, and
  no class defines ``__setstate__``/``__getstate__`` (:mod:`.torchscript_code`);
- pickles (``data.pkl``, ``constants.pkl`` and the rest): only the globals TorchScript writes for
  modules and tensors, each ``__torch__`` class one the code check passed (:mod:`.pickle_walk`),
  and each tensor storage a member of exactly its size; debug pickles, which torch trusts when
  it words an error, in exactly torch's layout with every index and range in bounds
  (:mod:`.torchscript_debug`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from sensaudit.inputs.archive_checks import (
    MAX_DOCUMENT_BYTES,
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
    PickleFacts,
    PicklePolicy,
    UnsafePickle,
    walk,
)
from sensaudit.inputs.torchscript_code import CodeFacts, UnsafeCode, check_code, check_type_string
from sensaudit.inputs.torchscript_debug import BadDebugInfo, check_debug_pickle
from sensaudit.inputs.torchscript_limits import check_lines, check_sizes
from sensaudit.inputs.torchscript_names import resolves_outside_archive

# File format versions torch 2.x writes for TorchScript (3, raised up to 10 by the operators a
# model uses); older or newer ones were not reviewed for these checks.
FORMAT_VERSIONS = frozenset(range(3, 11))
_CODE = re.compile(r"code/__torch__(/[A-Za-z_]\w*)*\.py")
_STORAGE_FOLDERS = {"data.pkl": "data/", "constants.pkl": "constants/",
                    "traced_inputs.pkl": "traced_inputs/"}
_OTHER_MEMBERS = re.compile(r"(data|constants|traced_inputs)/\w+|extra/[\w.\-]+|byteorder|version"
                            r"|\.data/version|\.data/serialization_id")
_JIT_PICKLE = "torch.jit._pickle."
_PICKLE_CALLS = frozenset({
    REBUILD_TENSOR, ORDERED_DICT, f"{_JIT_PICKLE}restore_type_tag",
    *(f"{_JIT_PICKLE}build_{kind}list" for kind in ("int", "double", "bool", "tensor")),
})


class UnsafeTorchScript(Exception):
    """The archive holds something off the allowlist; the message says what, in a few words."""


def check_archive(path: Path) -> None:
    """Refuse (UnsafeTorchScript) an archive holding anything but what TorchScript writes for
    plain modules of tensor math."""
    try:
        check_torch_version()
        with zipfile.ZipFile(path) as archive:
            inventory = take_inventory(archive, path.stat().st_size, may_deflate=_is_code)
            _check_members(archive, inventory)
            code = [name for name in inventory.members if _CODE.fullmatch(name)]
            check_sizes(inventory, code)
            sources = _sources(archive, inventory, code)
            try:
                facts = check_code(sources)
            except RecursionError:
                raise UnsafeCode("code nested too deeply to check") from None
            _check_pickles(archive, inventory, facts, sources)
    except (UnsafeArchive, UnsafeCode) as exc:
        raise UnsafeTorchScript(str(exc)) from None


def _is_code(name: str) -> bool:
    # torch.jit.save compresses the code and its debug pickles, and nothing else.
    return name.endswith((".py", ".py.debug_pkl")) and name.startswith("code/")


def _check_members(archive: zipfile.ZipFile, inventory: Inventory) -> None:
    names = inventory.members
    for name in names:
        debug_of = name.removesuffix(".debug_pkl")
        ok = (name in _STORAGE_FOLDERS or _CODE.fullmatch(name)
              or (debug_of != name and debug_of in names and _CODE.fullmatch(debug_of))
              or _OTHER_MEMBERS.fullmatch(name))
        if not ok:
            raise UnsafeArchive(f"it holds a member '{name[:80]}', which torch.jit.save does not "
                                "write")
        is_storage = name.startswith(tuple(_STORAGE_FOLDERS.values()))
        if not is_storage and inventory.size(name) > MAX_DOCUMENT_BYTES:
            raise UnsafeArchive(f"its member '{name}' is {inventory.size(name):,} bytes, over "
                                f"the {MAX_DOCUMENT_BYTES:,} expected for it")
    if "data.pkl" not in names or "constants.pkl" not in names:
        raise UnsafeArchive("it lacks data.pkl or constants.pkl")
    versions = [n for n in ("version", ".data/version") if n in names]
    if len(versions) != 1:
        raise UnsafeArchive("it does not record one format version")
    text = read_member(archive, inventory, versions[0], limit=16).decode("ascii", "replace")
    if not (text.strip().isdigit() and int(text) in FORMAT_VERSIONS):
        raise UnsafeArchive(f"its format version {text.strip()[:10]!r} is not one sensaudit's "
                            f"checks were written for ({min(FORMAT_VERSIONS)} to "
                            f"{max(FORMAT_VERSIONS)})")


def _sources(archive: zipfile.ZipFile, inventory: Inventory, code: list[str]
             ) -> dict[str, str]:
    """Each code file's text under the qualified name TorchScript imports it by."""
    sources = {}
    for name in code:
        module = _module(name)
        try:
            sources[module] = read_member(archive, inventory, name).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeArchive(f"its code file '{name}' is not UTF-8 text") from None
        check_lines(module, sources[module])
    return sources


def _module(name: str) -> str:
    """The qualified name TorchScript imports a code file by."""
    return name.removeprefix("code/").removesuffix(".py").replace("/", ".")


def _check_pickles(archive: zipfile.ZipFile, inventory: Inventory, facts: CodeFacts,
                   sources: dict[str, str]) -> None:
    # __torch__ classes: only those the code check has just passed (none defines __setstate__),
    # never TorchScript's custom C++ classes (__torch__.torch.classes.*), which are not in code.
    # (check_code refuses to define those names; resolves_outside_archive says so again here.)
    policy = PicklePolicy(calls=_PICKLE_CALLS, classes=lambda name: (
        name in facts.classes and not resolves_outside_archive(name)))
    debug_policy = PicklePolicy(calls=frozenset({f"{_JIT_PICKLE}build_intlist"}))
    for name in inventory.members:
        if name.endswith(".debug_pkl"):
            # torch trusts their indices and ranges when it words an error: checked in full.
            data = read_member(archive, inventory, name)
            _walk(name, data, debug_policy)
            try:
                check_debug_pickle(data, sources[_module(name.removesuffix(".debug_pkl"))])
            except BadDebugInfo as exc:
                raise UnsafeArchive(f"its {name} holds {exc}") from None
    for name, folder in _STORAGE_FOLDERS.items():
        if name in inventory.members:
            result = _walk(name, read_member(archive, inventory, name), policy)
            for tag in result.type_tags:
                check_type_string(tag, facts)
            # traced_inputs.pkl is never read by torch.jit.load, and torch.jit.save leaves its
            # storages empty: it may name storages it does not hold.
            check_storages(inventory, folder, result.storages,
                           may_be_empty=folder == "traced_inputs/")
        elif any(n.startswith(folder) for n in inventory.members):
            raise UnsafeArchive(f"it holds {folder} members without {name}")


def _walk(name: str, data: bytes, policy: PicklePolicy) -> PickleFacts:
    try:
        return walk(data, policy)
    except UnsafePickle as exc:
        raise UnsafeArchive(f"its {name} holds {exc}") from None
