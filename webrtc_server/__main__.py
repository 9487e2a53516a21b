"""``python -m webrtc_server``: the same command as ``rtclab media``."""

from webrtc_server.cli import command

if __name__ == "__main__":
    command(prog_name="python -m webrtc_server")
