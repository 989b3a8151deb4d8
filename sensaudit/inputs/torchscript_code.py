"""Static check of the code in a TorchScript archive (``code/**/*.py``) against an allowlist.

``torch.jit.load`` compiles that code and runs parts of it while loading (``__setstate__``) and
the rest when the model runs; TorchScript can call any registered operator, ``aten::save`` and
``aten::from_file`` (which write files) among them. So every file is parsed (TorchScript's
serialised code is a subset of Python syntax) and accepted only if each statement, name and call
is one TorchScript writes for tensor math: see :mod:`.torchscript_ops`. Names resolve the way
TorchScript resolves them: a bare name is a local only once assigned on every path to it;
otherwise it must be an allowlisted built-in, so no unlisted global can hide behind a local.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field

from sensaudit.inputs.torchscript_limits import MAX_CODE_DEPTH, nesting
from sensaudit.inputs.torchscript_names import (
    CUSTOM_CLASSES,
    method_name_allowed,
    resolves_outside_archive,
)
from sensaudit.inputs.torchscript_ops import (
    ATEN_OPS,
    ATTRIBUTE_BUILTINS,
    BUILTIN_CALLS,
    CONSTANT_NAMES,
    PRIM_OPS,
    TYPE_NAMES,
)

# __setstate__ runs while the file loads; __getstate__ pairs with it. Neither is needed by a
# plain module (TorchScript's default state handling is not written as code).
FORBIDDEN_METHODS = frozenset({"__setstate__", "__getstate__"})
_ROOTS = frozenset({"torch", "ops", "__torch__", "CONSTANTS"})
_RESERVED = _ROOTS | BUILTIN_CALLS | TYPE_NAMES | CONSTANT_NAMES | {"fork", "wait", "print"}
_CONSTANT = re.compile(r"c\d+")
_CLASS_BODY_LISTS = frozenset({"__parameters__", "__buffers__"})
_STATEMENTS = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return, ast.If, ast.For, ast.While,
               ast.Pass, ast.Break, ast.Continue, ast.Expr)
_EXPRESSIONS = (ast.Call, ast.Attribute, ast.Name, ast.Constant, ast.Subscript, ast.Slice,
                ast.Tuple, ast.List, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                ast.IfExp)


class UnsafeCode(Exception):
    """The code does something off the allowlist; the message says what and where."""


@dataclass
class CodeFacts:
    """What the archive's code defines: qualified class and function names, method names."""

    classes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)


def check_code(sources: dict[str, str]) -> CodeFacts:
    """Check every module (qualified name -> source); return what they define."""
    trees = {module: _parse(module, text) for module, text in sources.items()}
    facts = CodeFacts()
    for module, tree in trees.items():
        for stmt in tree.body:
            if isinstance(stmt, (ast.ClassDef, ast.FunctionDef)) \
                    and resolves_outside_archive(f"{module}.{stmt.name}"):
                # torch takes these names from its C++ custom classes, not from this code
                raise UnsafeCode(f"{module}: a definition of '{module}.{stmt.name}', a name "
                                 f"torch resolves to its C++ custom classes ({CUSTOM_CLASSES}."
                                 "*), not to this code")
            if isinstance(stmt, ast.ClassDef):
                facts.classes.add(f"{module}.{stmt.name}")
                facts.methods.update(s.name for s in stmt.body if isinstance(s, ast.FunctionDef))
            elif isinstance(stmt, ast.FunctionDef):
                facts.functions.add(f"{module}.{stmt.name}")
            else:
                raise UnsafeCode(f"{module}: a top-level statement of kind "
                                 f"{type(stmt).__name__}")
    for module, tree in trees.items():
        checker = _Checker(module, facts)
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                checker.class_def(stmt)
            elif isinstance(stmt, ast.FunctionDef):
                checker.function(stmt, module)
            else:  # an allowlist: a statement kind TorchScript does not write is refused
                checker.fail(f"a top-level {type(stmt).__name__} statement")
    return facts


