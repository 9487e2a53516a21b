"""``python -m stun_lb``: the same command as ``rtclab lb``."""

from stun_lb.cli import command

if __name__ == "__main__":
    command(prog_name="python -m stun_lb")
