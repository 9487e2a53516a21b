"""``python -m lab.compose``: what scripts/compose runs."""

from lab.compose.cli import command

command()
