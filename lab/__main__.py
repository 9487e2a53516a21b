"""``python -m lab`` is the ``rtclab`` command."""

from lab.cli import main

main(prog_name="rtclab")
