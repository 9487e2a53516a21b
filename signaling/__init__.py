"""signaling: the public HTTP API that takes a caller's SDP offer and places the
session on a media server (fewest sessions, healthy and not draining first;
another one when forwarding fails).

``core/`` holds the pure decisions (offer checks, placement order, backend
health, forward outcomes); the modules beside it are the asyncio shell.
"""
