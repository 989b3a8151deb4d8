"""Which torch operators a model file from elsewhere may call: the one place that decides.

A .pt2 graph (and TorchScript code) can name any registered operator, and some operators act
outside the tensors they are given: ``aten::from_file`` maps a file (``shared=True`` writes
back to it), ``aten::save`` writes a pickle, ``aten::_print`` writes to the terminal, random
operators advance the process's random state, ``aten::empty`` returns uninitialised memory
(bytes of the heap, readable through the scores), and private operators such as
``aten::_reshape_alias`` skip the bounds checks of their public forms. So an operator is
admitted only when it is positively recognised as computing on tensors in memory, and the
reasons are read from torch's own records of the operator wherever torch keeps them:

1. **Namespace**: ``aten`` (torch's tensor library). Other namespaces (``profiler``,
   ``quantized``, custom ops a library registers) and higher-order operators that take another
   operator as an argument (``auto_functionalized``, ``with_effects``) are refused; a short list
   of higher-order operators that only run the file's own subgraphs is admitted.
2. **Schema**: every argument and result is a tensor, a number, a bool, a device/dtype/layout,
   or a list or optional of those. Strings are admitted only for the named options below (such
   as ``approximate='tanh'``); a ``filename``, a ``Storage``, a ``Generator``, a generic ``t``,
   a dict or a C++ class is refused. An operator that returns nothing acts only by side effect
   and is refused (but for the assertions listed below).
3. **Tags**: torch tags random operators ``nondeterministic_seeded`` and operators that change
   a tensor's view of its memory in place (``set_``, ``resize_``, ``as_strided_``)
   ``inplace_view``: both refused, but for the reviewed view changes ``detach_``,
   ``squeeze_`` and the like, which exports of ordinary code write. Dropout is random only in
   training: admitted where the graph passes ``train=False`` (checked per call by
   :func:`call_refusal`).
4. **Names**: private operators (a leading underscore) are torch internals that may skip checks
   (``_reshape_alias``, ``_copy_from``): refused, but for the few below that exported standard
   layers use, each reviewed. Operators that return uninitialised memory, and the families of
   sparse, nested and backend-specific kernels, are refused by name: torch records no tag for
   either.

Everything is decided from the running torch's registry, so a newer torch's operators are
judged by the same rules rather than by a list written for one release.
"""

from __future__ import annotations

import re
from typing import Any

import torch

ADMITTED_NAMESPACES = frozenset({"aten"})

# Higher-order operators whose arguments are the file's own subgraphs (themselves checked node
# by node) and tensors: control flow and grad/autocast regions, as torch.export writes them.
ADMITTED_HIGHER_ORDER = frozenset({"cond", "while_loop", "wrap_with_set_grad_enabled",
                                   "wrap_with_autocast"})

# Private operators that torch.export writes for standard layers (nn.Linear, nn.BatchNorm*,
# nn.Softmax, dtype casts, its own shape assertions). Each computes on its tensors with the
# same checks as its public form:
REVIEWED_PRIVATE = frozenset({
    "_softmax", "_log_softmax", "_safe_softmax",  # softmax kernels behind nn.Softmax
    "_native_batch_norm_legit_no_training",       # BatchNorm in eval mode after decomposition
    "_native_batch_norm_legit_functional",
    "_to_copy",                                   # .to(dtype/device): a checked copy
    "_unsafe_view",  # "unsafe" for autograd aliasing only: sizes are checked as view() does
    "_local_scalar_dense",                        # tensor.item()
    "_assert_tensor_metadata", "_assert_scalar", "_assert_async",  # export's own checks
})

# Operators whose result holds whatever bytes were in memory before: a scorer that returns them
# would publish heap contents in its scores. torch has no tag for this, so they are named.
UNINITIALISED = frozenset({"empty", "empty_like", "new_empty", "empty_strided",
                           "new_empty_strided", "empty_permuted", "resize", "resize_as",
                           "resize_", "resize_as_"})

# Families of operators that build tensors from raw index or layout data whose invariants torch
# does not check by default (sparse and nested tensors: out-of-range indices write outside the
# result when densified), or call one vendor's kernels directly with fewer argument checks.
# Exports of standard layers never write them.
LOW_LEVEL_FAMILIES = re.compile(r"sparse|csr|csc|bsr|bsc|nested|mkldnn|cudnn|miopen|fbgemm"
                                r"|quantize|vulkan|mps|xpu|mkl_|onednn")

# In-place view changes (torch tags them inplace_view) that only reshape a tensor's view of its
# own memory, with the same checks as their functional forms: exports write detach_ and
# (un)squeeze_ for ordinary code. The others (set_, as_strided_, resize_as_) can point a tensor
# at memory it did not hold, or grow it uninitialised.
REVIEWED_INPLACE_VIEWS = frozenset({"detach_", "squeeze_", "unsqueeze_", "transpose_", "t_",
                                    "swapdims_", "swapaxes_"})

