"""Run one target under atheris: ``python -m fuzz.worker NAME [libFuzzer flags] CORPUS...``.

Started by :mod:`fuzz.runner`, one process per target.  The target is first
imported plainly, to read which packages it wants instrumented; those modules
are then forgotten and imported again inside atheris's instrumentation, so
coverage is measured on the parser's own code.
"""

from __future__ import annotations

import importlib
import sys

import atheris

from fuzz.target import Target


def instrumented(name: str) -> Target:
    module = f"fuzz.targets.{name}"
    packages = (module, *importlib.import_module(module).TARGET.instrument)
    for loaded in list(sys.modules):
        if any(loaded == p or loaded.startswith(p + ".") for p in packages):
            del sys.modules[loaded]
    with atheris.instrument_imports(include=list(packages)):
        target: Target = importlib.import_module(module).TARGET
    return target


def main(argv: list[str]) -> None:
    target = instrumented(argv[1])
    atheris.Setup([argv[0], *argv[2:]], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
