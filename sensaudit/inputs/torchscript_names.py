"""Which names in a TorchScript archive torch resolves to something other than the archive's code.

Two places where a name the archive's code appears to define is not what torch uses:

- Qualified class names. ``torch.jit.load`` looks a class name up among the C++ custom classes
  first (``getCustomClass`` in ``SourceImporterImpl::findNamedType``) and only then in the
  archive's code. Custom classes all live under ``__torch__.torch.classes.``, and their C++
  ``__setstate__`` runs while unpickling (``aten.OpaqueObject``'s unpickles its state with
  Python's pickle), so a code file "declaring" such a class vouches for nothing: that namespace
  is refused outright, whatever classes are registered in this process.
- Method names. ``x.name(...)`` calls the archive's method only when ``x`` is one of its objects;
  on a tensor, list or string TorchScript compiles it to the operator ``aten::name`` (or a
  ``prim::`` one). So a method the archive defines is admitted only when no operator and no
  tensor attribute has its name.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sensaudit.inputs.torchscript_ops import ATEN_OPS

CUSTOM_CLASSES = "__torch__.torch.classes"
# The namespaces TorchScript resolves a method call or builtin to (SimpleValue::attr builds an
# aten:: builtin; special forms and attributes use prim::).
_METHOD_NAMESPACES = ("aten", "prim")


def resolves_outside_archive(qualified: str) -> bool:
    """Whether torch would take ``qualified`` (a class or function name) from its own registry
    rather than from the archive's code."""
    return qualified == CUSTOM_CLASSES or qualified.startswith(f"{CUSTOM_CLASSES}.")


def method_name_allowed(name: str, defined_methods: set[str]) -> bool:
    """A tensor/list operation on the list, or a method the archive defines whose name no
    operator and no tensor attribute has (else ``x.name(...)`` would reach that operator)."""
    return name in ATEN_OPS or (name in defined_methods and not is_operator_name(name))


def is_operator_name(name: str) -> bool:
    """Whether a method call ``x.name(...)`` could compile to a registered operator or a tensor
    method: asked of torch each time for aten:: and prim:: (operators registered later count),
    and of every namespace registered when first asked."""
    if hasattr(torch.Tensor, name) or name in _all_operator_names():
        return True
    return any(torch._C._jit_get_schemas_for_operator(f"{namespace}::{name}")
               for namespace in _METHOD_NAMESPACES)


@lru_cache(maxsize=1)
def _all_operator_names() -> frozenset[str]:
    return frozenset(schema.name.partition("::")[2].partition(".")[0]
                     for schema in torch._C._jit_get_all_schemas())
