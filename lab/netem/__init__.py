"""The path emulator between callers and the stack: delay, jitter, loss, rate, rebinds.

``core`` is the seeded path model (pure); ``udp`` and ``tcp`` are the hops
around it; ``control`` is its HTTP API and ``client`` a small client for it.
"""
