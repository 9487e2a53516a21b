"""Prometheus metrics, read from the emulator's own counters when scraped.

The hot path only bumps plain integers; this collector turns them into metric
families at scrape time, so a packet never pays for a labelled metric update.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lab.netem.core import Direction, DropReason
from lab.netem.emulator import Emulator

PREFIX = "rtclab_netem_"
# Exported bucket bounds, seconds: 1-2-5 steps from 10 us to 5 s.
LATENESS_BOUNDS_S = [m * 10.0**e for e in range(-5, 1) for m in (1, 2, 5)]


class NetemCollector(Collector):
    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator

    def collect(self) -> Iterator[Metric]:
        emulator = self._emulator
        packets = CounterMetricFamily(
            PREFIX + "packets",
            "Datagrams (udp) and segment-sized chunks (tcp) offered to the path, by outcome. "
            "For tcp a non-delivered outcome is a chunk held for retransmission, never dropped.",
            labels=["transport", "direction", "outcome"],
        )
        delivered_bytes = CounterMetricFamily(
            PREFIX + "delivered_bytes",
            "Bytes the path delivered.",
            labels=["transport", "direction"],
        )
        for direction in Direction:
            for kind, counters in emulator.model.counters(direction).items():
                packets.add_metric([kind, direction.value, "delivered"], counters.delivered)
                for reason in DropReason:
                    packets.add_metric(
                        [kind, direction.value, reason.value], counters.dropped[reason]
                    )
                delivered_bytes.add_metric([kind, direction.value], counters.bytes_delivered)
        yield packets
        yield delivered_bytes

        lateness_family = HistogramMetricFamily(
            PREFIX + "lateness_seconds",
            "How much later than scheduled each delivery was sent: the emulator's own "
            "added latency (for tcp also the receiver's back-pressure). Buckets are "
            "conservative by up to 6 %.",
            labels=["transport"],
        )
        for transport, lateness in emulator.meter.lateness.items():
            buckets = [
                (f"{bound:g}", float(count))
                for bound, count in lateness.cumulative(LATENESS_BOUNDS_S)
            ]
            buckets.append(("+Inf", float(lateness.count)))
            lateness_family.add_metric([transport], buckets, sum_value=lateness.sum_s)
        yield lateness_family
        yield CounterMetricFamily(
            PREFIX + "cpu_seconds",
            "CPU time (user + system) this process used since the emulator started.",
            value=emulator.meter.cpu_s(),
        )

        for direction in Direction:
            config = emulator.model.config(direction)
            labels = [direction.value]
            for name, value, help_text in (
                ("delay_seconds", config.delay_ms / 1000, "Configured one-way delay."),
                ("jitter_seconds", config.jitter_ms / 1000, "Configured jitter (±)."),
                ("loss_ratio", config.loss, "Configured random loss probability."),
                (
                    "burst_loss_ratio",
                    0.0 if config.burst is None else config.burst.mean_loss,
                    "Long-run loss of the configured Gilbert-Elliott chain.",
                ),
                ("rate_kbps", config.rate_kbps or 0.0, "Configured rate limit; 0 is none."),
                ("blackhole", float(config.blackhole), "1 while the direction drops all."),
            ):
                family = GaugeMetricFamily(PREFIX + name, help_text, labels=["direction"])
                family.add_metric(labels, value)
                yield family

        udp = emulator.udp
        if udp is not None:
            yield GaugeMetricFamily(
                PREFIX + "mappings",
                "Caller mappings (outbound sockets) open.",
                value=len(udp.mappings),
            )
            yield CounterMetricFamily(
                PREFIX + "mappings_opened",
                "Caller mappings opened.",
                value=udp.counters.mappings_opened,
            )
            rebinds = CounterMetricFamily(
                PREFIX + "rebinds", "Mappings moved to a new outbound socket.", labels=["mode"]
            )
            for mode, count in udp.counters.rebinds.items():
                rebinds.add_metric([mode.value], count)
            yield rebinds
            errors = CounterMetricFamily(
                PREFIX + "udp_errors",
                "Datagrams the UDP hop could not carry for reasons outside the path model.",
                labels=["kind"],
            )
            for kind in ("send_errors", "receive_errors", "mapping_limit_drops", "stale_drops"):
                errors.add_metric([kind], getattr(udp.counters, kind))
            yield errors
        if emulator.scheduler is not None:
            yield GaugeMetricFamily(
                PREFIX + "pending_deliveries",
                "Datagrams waiting for their delivery time.",
                value=len(emulator.scheduler),
            )
        tcp = emulator.tcp
        if tcp is not None:
            yield GaugeMetricFamily(
                PREFIX + "tcp_connections",
                "TCP connections open through the hop.",
                value=tcp.counters.connections_open,
            )
            yield CounterMetricFamily(
                PREFIX + "tcp_connections_opened",
                "TCP connections accepted.",
                value=tcp.counters.connections_opened,
            )
            yield CounterMetricFamily(
                PREFIX + "tcp_connect_failures",
                "TCP connections the upstream refused.",
                value=tcp.counters.connect_failures,
            )
