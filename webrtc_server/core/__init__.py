"""Pure pieces of the media server: offer/answer edits and session phases.

Nothing here imports asyncio, sockets, aiortc or a clock: callers pass ``now``.
The agent itself is transport-neutral and lives in :mod:`agent`.
"""