# Dropout draws random numbers only when its train argument is true.
RANDOM_WHEN_TRAINING = frozenset({"dropout", "feature_dropout", "alpha_dropout",
                                  "feature_alpha_dropout"})

# String arguments that select an option of the computation (gelu's approximate, div's
# rounding_mode, scatter's reduce, conv's padding, meshgrid's indexing, pad's mode...).
OPTION_STRINGS = frozenset({"approximate", "rounding_mode", "reduce", "reduction", "padding",
                            "indexing", "mode", "pad_mode", "padding_side", "side", "UPLO",
                            "equation", "interpolation", "assert_msg", "norm"})

_NO_RESULT_ADMITTED = frozenset({"_assert_tensor_metadata", "_assert_scalar", "_assert_async"})
_VALUE_TYPES = (torch.TensorType, torch.IntType, torch.FloatType, torch.BoolType,
                torch.NumberType, torch.ComplexType, torch.DeviceObjType, torch.SymIntType,
                torch.SymBoolType)


def refusal(op: Any) -> str | None:
    """Why ``op`` (an OpOverload or a higher-order operator) may not run, or None."""
    if isinstance(op, torch._ops.HigherOrderOperator):
        if op.name() in ADMITTED_HIGHER_ORDER:
            return None
        return f"the higher-order operator '{op.name()}' is not one sensaudit admits"
    if not isinstance(op, torch._ops.OpOverload):
        return "it is not a torch operator"
    namespace, name = op.namespace, op._schema.name.split("::")[-1]
    label = f"{namespace}::{name}"
    if namespace not in ADMITTED_NAMESPACES:
        return f"{label} is outside the operator namespaces sensaudit admits (aten)"
    if name.startswith("_") and name not in REVIEWED_PRIVATE:
        return f"{label} is a torch-internal operator that sensaudit has not reviewed"
    if LOW_LEVEL_FAMILIES.search(name):
        return f"{label} is a low-level (sparse, nested or backend-specific) operator"
    if name in UNINITIALISED:
        return f"{label} returns uninitialised memory"
    if torch.Tag.nondeterministic_seeded in op.tags and name not in RANDOM_WHEN_TRAINING:
        return f"{label} draws from the process's random state"
    if (torch.Tag.inplace_view in op.tags and name not in REVIEWED_INPLACE_VIEWS
            or name == "set"):  # set_'s functional form, which functionalisation writes
        return f"{label} changes which memory a tensor views"
    schema = op._schema
    if not schema.returns and name not in _NO_RESULT_ADMITTED:
        return f"{label} returns nothing: it acts only by side effect"
    for argument in schema.arguments:
        why = _argument_refusal(argument.type, argument.name)
        if why:
            return f"{label} takes {why}"
    for result in schema.returns:
        why = _argument_refusal(result.type, "")
        if why:
            return f"{label} returns {why}"
    return None


def call_refusal(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why this call of an admitted operator may not run, or None: dropout in training mode."""
    if isinstance(op, torch._ops.OpOverload) and op._schema.name.split("::")[-1] in \
            RANDOM_WHEN_TRAINING:
        train = kwargs.get("train", args[2] if len(args) > 2 else None)
        if train is not False:
            return f"{op._schema.name} is called in training mode, which draws random numbers"
    return None


def resolve(path: str) -> Any:
    """The operator a serialised target such as 'torch.ops.aten.linear.default' names, or None.

    Only ``torch.ops.<namespace>.<name>.<overload>`` and ``torch.ops.higher_order.<name>`` are
    resolved, by attribute look-ups on torch's operator registry (what torch's own loader does)."""
    parts = path.split(".")
    if parts[:2] != ["torch", "ops"] or any(not p.isidentifier() or p.startswith("__")
                                            for p in parts):
        return None
    try:
        if len(parts) == 4 and parts[2] == "higher_order":
            return getattr(torch.ops.higher_order, parts[3])
        if len(parts) == 5 and parts[2] != "higher_order":
            namespace = getattr(torch.ops, parts[2])
            packet = getattr(namespace, parts[3])
            if parts[4] not in packet.overloads():
                return None
            return getattr(packet, parts[4])
    except (AttributeError, RuntimeError):
        return None
    return None


def _argument_refusal(kind: Any, name: str) -> str | None:
    """Why an argument (or result) of this type may not be passed, or None."""
    if isinstance(kind, (torch.OptionalType, torch.ListType)):
        return _argument_refusal(kind.getElementType(), name)
    if isinstance(kind, torch.StringType):
        return None if name in OPTION_STRINGS else f"a string '{name}'"
    if isinstance(kind, _VALUE_TYPES):
        return None
    # ScalarType, Layout, MemoryFormat: enums that TorchScript's schema types spell as int
    if str(kind) in ("ScalarType", "Layout", "MemoryFormat"):
        return None
    return f"a {kind}{f' {name!r}' if name else ''}"
