"""Plain-text renderings of results, for terminals."""

from __future__ import annotations

from typing import Any


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def call_summary(result: dict[str, Any]) -> str:
    """A few readable lines about one call result (the JSON has everything)."""
    lines = [
        f"call {result.get('call_id') or '-'} on backend {result.get('backend') or '-'}: "
        + ("ok" if result.get("ok") else f"FAILED ({result.get('error')})")
    ]
    setup = result.get("setup_ms") or {}
    if setup:
        phases = ", ".join(f"{name} {_ms(value)}" for name, value in setup.items())
        lines.append(f"  setup (from offer POST): {phases}")
    for direction in ("uplink", "downlink"):
        stats = result.get(direction) or {}
        if stats:
            lines.append(
                f"  {direction:<8} sent {stats.get('packets_sent')}, "
                f"received {stats.get('packets_received')}, lost {stats.get('packets_lost')} "
                f"({100 * float(stats.get('loss_ratio') or 0):.1f}%), "
                f"largest gap {_ms(stats.get('max_gap_ms'))}"
            )
    turns = result.get("turns") or []
    if turns:
        latencies = ", ".join(_ms(turn.get("latency_ms")) for turn in turns)
        lines.append(
            f"  turns: {len(turns)}; latency from end of speech to first answer audio: {latencies}"
        )
    return "\n".join(lines)
