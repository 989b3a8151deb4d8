"""The package's structure: no module reaches into another package's private names (the layer
and cycle contracts themselves are import-linter's, run by `make test`: pyproject.toml,
[tool.importlinter])."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sensaudit"


def _private_imports_across_packages(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        importer = ".".join(path.relative_to(package.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            module = node.module or ""
            if not module.startswith("sensaudit."):
                continue
            owner = module.rsplit(".", 1)[0]
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") and owner != importer:
                    found.append(f"{path.relative_to(package.parent)}: {module}.{name}")
    return found


def test_no_module_imports_another_packages_private_names():
    assert _private_imports_across_packages() == []


def test_the_rule_sees_a_private_import_across_packages(tmp_path):
    # The scan itself, on a planted violation: it must not pass by seeing nothing.
    planted = tmp_path / "sensaudit"
    (planted / "cli").mkdir(parents=True)
    (planted / "cli" / "app.py").write_text("from sensaudit.pipeline.passes import _start\n")
    (planted / "pipeline").mkdir()
    (planted / "pipeline" / "passes.py").write_text("from sensaudit.pipeline.spill import _x\n")
    assert _private_imports_across_packages(planted) == [
        "sensaudit/cli/app.py: sensaudit.pipeline.passes._start"]


def test_package_relative_imports_are_not_used():
    # Absolute imports name each module's layer, so a reader (and the contract) sees it.
    relative = [str(path.relative_to(PACKAGE.parent)) for path in sorted(PACKAGE.rglob("*.py"))
                if any(isinstance(n, ast.ImportFrom) and n.level
                       for n in ast.walk(ast.parse(path.read_text())))]
    assert relative == []
