"""The names a .pt2 graph may use besides ``torch.ops`` operators: sympy functions in shape
expressions, and the Python operators torch uses for arithmetic on symbolic sizes."""

from __future__ import annotations

import math
import operator

import torch

# Names that appear in torch.export's serialised sympy expressions (sympy's srepr), plus the
# torch sympy functions the deserialiser itself provides. Anything else is refused.
SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Piecewise",
    "ExprCondPair", "true", "false", "True", "False", "None", "oo", "zoo", "nan", "Infinity",
    "NegativeInfinity", "NaN", "Zero", "One", "NegativeOne", "Half", "floor", "ceiling",
    "BooleanTrue", "BooleanFalse", "Tuple",
    # assumptions in Symbol(...)
    "positive", "negative", "integer", "nonnegative", "nonpositive", "real", "finite",
    "zero", "nonzero", "even", "odd", "commutative", "precision",
    # torch.utils._sympy.functions, which the deserialiser names
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})

# Graph calls that are not torch operators but appear in exported graphs: tuple indexing for
# multi-output ops, and arithmetic on symbolic sizes (torch._export.serde.serialize._SYM_OPS).
SYMBOLIC_OPS = frozenset({
    operator.getitem, operator.eq, operator.ne, operator.le, operator.ge, operator.lt,
    operator.gt, operator.neg, operator.pos, operator.mul, operator.add, operator.sub,
    operator.floordiv, operator.mod, operator.pow, operator.truediv, operator.and_,
    operator.or_, operator.lshift, operator.rshift, math.trunc, torch.sym_not, torch.sym_int,
    torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_sqrt,
})
SYMBOLIC_OP_NAMES = frozenset(
    f"{'_operator' if f.__module__ in ('operator', '_operator') else f.__module__}.{f.__name__}"
    for f in SYMBOLIC_OPS)
