"""Pure signaling decisions: no asyncio, no sockets, no clocks of their own."""
