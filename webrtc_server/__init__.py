"""The media server ("transceiver"): aiortc peer connections and the synthetic voice agent.

It terminates every WebRTC session itself (ICE, DTLS, SRTP, the ``oai-events``
data channel) behind an internal HTTP API that signaling calls.  Pure pieces
live in :mod:`webrtc_server.core`; :mod:`webrtc_server.aioice_patch` is the only
module that touches aiortc/aioice internals.
"""
