"""Imports flow one way (DESIGN.md "Parts"), checked by reading the source.

- ``wire`` imports nothing of ours;
- ``agent`` (the synthetic voice agent every transport runs) imports only ``wire``;
- the three servers never import one another (they talk HTTP and UDP) nor the lab;
  they share ``wire`` and ``agent``;
- every ``core`` package imports only the standard library, numpy, ``wire`` and itself;
- the compose lab's caller side (what runs inside the image) imports none of its
  Docker-driving host side;
- the lab starts servers but reaches into none of their internals: from a server
  it may import only the click command (to register it),
  ``webrtc_server.aioice_patch`` (the one place that knows aiortc's private parts)
  and ``webrtc_server.media`` (the audio track edges a caller shares);
- the fuzz targets (``fuzz``) reach only the parsers: ``wire`` and the servers'
  pure ``core`` packages, never a server's I/O or the lab; the lab may read
  ``fuzz.target`` (what the capture tool writes seeds for) and nothing else of it.
- the GStreamer client's script runs under the system's Python, outside the
  project's environment: it imports only the standard library and ``gi``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"wire", "agent", "stun_lb", "webrtc_server", "signaling", "lab", "fuzz"}
SERVERS = {"stun_lb", "webrtc_server", "signaling"}
LAB_MAY_IMPORT = {
    "stun_lb.cli",
    "webrtc_server.cli",
    "signaling.cli",
    "webrtc_server.aioice_patch",
    # The audio edges (a paced 20 ms track, a remote-track reader) are the same
    # for a caller and a media server; written once, there.
    "webrtc_server.media",
}


def imports_of(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from X import a" names X.a: a submodule or an attribute of X.
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def sources(package: str) -> list[Path]:
    paths = sorted((ROOT / package).rglob("*.py"))
    assert paths, f"no sources under {package}/"
    return paths


def ours(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in OURS else None


@pytest.mark.parametrize("path", sources("wire"), ids=lambda p: p.name)
def test_wire_imports_nothing_of_ours(path: Path) -> None:
    assert {m for m in imports_of(path) if ours(m) not in (None, "wire")} == set()


@pytest.mark.parametrize("path", sources("agent"), ids=lambda p: p.name)
def test_agent_imports_only_wire(path: Path) -> None:
    assert {m for m in imports_of(path) if ours(m) not in (None, "wire", "agent")} == set()


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_servers_import_only_shared_code_and_themselves(server: str) -> None:
    for path in sources(server):
        shared = (None, "wire", "agent", server)
        foreign = {m for m in imports_of(path) if ours(m) not in shared}
        assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


@pytest.mark.parametrize("package", ["stun_lb", "webrtc_server", "signaling", "lab/netem"])
def test_cores_are_pure(package: str) -> None:
    core = ROOT / package / "core"
    paths = sorted(core.rglob("*.py")) if core.is_dir() else [ROOT / package / "core.py"]
    assert paths and all(p.exists() for p in paths), f"{package} has no core"
    allowed_third_party = {"numpy"}
    for path in paths:
        for module in imports_of(path):
            top = module.split(".")[0]
            ok = (
                (top in sys.stdlib_module_names and top not in {"asyncio", "socket", "time"})
                or top in allowed_third_party
                or top == "wire"
                or module.startswith(package.replace("/", "."))
                or top == "__future__"
            )
            assert ok, f"{path.relative_to(ROOT)} imports {module}"


@pytest.mark.parametrize("name", ["turns.py", "events.py"])
def test_agent_is_pure(name: str) -> None:
    for module in imports_of(ROOT / "agent" / name):
        top = module.split(".")[0]
        assert (
            top in sys.stdlib_module_names and top not in {"asyncio", "socket", "time"}
        ) or top in {"numpy", "wire", "agent", "__future__"}, f"agent/{name} imports {module}"


def test_lab_reaches_into_no_server() -> None:
    for path in sources("lab"):
        for module in imports_of(path):
            top = ours(module)
            if top in SERVERS:
                assert any(
                    module == allowed or module.startswith(allowed + ".")
                    for allowed in LAB_MAY_IMPORT
                ), f"{path.relative_to(ROOT)} imports {module}"


# The compose lab's host side drives Docker; its caller side runs inside the image.
COMPOSE_HOST_SIDE = ("lab.compose.cli", "lab.compose.images", "lab.compose.project")


@pytest.mark.parametrize("name", ["caller.py", "probe.py", "passes.py"])
def test_the_compose_caller_side_needs_no_docker(name: str) -> None:
    for module in imports_of(ROOT / "lab" / "compose" / name):
        assert not module.startswith(COMPOSE_HOST_SIDE), f"lab/compose/{name} imports {module}"


@pytest.mark.parametrize("path", sources("fuzz"), ids=lambda p: p.name)
def test_fuzz_targets_reach_only_parsers(path: Path) -> None:
    cores = tuple(f"{server}.core" for server in SERVERS)
    for module in imports_of(path):
        top = ours(module)
        if top is None or top in ("wire", "fuzz"):
            continue
        assert any(module == core or module.startswith(core + ".") for core in cores), (
            f"{path.relative_to(ROOT)} imports {module}"
        )


def test_lab_reads_only_the_fuzz_target_definitions() -> None:
    for path in sources("lab"):
        for module in imports_of(path):
            if ours(module) == "fuzz":
                assert module.startswith("fuzz.target."), (
                    f"{path.relative_to(ROOT)} imports {module}"
                )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "lab/callers/gst").glob("*.py")), ids=lambda p: p.name
)
def test_the_gstreamer_script_imports_only_the_standard_library_and_gi(path: Path) -> None:
    for module in imports_of(path):
        top = module.split(".")[0]
        assert top in sys.stdlib_module_names or top in {"gi", "__future__"}, (
            f"{path.relative_to(ROOT)} imports {module}"
        )