def check_type_string(text: str, facts: CodeFacts) -> None:
    """A type written as text (as TorchScript's pickles tag lists and dicts: 'List[str]')."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise UnsafeCode(f"a type tag {text[:60]!r} that does not parse") from None
    if nesting(tree) > MAX_CODE_DEPTH:
        raise UnsafeCode(f"a type tag nested more than {MAX_CODE_DEPTH} levels deep")
    _Checker("<type tag>", facts).type_expr(tree.body)


def _parse(module: str, text: str) -> ast.Module:
    # Python and TorchScript must read the same tokens: no comments, no triple-quoted or
    # prefixed strings, no line continuations, where the two parsers could disagree on what is
    # code and what is text.
    if "\\\n" in text or "\\\r" in text:
        raise UnsafeCode(f"{module}: a line continuation")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        raise UnsafeCode(f"{module}: code that does not parse") from None
    except (RecursionError, MemoryError):  # Python's parser refusing deep nesting
        raise UnsafeCode(f"{module}: code nested too deeply to parse") from None
    # Before any recursive check, and before torch's recursive parser and compiler could see it.
    if nesting(tree) > MAX_CODE_DEPTH:
        raise UnsafeCode(f"{module}: code nested more than {MAX_CODE_DEPTH} levels deep")
    try:
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        _check_tokens(module, tokens)
    except (SyntaxError, tokenize.TokenError, ValueError):
        raise UnsafeCode(f"{module}: code that does not parse") from None
    return tree


def _check_tokens(module: str, tokens: Iterator[tokenize.TokenInfo]) -> None:
    for token in tokens:
        if token.type == tokenize.COMMENT:
            raise UnsafeCode(f"{module}: a comment, which TorchScript does not write")
        if token.type == tokenize.STRING and (token.string[:1] not in "'\""
                                              or token.string[:3] in ('"""', "'''")):
            raise UnsafeCode(f"{module}: a string literal {token.string[:40]!r}")


