"""Pick the scenario environment by name: ``rtclab scenario run --lab NAME``."""

from __future__ import annotations

from lab.scenarios.environment import LOOPBACK, LabEnvironment

LABS = ("loopback", "netns", "compose")


def lab_environment(name: str) -> LabEnvironment:
    """``loopback`` (the default), ``netns`` (inside `rtclab lab --netns`), ``compose``.

    The last two read where they are from the environment: ``RTCLAB_NETNS``
    (set by `rtclab lab --netns`) and the ``RTCLAB_*`` service addresses
    docker-compose.yml gives the caller container.
    """
    if name == "loopback":
        return LOOPBACK
    if name == "netns":
        from lab.netns.environment import NetnsLab

        return NetnsLab.from_environment()
    if name == "compose":
        from lab.compose.caller import ComposeLab

        return ComposeLab.from_environment()
    raise ValueError(f"no lab {name!r}; labs are {', '.join(LABS)}")
