"""The ``rtclab`` command: every part of the lab from one entry point."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="rtclab")
def main() -> None:
    """rtclab: a lab for real-time voice transport.

    It runs the WebRTC design large voice-AI services publish (HTTP signaling,
    media servers that terminate every session, a UDP relay on one port that
    routes by ICE ufrag) on loopback, and measures its failure modes.
    """


def _register() -> None:
    # Each server owns its command; the lab only gathers them under one name.
    from signaling.cli import command as signaling_command
    from stun_lb.cli import command as lb_command
    from webrtc_server.cli import command as media_command

    main.add_command(lb_command, "lb")
    main.add_command(media_command, "media")
    main.add_command(signaling_command, "signaling")


_register()
