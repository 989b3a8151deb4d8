"""The contents of a TorchScript debug pickle (``code/**/*.py.debug_pkl``), checked in full.

torch reads a debug pickle only to word an error (the original source behind the code that
failed), and then trusts it: an index into its string table out of range (1.7 KB file) makes
the first exception the model raises a SIGSEGV instead of an error. So once the pickle walk has
passed its opcodes (plain data and ``build_intlist`` only), its value is rebuilt with an
unpickler that can make nothing else, and accepted only in the layout torch 2.13 writes::

    ("FORMAT_WITH_STRING_TABLE", (text, ...),
     ((offset, ((text indices, file index, first line), start, end), debug handle), ...))

with every index inside the string table, every range inside the text it indexes (or one byte
past it, as torch writes) and the offsets (into the code file) in order and inside it.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

_FORMAT = "FORMAT_WITH_STRING_TABLE"
_INT_LIST = ("torch.jit._pickle", "build_intlist")


class BadDebugInfo(Exception):
    """The debug pickle is not laid out as torch writes it; the message says how."""


def check_debug_pickle(data: bytes, code: str) -> None:
    """Refuse (BadDebugInfo) a debug pickle that is not exactly torch's layout for ``code``."""
    value = _load(data)
    if not (isinstance(value, tuple) and len(value) == 3 and value[0] == _FORMAT
            and isinstance(value[1], tuple) and all(isinstance(s, str) for s in value[1])
            and isinstance(value[2], tuple)):
        raise BadDebugInfo("a debug pickle not in the layout torch writes")
    table, entries = value[1], value[2]
    code_bytes = len(code.encode("utf-8"))
    previous = -1
    for entry in entries:
        offset = _entry(entry, table)
        if not previous <= offset <= code_bytes:
            raise BadDebugInfo("a debug pickle whose offsets are out of order or past its code")
        previous = offset


def _entry(entry: Any, table: tuple[str, ...]) -> int:
    """Check one (offset, source range, debug handle) entry; return its offset."""
    try:
        offset, ((pieces, file_index, line), start, end), handle = entry
    except (TypeError, ValueError):
        raise BadDebugInfo("a debug pickle entry not in the layout torch writes") from None
    numbers = [offset, file_index, line, start, end, handle]
    if not (all(type(n) is int for n in numbers) and isinstance(pieces, list)
            and all(type(i) is int for i in pieces)):
        raise BadDebugInfo("a debug pickle entry not in the layout torch writes")
    if not all(0 <= i < len(table) for i in [*pieces, file_index]):
        raise BadDebugInfo("a debug pickle index outside its string table")
    text_bytes = sum(len(table[i].encode("utf-8")) for i in pieces)
    # torch itself writes (0, 1) over an empty text for code it generated (LSTM, attention):
    # one byte past the end is its own, and its error printing copes with it.
    if not (0 <= start <= end <= text_bytes + 1 and line >= 0 and offset >= 0):
        raise BadDebugInfo("a debug pickle range outside its text")
    return int(offset)


class _Unpickler(pickle.Unpickler):
    """Makes tuples, lists, strings and numbers, and lists of ints by build_intlist: nothing
    else (the pickle walk has already refused every other name and opcode)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _INT_LIST:
            return list
        raise BadDebugInfo(f"a debug pickle naming {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise BadDebugInfo("a debug pickle with a persistent id")


def _load(data: bytes) -> Any:
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except BadDebugInfo:
        raise
    except Exception:  # any other failure: damaged, which torch would fail on too
        raise BadDebugInfo("a debug pickle that does not unpickle") from None
