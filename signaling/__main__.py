"""``python -m signaling``: the same command as ``rtclab signaling``."""

from signaling.cli import command

if __name__ == "__main__":
    command(prog_name="python -m signaling")
