"""What TorchScript code in a model file may call: tensor math and what standard layers compile to.

Everything here computes on tensors and numbers in memory. Left out on purpose (so refused):
file and process access (``aten::save``, ``aten::from_file``), uninitialised memory
(``empty``, ``resize_``, ``set_``, ``as_strided``), printing and warnings (``print``, ``warn``:
text on the terminal), threads (``fork``/``wait``), custom C++ classes, and any namespace
under ``ops.`` but ``aten`` and the ``prim`` ops below. tests/test_pt2_operators.py checks the
tensor operators here against :mod:`.operator_policy`, the rules .pt2 graphs are held to.
"""

from __future__ import annotations

_ELEMENTWISE = {
    "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "floordiv", "remainder",
    "fmod", "pow", "neg", "abs", "reciprocal", "square", "sqrt", "rsqrt", "exp", "exp2",
    "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "tanh", "erf", "erfc", "sigmoid", "logit", "sign", "sgn", "floor",
    "ceil", "round", "trunc", "frac", "clamp", "clamp_min", "clamp_max", "clip", "maximum",
    "minimum", "fmax", "fmin", "lerp", "addcmul", "addcdiv", "hypot", "nan_to_num", "fill",
    "zero", "masked_fill",
    # activations, as nn.ReLU, nn.GELU and the others compile
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus",
    "softsign", "hardtanh", "hardsigmoid", "hardswish", "prelu", "glu", "log_sigmoid",
    "threshold", "tanhshrink", "softmax", "log_softmax",
    "dropout", "feature_dropout", "alpha_dropout",
}
_OTHER = {
    "isnan", "isinf", "isfinite", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
    "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
    "bitwise_xor", "__and__", "__or__", "__xor__", "__not__", "__is__", "__isnot__",
    "__contains__", "where",
    # layers: nn.Linear, nn.LayerNorm, nn.BatchNorm*, nn.Embedding and friends
    "linear", "matmul", "mm", "bmm", "mv", "dot", "addmm", "addmv", "baddbmm", "einsum",
    "bilinear", "layer_norm", "batch_norm", "group_norm", "instance_norm", "embedding",
    "cosine_similarity", "pairwise_distance",
    # reductions
    "sum", "mean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "std", "var",
    "norm", "logsumexp", "cumsum", "cumprod", "all", "any", "count_nonzero",
    # shapes and copies
    "size", "dim", "numel", "len", "view", "reshape", "flatten", "unflatten", "squeeze",
    "unsqueeze", "transpose", "t", "permute", "contiguous", "expand", "expand_as", "repeat",
    "cat", "concat", "stack", "split", "chunk", "narrow", "select", "slice", "index_select",
    "gather", "unbind", "numpy_T", "view_as", "reshape_as", "clone", "detach", "to", "type_as",
    "copy_", "__getitem__", "__range_length", "__derive_index",
    # new tensors, filled (never uninitialised)
    "tensor", "scalar_tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like",
    "new_zeros", "new_ones", "new_full", "arange", "linspace", "eye",
    # numbers, strings, lists and dicts, as TorchScript spells Python's built-ins
    "format", "append", "extend", "get", "keys", "values", "items", "device", "Int",
    "Float", "Bool", "ScalarImplicit", "item", "str", "list", "floor_div",
}
# In-place forms (relu_, add_): they write into tensors the model already holds, nothing else.
ATEN_OPS = frozenset(_OTHER | _ELEMENTWISE | {f"{name}_" for name in _ELEMENTWISE})

# ops.prim.<name>: raising errors, conversions, reading a tensor's attributes.
PRIM_OPS = frozenset({
    "RaiseException", "NumToTensor", "dtype", "device", "layout", "unchecked_unwrap_optional",
    "requires_grad", "is_cuda", "data", "shape", "min", "max", "abs",
})

# Python built-ins TorchScript code may call by bare name.
BUILTIN_CALLS = frozenset({
    "getattr", "hasattr", "isinstance", "int", "float", "bool", "str", "range", "len",
    "annotate", "unchecked_cast", "uninitialized", "min", "max", "abs", "enumerate", "zip",
    "tuple", "list",
})
# Names of types in annotations, and constants TorchScript prints by name.
TYPE_NAMES = frozenset({
    "Tensor", "int", "float", "bool", "str", "complex", "NoneType", "Device", "Any", "number",
    "Optional", "List", "Dict", "Tuple", "Final", "Union", "Module",
})
CONSTANT_NAMES = frozenset({"inf", "nan"})
# getattr/hasattr are checked separately: a constant attribute name on a local value.
ATTRIBUTE_BUILTINS = frozenset({"getattr", "hasattr"})
