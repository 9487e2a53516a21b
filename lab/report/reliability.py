"""docs/reliability.md, written from the harnesses' committed result files:
``python -m lab.report.reliability``.

Each section belongs to one harness and reads one file under ``reliability/``;
a harness that is added registers its section in :data:`SECTIONS` (a title,
the file, a renderer).  A section whose file is missing says so and how to
produce it.  Nothing here is measured: it renders what the files hold, and
every number is rounded here, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lab.report.markdown import table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "reliability"
OUT = ROOT / "docs" / "reliability.md"


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.0f} s"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{count:,} x {status}" for status, count in sorted(statuses.items())) or "-"


def _source(name: str, data: dict[str, Any]) -> str:
    when = data.get("finished_at", "?")
    commit = data.get("commit")
    return f"Source: `reliability/{name}` ({when}" + (f", commit {commit})." if commit else ").")


# --- fuzzing -------------------------------------------------------------------


def fuzzing(data: dict[str, Any]) -> list[str]:
    machine = data.get("machine", {})
    rows = [
        [
            f"`{t['target']}`",
            t["about"],
            _count(t["executions"]),
            _seconds(t["seconds"]),
            _count(t["executions"] / t["seconds"]) if t["seconds"] else "-",
            _count(t["coverage_edges"]),
            _count(t["features"]),
            _count(t["corpus_units"]),
            _count(t["crashes"]),
        ]
        for t in data["targets"]
    ]
    total = data["total"]
    regressions = sorted(
        f"`{path.parent.name}/{path.name}`"
        for path in (ROOT / "fuzz" / "regressions").glob("*/*")
        if path.is_file()
    )
    return [
        "Coverage-guided fuzzing (atheris "
        f"{machine.get('atheris', '?')}, libFuzzer, Python {machine.get('python', '?')}) of every "
        "parser that reads network input.  A finding is any exception other than the parser's own "
        "error, or a failed property (fuzz/README.md).  Seeds: the RFC 5769 vectors, SDP fixtures, "
        "datagrams and offers captured from six real clients (fuzz/corpus/README.md) and every "
        "past finding.",
        "",
        f"Budget: {data['budget']}; {total['targets']} targets, {_count(total['executions'])} "
        f"executions, **{total['crashes']} crashes**, {_seconds(total['seconds'])} of fuzzing "
        f"on {machine.get('cpus', '?')} cores shared with other work (executions per second "
        "are not comparable between targets or runs).",
        "",
        table(
            (
                "target",
                "what it feeds",
                "executions",
                "time",
                "per second",
                "edges",
                "features",
                "corpus",
                "crashes",
            ),
            rows,
        ),
        "",
        *_below_target(data["targets"]),
        "**Fixed** (each input is a regression seed, replayed by `tests/fuzz`; what and where "
        "in fuzz/regressions/README.md): " + (", ".join(regressions) or "none") + ".",
        "",
        "Reproduce: `scripts/fuzz --jobs 2 --keep-corpus --out reliability/fuzz.json` "
        "(`scripts/fuzz --short` is the 30 s version CI runs).",
    ]


def _below_target(targets: list[dict[str, Any]]) -> list[str]:
    short = [t for t in targets if t["executions"] < 1_000_000]
    if not short:
        return ["Every target ran at least 1,000,000 executions.", ""]
    parts = [
        f"`{t['target']}` ({_count(t['executions'])}"
        + (
            f", stopped by its {_seconds(t['seconds_budget'])} cap"
            if t.get("seconds_budget")
            else ""
        )
        + ")"
        for t in short
    ]
    return [
        "**Below the 1,000,000-execution target**: " + ", ".join(parts) + ".  The machine's "
        "two cores were shared with other work; `scripts/fuzz TARGET --keep-corpus --merge "
        "--out reliability/fuzz.json` continues a target from the committed corpus.",
        "",
    ]


# --- replay --------------------------------------------------------------------


def replay(data: dict[str, Any]) -> list[str]:
    rows = []
    for label, entry in sorted(data["entries"].items()):
        for run in entry["runs"]:
            call = run["call"]
            rows.append(
                [
                    label,
                    "on" if run["verify_integrity"] else "off",
                    _count(run["replays_sent"]),
                    "**yes**" if run["flow_moved_to_attacker"] else "no",
                    _count(run["attacker_received"]),
                    _count(run["relay_drops"].get("replayed_check", 0)),
                    "-"
                    if call["downlink_loss_ratio"] is None
                    else f"{100 * call['downlink_loss_ratio']:.0f} %",
                    _count(call["downlink_max_gap_ms"]),
                ]
            )
    notes = [
        f"`{label}`: " + (entry.get("note") or f"commit {entry.get('commit')}")
        for label, entry in sorted(data["entries"].items())
    ]
    return [
        "A real aiortc call through the real relay with `--rebind verified`.  The attacker copies "
        "the caller's newest connectivity check off the wire (a tap where the answer names the "
        "relay) and sends the same bytes from its own address.  The check is genuine, so "
        "`--verify-integrity` passes it; the media server answers it (aioice answers any check "
        "its password signed); before the fix the relay then moved the call's flow to the "
        "attacker.  The fix: each flow remembers the transaction ids of its newest checks "
        "(32 by default) with the address each came from, and a check whose id it already has "
        "from another address is dropped and counted "
        '(`rtclab_lb_drops_total{reason="replayed_check"}`).',
        "",
        table(
            (
                "entry",
                "--verify-integrity",
                "replays sent",
                "flow moved to attacker",
                "datagrams the attacker got",
                "refused as replayed",
                "caller's downlink loss",
                "caller's largest downlink gap (ms)",
            ),
            rows,
        ),
        "",
        *[f"- {note}" for note in notes],
        "",
        "What the fix does not cover, by design or by necessity:",
        "",
        "- **A check older than the remembered window** (32 checks: one to three minutes of "
        "consent checks) replayed later still moves the flow: STUN carries no freshness, and the "
        "media server answers it.  "
        "`tests/stun_lb/test_replay.py::test_what_the_fix_does_not_cover` states it.",
        "- **An attacker on the path** who drops the caller's check and forwards its copy first "
        "is a man in the middle; the first address to send a transaction id keeps it.",
        "- **`--rebind ssrc` cannot be protected this way**: it moves a flow on any RTP packet "
        "carrying a known SSRC, and RTP headers are neither secret nor authenticated at the relay "
        "(SRTP authenticates them end to end, with keys the relay does not have).  Anyone who "
        "sees one packet of a call can move it.  It is a lab policy, documented as such.",
        "- `--rebind off` (the published design) opens the attacker a flow of its own; the media "
        "server keeps sending to the address it nominated, so the call is not moved.",
        "",
        "Reproduce: `python -m lab.attacks.replay --label fixed` (tests: "
        "`tests/stun_lb/test_replay.py` in virtual time, `tests/e2e/test_replay_attack.py` "
        "end to end).",
    ]


# --- HTTP ----------------------------------------------------------------------


def api(data: dict[str, Any]) -> list[str]:
    failures = data.get("failures") or []
    return [
        f"Schemathesis {data.get('schemathesis')} against signaling's OpenAPI 3.1 document "
        "(`signaling/openapi.json`, served at `/openapi.json`) on a running stack: every check "
        f"but {', '.join(f'`{c}`' for c in data['excluded_checks'])} (a random string is a "
        "valid body to the schema and rightly refused as SDP), phases "
        + ", ".join(f"{name} ({status})" for name, status in sorted(data["phases"].items()))
        + f", {_count(data.get('max_examples'))} examples per operation, seed {data.get('seed')}.",
        "",
        table(
            ("operations", "test cases", "failures", "5xx answers", "errors", "sessions left"),
            [
                [
                    _count(data["operations_tested"]),
                    _count(data["test_cases"]),
                    _count(len(failures)),
                    _count(data["server_errors"]),
                    _count(data["errors"]),
                    _count(data["media_sessions_after"]),
                ]
            ],
        ),
        "",
        *(
            [f"- {f['code']} {f['title']}: {f['count']}" for f in failures]
            or ["Every answer matched the document; every error was its JSON shape."]
        ),
        "",
        "Reproduce: `python -m lab.attacks.api --max-examples 200` "
        "(`tests/e2e/test_api_fuzz.py` is the short run).",
    ]


def http_abuse(data: dict[str, Any]) -> list[str]:
    cases = data["cases"]
    rows = []
    for name, case in cases.items():
        if "content_length" in case:
            got = (
                f"with length: {_statuses(case['content_length']['statuses'])}; "
                f"chunked: {_statuses(case['chunked']['statuses'])}"
            )
            bad = case["content_length"]["non_json_errors"] + case["chunked"]["non_json_errors"]
        elif "statuses" in case:
            got, bad = _statuses(case["statuses"]), case["non_json_errors"]
        else:
            got, bad = "-", None
        how_many = case.get("count", case.get("connections"))
        extra = []
        if "healthz_answered_during" in case:
            extra.append(f"/healthz answered {case['healthz_answered_during']} times meanwhile")
            extra.append(f"{case['closed_by_server']} closed by the server")
        if "peak_pending_setups" in case:
            extra.append(f"peak pending setups {_count(case['peak_pending_setups'])}")
        rows.append([f"`{name}`", _count(how_many), got, _count(bad), "; ".join(extra) or "-"])
    growth = data["growth_in_second_round"]
    left = data["left_after_first_round"]
    gauge_rows = [
        [server, key, _count(data["before"][server].get(key)), _count(left[server][key]),
         _count(growth[server][key])]
        for server in growth
        for key in growth[server]
    ]  # fmt: skip
    return [
        "Slow, oversized, truncated, failed and abandoned requests with real sockets against a "
        "running stack (one media server, setup timeout "
        f"{data['setup_timeout_s']:.0f} s, at most {data['max_pending_setups']} pending setups), "
        "in two rounds.  After each round the harness waits past the setup timeout and "
        "signaling's client keep-alive, and reads the servers' own /metrics.",
        "",
        table(("case (one round)", "requests", "answers", "non-JSON errors", "notes"), rows),
        "",
        "The servers' gauges: before, what the first round left, what the second added.  What "
        "the first round leaves on the socket and task counts is signaling's keep-alive pool to "
        "the media server (the same connections on both sides, reused by the second round); a "
        "leak would grow with the second.",
        "",
        table(("server", "gauge", "before", "left after round 1", "added by round 2"), gauge_rows),
        "",
        f"Held: {'**everything returned**' if data['ok'] else '**something grew**'}; media "
        "sessions, pending setups and peer connections after: "
        + ", ".join(f"{k} {_count(v)}" for k, v in data["media_held_after"].items())
        + ".",
        "",
        "Fixed or added for this: a bound on pending setups per media server "
        "(`--max-pending-setups`, 503 `too_many_pending_setups` with Retry-After; signaling "
        "tries the next server, then answers 503 `no_backend_available`); `PUT /v1/calls/{id}` "
        "with a caller-chosen id and a record from before the forward, so a call whose forward "
        "timed out or is still on its way can be deleted; signaling choosing the media server's "
        "session id and deleting a session it gave up waiting for (a DELETE that arrives first "
        "makes the media server refuse the id); SDP a `ValueError` escaped from (a 500) is now "
        "a 400.  Found by this harness and fixed: a session closed while its answer was still "
        "being made (the setup timer on a loaded machine, a DELETE) left the UDP socket its ICE "
        "gatherer bound after the peer connection had closed (UDP sockets with no session and no "
        "peer connection, more after each round, in a run before the fix with a socket per "
        "session); it now answers 503 `closed` and "
        "closes them (`tests/webrtc_server/test_close_while_answering.py`).  Not defended: "
        "signaling and the media servers have no header or body read "
        "timeout (aiohttp's server has none), so a slow client holds one socket until it goes "
        "away; the process's file-descriptor limit bounds them, and a deployment puts a proxy "
        "with timeouts in front.",
        "",
        "Reproduce: `python -m lab.attacks.http_abuse` (`tests/e2e/test_http_abuse.py` is the "
        "short run at a tenth of the counts).",
    ]


@dataclass(frozen=True)
class Section:
    title: str
    results: str  # file name under reliability/
    render: Callable[[dict[str, Any]], list[str]]
    produce: str  # the command that writes the file


# In the order a reader meets the edge: bytes, the relay's rebind, the HTTP API.
SECTIONS = (
    Section("Fuzzing every parser that reads network input", "fuzz.json", fuzzing,
            "scripts/fuzz --jobs 2 --keep-corpus --out reliability/fuzz.json"),
    Section("Replay against `--rebind verified`", "replay.json", replay,
            "python -m lab.attacks.replay --label fixed"),
    Section("Signaling's API under schemathesis", "api.json", api,
            "python -m lab.attacks.api --max-examples 200"),
    Section("HTTP abuse: slow, oversized, truncated, failed and abandoned", "http.json",
            http_abuse, "python -m lab.attacks.http_abuse"),
)  # fmt: skip

NOT_YET = (
    "hostile datagrams against the relay while calls run (junk, forged STUN, a flood naming "
    "one real session)",
    "a soak of call churn through the relay",
)


def render(results_dir: Path = RESULTS) -> str:
    out = [
        "# Reliability: the public edge under attack",
        "",
        "Generated by `python -m lab.report.reliability` from the result files in "
        "`reliability/`; do not edit by hand.  Each section says what was tried, how much, what "
        "held, what was fixed, and the command that reproduces its figures.  Runs were on a "
        "2-core machine shared with other work.",
        "",
    ]
    for section in SECTIONS:
        out += [f"## {section.title}", ""]
        path = results_dir / section.results
        if not path.exists():
            out += [f"Not run yet: `{section.produce}` writes `reliability/{section.results}`.", ""]
            continue
        data = json.loads(path.read_text())
        out += section.render(data)
        out += ["", _source(section.results, data), ""]
    out += ["## Not measured here yet", "", *[f"- {item}" for item in NOT_YET], ""]
    return "\n".join(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=OUT,
              show_default=True)  # fmt: skip
@click.option(
    "--check", is_flag=True, help="Exit 1 if the file differs from what would be written."
)
def main(out: Path, check: bool) -> None:
    """Write docs/reliability.md from the committed result files in reliability/."""
    text = render()
    if check:
        raise SystemExit(0 if out.exists() and out.read_text() == text else 1)
    out.write_text(text)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
