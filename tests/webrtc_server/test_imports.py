"""Import rules of the media server: pure cores, one door to aiortc internals."""

from __future__ import annotations

import ast
from pathlib import Path

import webrtc_server

PACKAGE = Path(webrtc_server.__file__).parent
OURS = ("wire", "stun_lb", "webrtc_server", "signaling", "lab")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_cores_import_only_wire_the_standard_library_and_numpy() -> None:
    for path in (PACKAGE / "core").glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in {"asyncio", "socket", "time", "aiortc", "aioice", "aiohttp", "av"}, (
                f"{path.name} imports {name}"
            )
            if top in OURS:
                assert top == "wire" or name.startswith("webrtc_server.core"), (
                    f"{path.name} imports {name}"
                )


def test_only_aioice_patch_imports_aioice() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "aioice_patch.py":
            continue
        assert not any(name.split(".")[0] == "aioice" for name in _imports(path)), path.name


def test_the_media_server_imports_no_other_server() -> None:
    for path in PACKAGE.rglob("*.py"):
        for name in _imports(path):
            assert name.split(".")[0] not in {"stun_lb", "signaling", "lab"}, (
                f"{path.name} imports {name}"
            )
