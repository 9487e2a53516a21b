"""Pure pieces of the media server: offer/answer edits, session phases, the agent.

Nothing here imports asyncio, sockets, aiortc or a clock: callers pass ``now``.
"""
