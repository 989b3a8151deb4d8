"""Zip-level checks shared by the .pt2 and TorchScript checks, made before torch reads a byte.

torch reads a member by allocating what the zip directory says it inflates to, so a 3 MB file
can ask for gigabytes. Here the directory is read first (no member data), every name is
checked, and sizes are capped; members are then read with a bound, never trusting the
directory alone.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sensaudit.inputs.pickle_walk import StorageRef

# The largest archive sensaudit opens without trusted mode (all members, inflated): far above
# any scorer, far below what would take the machine down.
MAX_ARCHIVE_BYTES = 16 * 2**30
# JSON, TorchScript code, pickles: the parts that are parsed rather than copied as tensor data.
MAX_DOCUMENT_BYTES = 128 * 2**20


class UnsafeArchive(Exception):
    """The archive is not laid out as torch writes it, or is too large; the message says how."""


class DamagedArchive(Exception):
    """A member cannot be read or parsed at all (torch would fail on it too): corrupt, not
    crafted, as far as anyone can tell; the message says which."""


@dataclass(frozen=True)
class Inventory:
    """An archive's members by their name below its one root folder ("data/weights/weight_0")."""

    root: str
    members: dict[str, zipfile.ZipInfo]

    def size(self, name: str) -> int:
        return self.members[name].file_size


def check_torch_version() -> None:
    """Refuse to vouch for files under a torch older than the layouts these checks read.

    There is no upper bound: the checks read the running torch's own schema, operator registry
    and archive constants, and refuse what they do not recognise, whatever release wrote it."""
    from sensaudit.core.torch_support import MIN_TORCH, MIN_TORCH_TEXT, parse_version

    try:
        running = parse_version(torch.__version__)
    except ValueError:
        return  # a source build with an odd version string: the checks themselves decide
    if running < MIN_TORCH:
        raise UnsafeArchive(f"this is torch {torch.__version__}; sensaudit's checks read the "
                            f"file layouts of torch {MIN_TORCH_TEXT} and newer")


def take_inventory(archive: zipfile.ZipFile, file_size: int,
                   may_deflate: Callable[[str], bool] = lambda name: False) -> Inventory:
    """Every member, after checking the directory: one root folder, plain relative names, no
    duplicates, sizes consistent with the file and under :data:`MAX_ARCHIVE_BYTES`."""
    members: dict[str, zipfile.ZipInfo] = {}
    roots: set[str] = set()
    stored_bytes = total = 0
    for info in archive.infolist():
        name = info.filename
        root, _, inner = name.partition("/")
        parts = inner.split("/")
        if (not root or not inner or "\\" in name or any(p in ("", ".", "..") for p in parts)
                or not name.isprintable()):
            raise UnsafeArchive(f"it holds a member named {name[:80]!r}, which is not a plain "
                                "path inside the archive's folder")
        roots.add(root)
        if inner in members:
            raise UnsafeArchive(f"it holds two members named '{name[:80]}'")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"its member '{name[:80]}' is encrypted")
        allowed = {zipfile.ZIP_STORED} | ({zipfile.ZIP_DEFLATED} if may_deflate(inner) else set())
        if info.compress_type not in allowed:
            raise UnsafeArchive(f"its member '{name[:80]}' is compressed, which torch does not "
                                "do for it")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise UnsafeArchive(f"its member '{name[:80]}' has inconsistent sizes")
        stored_bytes += info.compress_size
        total += info.file_size
        members[inner] = info
    if len(roots) > 1:
        raise UnsafeArchive("its members are not all under one folder: "
                            + ", ".join(sorted(r[:40] for r in roots)[:3]))
    if stored_bytes > file_size:
        raise UnsafeArchive("its directory lists more data than the file holds")
    if total > MAX_ARCHIVE_BYTES:
        raise UnsafeArchive(f"its members add up to {total:,} bytes, over the "
                            f"{MAX_ARCHIVE_BYTES:,} sensaudit opens")
    return Inventory(root=roots.pop() if roots else "", members=members)


def read_member(archive: zipfile.ZipFile, inventory: Inventory, name: str,
                limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The member's bytes, refusing one over ``limit`` before reading and reading no more."""
    info = inventory.members[name]
    if info.file_size > limit:
        raise UnsafeArchive(f"its member '{name}' is {info.file_size:,} bytes, over the "
                            f"{limit:,} expected for it")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DamagedArchive(f"member '{name}' is damaged: {exc}") from None
    if len(data) != info.file_size:
        raise DamagedArchive(f"member '{name}' does not hold the size its directory says")
    return data


def check_storages(inventory: Inventory, folder: str, storages: list[StorageRef], *,
                   may_be_empty: bool = False) -> None:
    """Each tensor storage a pickle names is one member of ``folder`` of exactly its size (or
    empty, where ``may_be_empty``), and each member of ``folder`` is named: nothing unaccounted
    for, nothing allocated beyond what the member holds."""
    expected: dict[str, int] = {}
    for ref in storages:
        size = ref.numel * ref.element_size
        if expected.setdefault(ref.key, size) != size:
            raise UnsafeArchive(f"its storage '{ref.key[:40]}' is given two sizes")
    present = {n[len(folder):]: info for n, info in inventory.members.items()
               if n.startswith(folder)}
    for key, size in expected.items():
        info = present.get(key)
        if info is None:
            raise UnsafeArchive(f"its storage '{folder}{key[:40]}' is missing")
        if info.file_size != size and not (may_be_empty and info.file_size == 0):
            raise UnsafeArchive(f"its member '{folder}{key[:40]}' is {info.file_size:,} bytes "
                                f"where its tensor needs {size:,}")
    for key in present.keys() - expected.keys():
        raise UnsafeArchive(f"its member '{folder}{key[:40]}' is not a storage of any tensor")
