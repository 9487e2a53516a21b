"""``python -m lab.netns``: the same command as ``rtclab lab``."""

from lab.netns.cli import command

command(prog_name="rtclab lab")
