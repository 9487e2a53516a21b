"""``python -m lab.netem``: the same command as ``rtclab netem``."""

from lab.netem.cli import command

if __name__ == "__main__":
    command(prog_name="python -m lab.netem")
