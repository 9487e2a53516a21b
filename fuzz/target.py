"""What a fuzz target is, and where they are found.

A target is one small module in :mod:`fuzz.targets` with a module-level
``TARGET``: a function that feeds one input to the parser (and checks what it
can cheaply, asserting properties that must hold), the parser's own error
types (the only exceptions the input may cause), and where its seeds are.
Anything else the function raises is a finding: atheris stops and saves the
input.  Adding a parser means adding one such module.

This module imports nothing of ours, so the worker can import the targets
(and through them the parsers) under atheris's instrumentation.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "fuzz" / "regressions"


@dataclass(frozen=True)
class Target:
    name: str
    # What the parser reads and how: one line for the results table.
    about: str
    # Feed one input; raise only ``expected`` (or nothing).
    one_input: Callable[[bytes], None]
    # The parser's own error types: the one way it may refuse input.
    expected: tuple[type[BaseException], ...] = ()
    # Seed directories, relative to the repository root (read, never written).
    seed_dirs: tuple[str, ...] = ()
    # Seeds built in code (valid tokens, say), added to the working corpus.
    generated: Callable[[], Iterable[bytes]] = field(default=lambda: ())
    # The packages whose code atheris instruments for coverage.
    instrument: tuple[str, ...] = ("wire",)

    def run(self, data: bytes) -> None:
        """One input, with the parser's own errors swallowed (what the fuzzer calls)."""
        with contextlib.suppress(*self.expected):
            self.one_input(data)

    def seed_files(self) -> list[Path]:
        """Every committed seed: the seed directories' files (not READMEs), the corpus a
        full run kept (fuzz/corpus/kept/NAME) and the regressions."""
        files: list[Path] = []
        own = (f"fuzz/corpus/kept/{self.name}", f"fuzz/regressions/{self.name}")
        for directory in (*self.seed_dirs, *own):
            path = ROOT / directory
            if path.is_dir():
                files += sorted(
                    p for p in path.iterdir() if p.is_file() and not p.name.startswith("README")
                )
        return files


def names() -> list[str]:
    """Every target's name, in a stable order."""
    import fuzz.targets

    return sorted(module.name for module in pkgutil.iter_modules(fuzz.targets.__path__))


def load(name: str) -> Target:
    if name not in names():
        raise ValueError(f"no fuzz target {name!r}; known: {', '.join(names())}")
    target: Target = importlib.import_module(f"fuzz.targets.{name}").TARGET
    assert target.name == name, f"fuzz/targets/{name}.py names itself {target.name!r}"
    return target


# The key the capture tool's stack signs route tokens with, so captured checks
# carry tokens the relay and route-token targets accept (and go past the HMAC).
SEED_SECRET = b"rtclab-fuzz-seed-secret"

# The captured seeds, by what the capture tool saw (fuzz/corpus/README.md).
DATAGRAM_DIRS = tuple(f"fuzz/corpus/{kind}" for kind in ("stun", "dtls", "rtp", "rtcp"))
SDP_DIRS = ("tests/data/sdp", "fuzz/corpus/sdp")
