"""The synthetic voice agent, pure and the same for every transport.

It hears the caller one frame level at a time (VAD with hangover), waits a
model delay, and makes a response available at a generation speed faster
than real time, as TTS does (:mod:`agent.turns`).  What it reports is named
like the OpenAI Realtime API's events (:mod:`agent.events`).  A transport
adapts only framing and delivery: how frames reach it and how the frames it
produces leave.  Nothing here imports asyncio, sockets, a media library or a
clock: callers pass ``now``.
"""