class _Checker:
    def __init__(self, module: str, facts: CodeFacts):
        self.module = module
        self.facts = facts
        self.where = module

    def fail(self, what: str) -> None:
        raise UnsafeCode(f"{self.where}: {what}")

    # --- definitions ---------------------------------------------------------------------

    def class_def(self, node: ast.ClassDef) -> None:
        owner = self.where = f"{self.module}.{node.name}"
        bases_ok = node.bases == [] or (len(node.bases) == 1 and isinstance(node.bases[0], ast.Name)
                                        and node.bases[0].id == "Module")
        if node.decorator_list or node.keywords or not bases_ok:
            self.fail("a class with decorators or bases other than Module")
        defined = {stmt.name for stmt in node.body if isinstance(stmt, ast.FunctionDef)}
        for name in sorted(defined & FORBIDDEN_METHODS, reverse=True):  # __setstate__ first
            self.fail(f"a {name} method: custom state code runs while the file loads")
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                self.function(stmt, owner)
                self.where = owner
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                self.type_expr(stmt.annotation)
                if stmt.value is not None:
                    self.literal(stmt.value)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                self.class_assignment(stmt.targets[0], stmt.value)
            else:
                self.fail(f"a statement of kind {type(stmt).__name__} in a class body")

    def class_assignment(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name) and target.id in _CLASS_BODY_LISTS:
            self.literal(value)
        elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
              and target.value.id == "__annotations__" and isinstance(target.slice, ast.Constant)
              and isinstance(target.slice.value, str)):
            self.type_expr(value)
        else:
            self.fail("an assignment in a class body that TorchScript does not write")

    def function(self, node: ast.FunctionDef, owner: str) -> None:
        self.where = f"{owner}.{node.name}"
        if node.name in FORBIDDEN_METHODS:
            self.fail(f"a {node.name} method: custom state code runs while the file loads")
        if not node.name.startswith("__") and not method_name_allowed(node.name, {node.name}):
            # else x.<name>(...) on a tensor would reach the operator of that name
            self.fail(f"a method named {node.name!r}, like an operator that is off the list")
        args = node.args
        if (node.decorator_list or args.vararg or args.kwarg or args.kwonlyargs
                or args.posonlyargs):
            self.fail("a function signature TorchScript does not write")
        for arg in args.args:
            if arg.annotation is not None:
                self.type_expr(arg.annotation)
            if arg.arg in _RESERVED:
                self.fail(f"a parameter named {arg.arg!r}")
        for default in args.defaults:
            self.literal(default)
        if node.returns is not None:
            self.type_expr(node.returns)
        self.block(node.body, {arg.arg for arg in args.args})

    # --- statements ----------------------------------------------------------------------

    def block(self, body: list[ast.stmt], defined: set[str]) -> set[str]:
        """Check statements in order; return the names assigned on every path through them."""
        for stmt in body:
            defined = self.statement(stmt, defined)
        return defined

    def statement(self, node: ast.stmt, defined: set[str]) -> set[str]:
        if not isinstance(node, _STATEMENTS):
            self.fail(f"a statement of kind {type(node).__name__}")
        if isinstance(node, ast.Assign):
            self.expr(node.value, defined)
            for target in node.targets:
                defined = self.store(target, defined)
        elif isinstance(node, ast.AnnAssign):
            self.type_expr(node.annotation)
            if node.value is not None:
                self.expr(node.value, defined)
            defined = self.store(node.target, defined)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.target, defined, store=True)
            self.expr(node.value, defined)
        elif isinstance(node, ast.Return):
            if node.value is not None:
                self.expr(node.value, defined)
        elif isinstance(node, ast.Expr):
            self.expr(node.value, defined)
        elif isinstance(node, ast.If):
            self.expr(node.test, defined)
            then = self.block(node.body, set(defined))
            other = self.block(node.orelse, set(defined))
            # A branch that returns adds nothing after the if; otherwise both must assign.
            if _returns(node.body):
                return other
            if _returns(node.orelse):
                return then
            return then & other
        elif isinstance(node, (ast.For, ast.While)):
            if node.orelse:
                self.fail("a loop with an else branch")
            inner = set(defined)
            if isinstance(node, ast.For):
                self.expr(node.iter, defined)
                inner = self.store(node.target, inner)
            else:
                self.expr(node.test, defined)
            self.block(node.body, inner)  # names first assigned in a loop do not leave it
        return defined

    def store(self, target: ast.expr, defined: set[str]) -> set[str]:
        if isinstance(target, ast.Name):
            if target.id in _RESERVED or target.id.startswith("__"):
                self.fail(f"an assignment to {target.id!r}")
            return defined | {target.id}
        if isinstance(target, (ast.Tuple, ast.List)):
            for item in target.elts:
                defined = self.store(item, defined)
            return defined
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            self.expr(target, defined, store=True)
            return defined
        self.fail(f"an assignment to an expression of kind {type(target).__name__}")
        return defined

    # --- expressions ---------------------------------------------------------------------

    def expr(self, node: ast.expr, defined: set[str], store: bool = False) -> None:
        if not isinstance(node, _EXPRESSIONS):
            self.fail(f"an expression of kind {type(node).__name__}")
        if isinstance(node, ast.Name):
            self.name(node.id, defined)
        elif isinstance(node, ast.Attribute):
            self.attribute(node, defined, store)
        elif isinstance(node, ast.Call):
            self.call(node, defined)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child, defined)
                elif not isinstance(child, (ast.expr_context, ast.operator, ast.unaryop,
                                            ast.boolop, ast.cmpop)):
                    self.fail(f"a part of kind {type(child).__name__} in an expression")

    def name(self, name: str, defined: set[str]) -> None:
        if name in defined or name in CONSTANT_NAMES or name in TYPE_NAMES:
            return
        if name in _ROOTS:
            self.fail(f"'{name}' used on its own")
        self.fail(f"the name {name!r}, which is neither assigned before use nor on the list")

    def attribute(self, node: ast.Attribute, defined: set[str], store: bool = False) -> None:
        dotted = _dotted(node)
        if dotted is not None and dotted.partition(".")[0] in _ROOTS:
            if store:
                self.fail(f"an assignment to '{dotted[:80]}'")
            self.reference(dotted)
            return
        if node.attr.startswith("__"):
            self.fail(f"the attribute {node.attr!r}")
        if isinstance(node.value, ast.Name) and node.value.id not in defined:
            self.fail(f"an attribute of {node.value.id!r}, which is not a local value")
        self.expr(node.value, defined)

    def reference(self, dotted: str) -> None:
        """torch.<op>, ops.aten.<op>, ops.prim.<op>, __torch__.<defined>, CONSTANTS.c<N>."""
        parts = dotted.split(".")
        root = parts[0]
        ok = ((root == "torch" and len(parts) == 2 and parts[1] in ATEN_OPS)
              or (root == "ops" and len(parts) == 3 and (
                  parts[1] == "aten" and parts[2] in ATEN_OPS
                  or parts[1] == "prim" and parts[2] in PRIM_OPS))
              or (root == "__torch__" and (dotted in self.facts.classes
                                           or dotted in self.facts.functions))
              or (root == "CONSTANTS" and len(parts) == 2 and bool(_CONSTANT.fullmatch(parts[1]))))
        if not ok:
            self.fail(f"a call or reference to '{dotted[:80]}', which is not on sensaudit's "
                      "list of tensor operations")

    def call(self, node: ast.Call, defined: set[str]) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id not in defined:
            if func.id not in BUILTIN_CALLS:
                self.fail(f"a call to {func.id!r}, which is not on the list")
            if func.id in ATTRIBUTE_BUILTINS:
                self.attribute_builtin(node, defined)
                return
        elif isinstance(func, ast.Attribute):
            dotted = _dotted(func)
            if dotted is None or dotted.partition(".")[0] not in _ROOTS:
                # A method call: a method the archive defines, or a tensor/list operation.
                if not method_name_allowed(func.attr, self.facts.methods):
                    self.fail(f"a call to the method {func.attr!r}, which is not on the list")
                self.expr(func.value, defined)
            else:
                self.reference(dotted)
        else:
            self.expr(func, defined)
        for arg in node.args:
            self.expr(arg, defined)
        for keyword in node.keywords:
            if keyword.arg is None:
                self.fail("a call with **keywords")
            self.expr(keyword.value, defined)

    def attribute_builtin(self, node: ast.Call, defined: set[str]) -> None:
        args = node.args
        ok = (len(args) == 2 and not node.keywords and isinstance(args[0], ast.Name)
              and args[0].id in defined and isinstance(args[1], ast.Constant)
              and isinstance(args[1].value, str) and not args[1].value.startswith("__"))
        if not ok:
            self.fail("getattr/hasattr other than a constant attribute of a local value")

    def type_expr(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name) and node.id in TYPE_NAMES:
            return
        if isinstance(node, ast.Constant) and node.value is None:
            return
        if isinstance(node, ast.Attribute) and _dotted(node) in self.facts.classes:
            return
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in TYPE_NAMES:
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for item in items:
                self.type_expr(item)
            return
        self.fail(f"a type annotation TorchScript does not write ({ast.dump(node)[:60]})")

    def literal(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            self.literal(node.operand)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for item in node.elts:
                self.literal(item)
        elif isinstance(node, ast.Name) and node.id in CONSTANT_NAMES:
            return
        else:
            self.fail("a default or constant that is not a literal")


def _dotted(node: ast.expr) -> str | None:
    """'a.b.c' for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _returns(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], ast.Return)
