"""Symbolic shape expressions in a .pt2 file, checked before ``sympy.sympify`` evaluates them.

torch writes each expression with ``sympy.srepr``: nested calls such as
``Add(Symbol('s0', positive=True, integer=True), Integer(1))``, and reads it back with
``sympy.sympify``, which runs it as Python. So an expression is accepted only when it is that
shape: calls of sympy names (:data:`.pt2_names.SYMPY_NAMES`), number and short text literals,
keyword flags, tuples (``Piecewise`` pairs), and nothing else; no operator, attribute or
subscript, all of which srepr never writes.

Python-safe is not enough: sympy evaluates numbers as it builds them, so
``Pow(Integer(9), Pow(Integer(9), Integer(9)))`` (or ``9**9**9**9``) would compute a number of
hundreds of millions of digits and hang the load. Each expression's numbers are therefore
bounded before it is read: a conservative count of the bits any value in it can need (a sum
for products, bits times exponent for powers, 64 for a symbol, which stands for a size) must
stay under :data:`MAX_BITS`, and text, nesting and float precision are capped.
"""

from __future__ import annotations

import ast
import re

from sensaudit.inputs.archive_checks import UnsafeArchive
from sensaudit.inputs.pt2_names import SYMPY_NAMES

# Shapes are 64-bit; products of a few sizes need a few hundred bits. Anything near this cap is
# no tensor shape, and numbers of this size are computed in microseconds.
MAX_BITS = 4096
MAX_EXPRESSION_CHARS = 20_000
MAX_DEPTH = 64
_SYMBOL_BITS = 64
_TEXT = re.compile(r"[\w.+\-]{0,64}")
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow"})
_PRODUCTS = frozenset({"Mul"})


def check_expression(text: str) -> None:
    """Refuse (UnsafeArchive) an expression that is not srepr-shaped sympy of bounded size."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise UnsafeArchive(f"a shape expression is {len(text):,} characters long, over the "
                            f"{MAX_EXPRESSION_CHARS:,} sensaudit reads")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise UnsafeArchive(f"a shape expression does not parse: {text[:60]!r}") from None
    bits = _Bounds(text).bits(tree.body, 0)
    if bits > MAX_BITS:
        raise UnsafeArchive(f"a shape expression computes numbers of up to {bits:,} bits, "
                            f"over the {MAX_BITS:,} a tensor shape could need: {text[:60]!r}")


class _Bounds:
    def __init__(self, text: str):
        self.text = text

    def fail(self, found: str) -> None:
        raise UnsafeArchive(f"a shape expression holds {found[:40]!r}, which is not sympy "
                            "arithmetic")

    def bits(self, node: ast.expr, depth: int) -> int:
        """An upper bound on the bits of any number this node evaluates to."""
        if depth > MAX_DEPTH:
            raise UnsafeArchive(f"a shape expression is nested more than {MAX_DEPTH} deep")
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
                and isinstance(node.operand, ast.Constant):
            return self.constant(node.operand.value)
        if isinstance(node, ast.Name):
            if node.id not in SYMPY_NAMES:
                self.fail(node.id)
            return _SYMBOL_BITS
        if isinstance(node, ast.Tuple):
            return max((self.bits(item, depth + 1) for item in node.elts), default=1)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node, node.func.id, depth)
        self.fail(ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__)
        return 0

    def constant(self, value: object) -> int:
        if value is None or isinstance(value, bool):
            return 1
        if isinstance(value, int):
            return max(1, abs(value).bit_length())
        if isinstance(value, float):
            return _SYMBOL_BITS
        if isinstance(value, str) and _TEXT.fullmatch(value):
            # a symbol's name, or a number's digits (at most 64 characters: ~213 bits)
            return max(_SYMBOL_BITS, 4 * len(value))
        self.fail(repr(value))
        return 0

    def call(self, node: ast.Call, name: str, depth: int) -> int:
        if name not in SYMPY_NAMES:
            self.fail(name)
        for keyword in node.keywords:
            if keyword.arg is None or not isinstance(keyword.value, ast.Constant):
                self.fail(f"{name}(**...)" if keyword.arg is None else keyword.arg)
                continue
            value = keyword.value.value
            # Float(..., precision=n) computes with n bits
            if keyword.arg == "precision" and not (type(value) is int and 0 < value <= MAX_BITS):
                self.fail(f"precision={value!r}")
            self.constant(value)
        args = [self.bits(arg, depth + 1) for arg in node.args]
        if name == "Symbol":
            return _SYMBOL_BITS
        if name in _POWERS or name == "LShift":
            if len(args) != 2:
                self.fail(f"{name} with {len(args)} arguments")
            exponent = _literal(node.args[1])
            if exponent is None:
                raise UnsafeArchive(f"a shape expression raises to a power that is not a "
                                    f"literal number: {self.text[:60]!r}")
            return args[0] + exponent if name == "LShift" else args[0] * max(1, exponent)
        if name in _PRODUCTS:
            return sum(args)
        return max(args, default=1) + len(args)


def _literal(node: ast.expr) -> int | None:
    """|n| for an integer literal written as n, -n, Integer(n) or Rational(n, m); else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _literal(node.operand)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return abs(node.value)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("Integer", "Rational") and node.args):
        return _literal(node.args[0])
    return None
