"""Plain-text renderings of results, for terminals."""

from __future__ import annotations

from typing import Any

from lab.report.analysis import Spread


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


def seconds(value: float | None) -> str:
    """A duration for a reader: tenths of a second (audio gaps are known to ~20 ms)."""
    return "never" if value is None else f"{value:.1f} s"


def describe_spread(spread: Spread, trial: str = "move", never: str = "never") -> str:
    """``median 2.9 s, p95 5.6 s, max 5.8 s over 8 moves``, saying how many never ended.

    ``never`` is what a trial that did not end is called (``not while observed``).
    """
    n = spread.trials
    if n == 0:
        return f"no {trial}s"
    plural = f"{n} {trial}" + ("" if n == 1 else "s")
    if spread.ended == 0:
        return f"{never}, on all {plural}" if n > 1 else never
    if n == 1:
        return seconds(spread.max)

    def value(v: float | None) -> str:
        return never if v is None else seconds(v)

    text = f"median {value(spread.median)}, p95 {value(spread.p95)}, max {value(spread.max)}"
    text += f" over {plural}"
    if spread.ended < n:
        text += f" ({n - spread.ended} {never})"
    return text
