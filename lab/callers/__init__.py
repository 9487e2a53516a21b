"""Synthetic callers: a real aiortc peer that speaks, listens and measures."""
