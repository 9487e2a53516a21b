"""Imports flow one way: signaling never imports another server or the lab,
and its core imports only the standard library, ``wire`` and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import signaling

PACKAGE = Path(signaling.__file__).parent


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_signaling_imports_no_other_server_and_not_the_lab() -> None:
    for path in PACKAGE.rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top not in {"stun_lb", "webrtc_server", "lab"}, f"{path.name} imports {module}"


def test_the_core_imports_only_stdlib_wire_and_itself() -> None:
    paths = list((PACKAGE / "core").rglob("*.py"))
    assert paths
    for path in paths:
        for module in imported_modules(path):
            top = module.split(".")[0]
            allowed = top in sys.stdlib_module_names or top == "wire"
            allowed = allowed or module.startswith("signaling.core")
            assert allowed, f"core/{path.name} imports {module}"
