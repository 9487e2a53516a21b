"""The agent's command-line options, shared by every media server's command.

One decorator, so each transport's server offers the same knobs with the same
defaults and help, and hands its session code one :class:`AgentConfig`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from agent.turns import AgentConfig

_DEFAULT = AgentConfig()
F = TypeVar("F", bound=Callable[..., Any])


def agent_options(command: F) -> F:
    """Add the agent's options to ``command``; it receives them as ``agent: AgentConfig``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["agent"] = AgentConfig(
            model_delay_ms=kwargs.pop("model_delay_ms"),
            response_seconds=kwargs.pop("response_seconds"),
            generation_speed=kwargs.pop("generation_speed"),
            vad_hangover_ms=kwargs.pop("vad_hangover_ms"),
        )
        return command(*args, **kwargs)

    options = [
        click.option(
            "--model-delay-ms",
            type=click.FloatRange(min=0),
            default=_DEFAULT.model_delay_ms,
            show_default=True,
            help="Agent: how long the 'model' thinks after the caller's turn ends, before "
            "the response starts.",
        ),
        click.option(
            "--response-seconds",
            type=click.FloatRange(min=0.02),
            default=_DEFAULT.response_seconds,
            show_default=True,
            help="Agent: length of each spoken response.",
        ),
        click.option(
            "--generation-speed",
            type=click.FloatRange(min=0.01),
            default=_DEFAULT.generation_speed,
            show_default=True,
            help="Agent: how many times faster than real time the response audio becomes "
            "available (like TTS). How it is then sent is the transport's: WebRTC paces it "
            "in real time, and the session's turns show how long finished audio waited.",
        ),
        click.option(
            "--vad-hangover-ms",
            type=click.FloatRange(min=0),
            default=_DEFAULT.vad_hangover_ms,
            show_default=True,
            help="Agent: quiet time after which the caller's turn counts as over.",
        ),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated
