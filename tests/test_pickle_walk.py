"""sensaudit.inputs.pickle_walk: a pickle's opcodes checked without running any of them."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import pytest
import torch
from helpers_bad import Payload

from sensaudit.inputs.pickle_walk import (
    MAX_DEPTH,
    MAX_TUPLE_DEPTH,
    ORDERED_DICT,
    REBUILD_TENSOR,
    PicklePolicy,
    UnsafePickle,
    walk,
)

TENSORS = PicklePolicy(calls=frozenset({REBUILD_TENSOR, ORDERED_DICT}))


def _data_pkl(obj) -> bytes:
    """The data.pkl of torch.save(obj): what torch's unpicklers read."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def _refusal(data: bytes, policy: PicklePolicy = TENSORS) -> str:
    with pytest.raises(UnsafePickle) as err:
        walk(data, policy)
    return str(err.value)


def test_tensors_and_containers_pass_with_their_storages():
    facts = walk(_data_pkl({"w": torch.ones(2, 3), "b": [torch.zeros(4, dtype=torch.int64)]}),
                 TENSORS)
    assert sorted((s.numel, s.element_size) for s in facts.storages) == [(4, 8), (6, 4)]


def test_a_callable_off_the_list_is_refused(tmp_path):
    assert _refusal(pickle.dumps(Payload(tmp_path / "m"), protocol=2)) == (
        "a pickled reference to '__builtin__.exec', which is not on the list of what torch "
        "writes for tensors")
    # protocol 4 names it with STACK_GLOBAL, from strings on the stack
    assert "'builtins.exec'" in _refusal(pickle.dumps(Payload(tmp_path / "m"), protocol=4))


def test_build_on_an_object_the_policy_does_not_vouch_for_is_refused():
    data = b"\x80\x02ccollections\nOrderedDict\n)R}b."
    assert _refusal(data) == ("BUILD (which calls __setstate__) on a 'collections.OrderedDict' "
                              "object")


def test_tensor_with_backward_hooks_is_refused():
    data = _data_pkl(torch.ones(2))
    hooked = data.replace(b")R", b")R(X\x01\x00\x00\x00kX\x01\x00\x00\x00vu", 1)
    assert hooked != data
    assert _refusal(hooked) == "a tensor with backward hooks or without its storage"


@pytest.mark.parametrize("data, found", [
    (b"\x80\x02\x82\x01.", "pickle opcode EXT1"),
    (b"\x80\x02(ccollections\nOrderedDict\no.", "pickle opcode OBJ"),
    (b"\x80\x02X\x03\x00\x00\x00key\x85Q.", "a persistent id that is not a tensor storage"),
    (b"\x80\x02N", "a damaged pickle"),
    (b"\x80\x02NN.", "a pickle that does not end cleanly"),
])
def test_opcodes_off_the_list_are_refused(data, found):
    assert _refusal(data).startswith(found)


def test_ordered_dict_filled_item_by_item_passes_built_from_arguments_does_not():
    walk(pickle.dumps(OrderedDict(a=1), protocol=2), TENSORS)  # as pickle writes it
    assert _refusal(b"\x80\x02ccollections\nOrderedDict\n(K\x01tR.") == (
        "an OrderedDict built from arguments")


# --- nesting ------------------------------------------------------------------------------------


def test_values_nested_up_to_the_cap_pass_and_deeper_ones_are_refused():
    def lists(depth: int) -> bytes:  # EMPTY_LIST each level, then APPEND each into the one below
        return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    walk(lists(MAX_DEPTH), TENSORS)
    assert _refusal(lists(MAX_DEPTH + 1)) == f"values nested more than {MAX_DEPTH} deep"


def test_tuples_within_tuples_are_capped_lower():
    def tuples(depth: int) -> bytes:  # EMPTY_TUPLE, then TUPLE1 around it
        return b"\x80\x02)" + b"\x85" * (depth - 1) + b"."
    walk(tuples(MAX_TUPLE_DEPTH), TENSORS)
    assert _refusal(tuples(MAX_TUPLE_DEPTH + 1)) == (
        f"tuples nested more than {MAX_TUPLE_DEPTH} deep")
    # through lists too (a tuple in a list in a tuple counts two): MARKs first, then an
    # EMPTY_TUPLE, then LIST and TUPLE1 around it at each level
    through_lists = (b"\x80\x02" + b"(" * MAX_TUPLE_DEPTH + b")"
                     + b"l\x85" * MAX_TUPLE_DEPTH + b".")
    assert _refusal(through_lists) == f"tuples nested more than {MAX_TUPLE_DEPTH} deep"


@pytest.mark.parametrize("data", [
    b"\x80\x02]q\x00h\x00a.",  # a list appended to itself
    b"\x80\x02]q\x00]h\x00ah\x00]a.",  # filled after it was put in another list
])
def test_a_container_filled_after_it_was_put_inside_another_is_refused(data):
    assert _refusal(data).endswith("after it was put inside another value")
