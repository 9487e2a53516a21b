"""Coverage-guided fuzzing (atheris/libFuzzer) of every parser that reads network input.

One target per parser lives in :mod:`fuzz.targets` (a module holding one
:class:`fuzz.target.Target`); ``scripts/fuzz`` runs them (see fuzz/README.md).
"""
