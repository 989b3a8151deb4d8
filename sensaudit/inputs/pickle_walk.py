"""Read a pickle's opcodes without running it, and refuse anything a policy does not list.

Unpickling runs code through three doors: GLOBAL/STACK_GLOBAL bring in a callable by name,
REDUCE/NEWOBJ call it, BUILD calls an object's ``__setstate__``. :func:`walk` follows the pickle
on a small symbolic stack (``pickletools.genops`` parses, nothing executes), so it knows exactly
which name each call gets, and checks every one against a :class:`PicklePolicy`. Any opcode it
does not list is refused too, so an unpickler fed a pickle that passes can only call what the
policy allows, whichever unpickler (Python's, torch's ``weights_only`` one, TorchScript's)
reads it.

Nesting is capped too. The unpicklers are iterative, but what TorchScript does with the values
afterwards is not: a tuple constant nested 30 deep takes torch.jit.load 40 s and each level
doubles it (types inferred level by level), and deeper values overflow recursive C++ code. So
each value carries its depth, and an object or container may not be filled once it has been put
inside another (torch's picklers never do so; it would let a value deepen after its parent's
depth was counted, or hold itself).
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast


class UnsafePickle(Exception):
    """The pickle holds something its policy does not allow; the message says what."""


# Bytes per element of the storage classes torch writes in persistent ids.
STORAGE_ELEMENT_SIZES = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
}
REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2"
ORDERED_DICT = "collections.OrderedDict"
# TorchScript tags lists and dicts with their type, as text it parses: collected for checking.
RESTORE_TYPE_TAG = "torch.jit._pickle.restore_type_tag"
# How deep values may nest (a tuple holding a tuple is 2 deep; a tensor is 4: REBUILD_TENSOR's
# call, its argument tuple, the hooks' OrderedDict call, its empty argument tuple). What torch
# writes for a module nests 2 levels per level of submodules (object, state dict): a Linear in
# 24 levels of Sequential measured 54. A nested tuple constant this deep would take
# torch.jit.load years (see above): tuples within
# tuples (on any path, through lists and objects too) are capped at 10, a few milliseconds of
# that doubling; what torch writes has at most 5 (debug_pkl's source ranges).
MAX_DEPTH = 64
MAX_TUPLE_DEPTH = 10


@dataclass(frozen=True)
class PicklePolicy:
    """What one kind of pickle may name and call.

    ``calls``: what REDUCE may call; ``classes(name)``: which classes NEWOBJ may create (and
    BUILD may then fill in); every GLOBAL must be one of these or a storage class.
    """

    calls: frozenset[str]
    classes: Callable[[str], bool] = lambda name: False


@dataclass(frozen=True)
class StorageRef:
    """A persistent id: the tensor data kept in archive member ``<folder>/<key>``."""

    key: str
    element_size: int
    numel: int


@dataclass
class PickleFacts:
    storages: list[StorageRef] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)
    type_tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Global:
    name: str  # "module.attr"


@dataclass
class _Made:
    """What a call or NEWOBJ returned; ``items`` counts what was put in it afterwards."""

    by: str
    items: int = 0
    depth: int = 1
    tuple_depth: int = 0
    sealed: bool = False  # put inside another value: may no longer be filled


class _Container:
    __slots__ = ("items", "depth", "tuple_depth", "sealed")

    def __init__(self) -> None:
        self.items = 0
        self.depth = 1
        self.tuple_depth = 0
        self.sealed = False


class _Tuple(tuple[Any, ...]):
    """A tuple that knows how deep it nests, and how many tuples deep (``tuple_depth``)."""

    depth: int
    tuple_depth: int


_MARK = object()
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_PUSH_ARG = frozenset({
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
})
_IGNORED = frozenset({"PROTO", "FRAME"})


def walk(data: bytes, policy: PicklePolicy) -> PickleFacts:
    """Check every opcode of ``data`` against ``policy``; return its storages and classes."""
    facts = PickleFacts()
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "STOP":
                if len(stack) != 1 or marks:
                    raise UnsafePickle("a pickle that does not end cleanly")
                return facts
            if name in _IGNORED:
                continue
            if name in _PUSH_ARG:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("BINPUT", "LONG_BINPUT"):
                memo[cast(int, arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                stack.append(memo[cast(int, arg)])
            else:
                _step(name, arg, stack, marks, policy, facts)
    except UnsafePickle:
        raise
    except (ValueError, IndexError, KeyError, TypeError):  # genops or our stack: malformed
        raise UnsafePickle("a damaged pickle") from None
    raise UnsafePickle("a damaged pickle (no STOP)")


def _step(name: str, arg: Any, stack: list[Any], marks: list[int], policy: PicklePolicy,
          facts: PickleFacts) -> None:
    if name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE"):
        count = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name)
        items = _pop_mark(stack, marks) if count is None else _pop(stack, count)
        stack.append(_tuple(items))
    elif name in ("EMPTY_LIST", "EMPTY_DICT"):
        stack.append(_Container())
    elif name in ("LIST", "DICT"):
        items = _pop_mark(stack, marks)
        stack.append(_Container())
        _deepen(stack[-1], items)
    elif name in ("APPEND", "SETITEM"):
        _fill(stack, _pop(stack, 1 if name == "APPEND" else 2))
    elif name in ("APPENDS", "SETITEMS"):
        _fill(stack, _pop_mark(stack, marks))
    elif name in ("GLOBAL", "STACK_GLOBAL"):
        if name == "GLOBAL":
            module, _, attr = arg.partition(" ")
        else:
            module, attr = _pop(stack, 2)
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise UnsafePickle("a computed global name")
        stack.append(_global(f"{module}.{attr}", policy, facts))
    elif name == "BINPERSID":
        stack.append(_storage(stack.pop(), facts))
    elif name == "REDUCE":
        args, func = stack.pop(), stack.pop()
        stack.append(_call(func, args, policy, facts))
    elif name == "NEWOBJ":
        args, cls = stack.pop(), stack.pop()
        if not (isinstance(cls, _Global) and policy.classes(cls.name) and args == ()):
            raise UnsafePickle(f"an object of {_describe(cls)} built by NEWOBJ")
        facts.classes.add(cls.name)
        stack.append(_Made(cls.name))
    elif name == "BUILD":
        state = stack.pop()
        target = stack[-1]
        # BUILD calls __setstate__: only on objects of the classes the policy vouches for.
        if not (isinstance(target, _Made) and policy.classes(target.by)):
            raise UnsafePickle(f"BUILD (which calls __setstate__) on {_describe(target)}")
        _deepen(target, [state])
    else:
        raise UnsafePickle(f"pickle opcode {name}, which the files torch writes do not use")


def _global(name: str, policy: PicklePolicy, facts: PickleFacts) -> _Global:
    module, _, attr = name.rpartition(".")
    if module == "torch" and attr in STORAGE_ELEMENT_SIZES:
        return _Global(name)
    if name in policy.calls or policy.classes(name):
        return _Global(name)
    raise UnsafePickle(f"a pickled reference to '{name[:80]}', which is not on the list of "
                       "what torch writes for tensors")


def _call(func: Any, args: Any, policy: PicklePolicy, facts: PickleFacts) -> _Made:
    if not (isinstance(func, _Global) and func.name in policy.calls and isinstance(args, tuple)):
        raise UnsafePickle(f"a call to {_describe(func)}")
    if func.name == REBUILD_TENSOR:
        # (storage, offset, size, stride, requires_grad, backward_hooks[, metadata]): the
        # hooks would be called on backward, so there must be none.
        hooks = args[5] if len(args) > 5 else None
        if not (isinstance(args[0], StorageRef) and isinstance(hooks, _Made)
                and hooks.by == ORDERED_DICT and hooks.items == 0):
            raise UnsafePickle("a tensor with backward hooks or without its storage")
    elif func.name == ORDERED_DICT and args != ():
        raise UnsafePickle("an OrderedDict built from arguments")
    elif func.name == RESTORE_TYPE_TAG:
        if len(args) != 2 or not isinstance(args[1], str):
            raise UnsafePickle("a type tag that is not text")
        facts.type_tags.append(args[1])
    made = _Made(func.name)
    _deepen(made, [args])
    return made


def _storage(pid: Any, facts: PickleFacts) -> StorageRef:
    ok = (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
          and isinstance(pid[1], _Global) and isinstance(pid[2], str)
          and isinstance(pid[3], str) and isinstance(pid[4], int) and pid[4] >= 0)
    if not ok:
        raise UnsafePickle("a persistent id that is not a tensor storage")
    element_size = STORAGE_ELEMENT_SIZES.get(pid[1].name.rpartition(".")[2])
    if element_size is None or not pid[1].name.startswith("torch."):
        raise UnsafePickle(f"a storage of type {pid[1].name[:60]!r}")
    ref = StorageRef(key=pid[2], element_size=element_size, numel=pid[4])
    facts.storages.append(ref)
    return ref


def _fill(stack: list[Any], items: list[Any]) -> None:
    if not stack:
        raise UnsafePickle("a damaged pickle (stack underflow)")
    target = stack[-1]
    if isinstance(target, (_Container, _Made)) and not (
            isinstance(target, _Made) and target.by == REBUILD_TENSOR):
        target.items += 1
        _deepen(target, items)
        return
    raise UnsafePickle(f"items added to {_describe(target)}")


def _nest(items: list[Any]) -> tuple[int, int]:
    """The depth and tuple depth below a value holding ``items``, which are sealed; refused
    over the caps."""
    depth = tuples = 0
    for item in items:
        if isinstance(item, (_Container, _Made)):
            item.sealed = True
        depth = max(depth, getattr(item, "depth", 0))
        tuples = max(tuples, getattr(item, "tuple_depth", 0))
    if depth + 1 > MAX_DEPTH:
        raise UnsafePickle(f"values nested more than {MAX_DEPTH} deep")
    return depth + 1, tuples


def _deepen(target: _Container | _Made, items: list[Any]) -> None:
    """``items`` put into ``target``, which must not be inside anything yet (else the depth
    counted for what holds it would be out of date, or it would hold itself)."""
    depth, tuples = _nest(items)  # sealed first: so a value put into itself is refused
    if target.sealed:
        raise UnsafePickle(f"items added to {_describe(target)} after it was put inside "
                           "another value")
    target.depth, target.tuple_depth = max(target.depth, depth), max(target.tuple_depth, tuples)


def _tuple(items: list[Any]) -> _Tuple:
    made = _Tuple(items)
    made.depth, tuples = _nest(items)
    made.tuple_depth = tuples + 1
    if made.tuple_depth > MAX_TUPLE_DEPTH:
        raise UnsafePickle(f"tuples nested more than {MAX_TUPLE_DEPTH} deep")
    return made


def _pop(stack: list[Any], count: int) -> list[Any]:
    if count == 0:
        return []
    if len(stack) < count:
        raise UnsafePickle("a damaged pickle (stack underflow)")
    items = stack[-count:]
    del stack[-count:]
    return items


def _pop_mark(stack: list[Any], marks: list[int]) -> list[Any]:
    start = marks.pop()
    items = stack[start:]
    del stack[start:]
    return items


def _describe(value: Any) -> str:
    if isinstance(value, _Global):
        return f"'{value.name[:80]}'"
    if isinstance(value, _Made):
        return f"a '{value.by[:80]}' object"
    if isinstance(value, _Container):
        return "a list or dict"
    return f"a {type(value).__name__.strip('_').lower()}"
