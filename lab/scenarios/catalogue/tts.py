"""tts-burst: speech generated faster than real time, sent at real time.

The agent generates its answer at 4x real time, but WebRTC plays audio as it
arrives, so the server must hold the rest and pace it out.  Measured: when
generation finished, when the last frame left, when the caller heard it; then
the same with a 1 s downlink blackout mid-answer, which loses that second of
the answer for good (a transport that could send ahead would only delay it).
"""

from __future__ import annotations

from typing import Any

from lab.scenarios.model import Action, Analysis, CallPlan, Finding, Run, Scenario, Step, Verdict

RESPONSE_S = 4.0
# One utterance, then a long silence, so the first answer plays undisturbed.
CALLER = {"lead_in_s": 0.5, "speech_s": 1.5, "pause_s": 30.0}
MEDIA_ARGS = ("--response-seconds", str(RESPONSE_S), "--generation-speed", "4")
# The answer starts ~2.7 s into the call (0.5 s lead-in + 1.5 s speech + 0.4 s
# hangover + 0.3 s model delay) and lasts 4 s: a blackout from 4.0 to 5.0 s is
# squarely inside it.
BLACKOUT = (4.0, 5.0)


def _runs(quick: bool) -> tuple[Run, ...]:
    plan = CallPlan(count=1, seconds=8.0 if quick else 10.0)
    common: dict[str, Any] = {
        "stack": {"media_servers": 1, "media_args": MEDIA_ARGS},
        "caller": CALLER,
    }
    return (
        Run(label="clean", calls=plan, tags={"blackout_s": 0.0}, **common),
        Run(
            label="1 s downlink blackout mid-answer",
            calls=plan,
            steps=(
                Step(BLACKOUT[0], Action.IMPAIR, {"direction": "down", "blackhole": True}),
                Step(BLACKOUT[1], Action.IMPAIR, {"direction": "down", "blackhole": False}),
            ),
            tags={"blackout_s": BLACKOUT[1] - BLACKOUT[0]},
            **common,
        ),
    )


def _first_answer(call: dict[str, Any]) -> dict[str, Any] | None:
    """Timings of the agent's first answer, and how much of it the caller heard."""
    turns = call.get("agent_turns") or []
    heard = call.get("turns") or []
    if not turns or not heard or heard[0].get("first_response_audio_ms") is None:
        return None
    agent = turns[0]
    start_ms = call["start_s"] * 1000 + heard[0]["first_response_audio_ms"]
    end_ms = start_ms + agent["audio_ms"]
    frames = [t for t in call["timeline"]["downlink_ms"] if start_ms <= t < end_ms + 100]
    expected = agent["audio_ms"] / 20
    return {
        "generation_finished_ms": agent["generation_finished_ms"],
        "first_frame_sent_ms": agent["first_frame_sent_ms"],
        "last_frame_sent_ms": agent["last_frame_sent_ms"],
        "pacing_wait_ms": agent["pacing_wait_ms"],
        "audio_ms": agent["audio_ms"],
        "frames_expected": int(expected),
        "frames_heard": len(frames),
        "heard_ratio": round(len(frames) / expected, 3) if expected else None,
        "last_frame_heard_ms": round(frames[-1] - call["start_s"] * 1000) if frames else None,
    }


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    results: dict[str, Any] = {}
    rows = []
    for run in data:
        (call,) = run["calls"]
        answer = _first_answer(call)
        results[run["label"]] = answer
        if answer is None:
            rows.append((run["label"], "-", "-", "-", "-", call.get("error") or "no answer heard"))
            continue
        rows.append(
            (
                run["label"],
                answer["generation_finished_ms"],
                answer["last_frame_sent_ms"],
                answer["last_frame_heard_ms"],
                answer["pacing_wait_ms"],
                f"{answer['frames_heard']}/{answer['frames_expected']}",
            )
        )
    clean, dark = results.get("clean"), results.get("1 s downlink blackout mid-answer")
    findings = []
    if clean:
        waited = clean["pacing_wait_ms"]
        findings.append(
            Finding(
                claim="TTS runs faster than real time but WebRTC must pace it (critique 2)",
                expected=f"a {RESPONSE_S:g} s answer at 4x is ready after ~{RESPONSE_S / 4:g} s, "
                f"yet the last frame leaves ~{RESPONSE_S:g} s after the first",
                observed=(
                    f"generation done at {clean['generation_finished_ms']} ms, last frame sent at "
                    f"{clean['last_frame_sent_ms']} ms: {waited} ms spent waiting to send"
                ),
                verdict=Verdict.CONFIRMED if waited >= 0.5 * RESPONSE_S * 1000 else Verdict.REFUTED,
                evidence=("metrics.answers.clean.pacing_wait_ms",),
            )
        )
    if dark:
        lost = dark["frames_expected"] - dark["frames_heard"]
        findings.append(
            Finding(
                claim="Audio lost in an outage is gone, even though it was generated long before",
                expected="a 1 s blackout mid-answer loses ~50 frames (1 s) of the answer",
                observed=f"{lost} of {dark['frames_expected']} frames of the answer never heard",
                verdict=Verdict.CONFIRMED if 35 <= lost <= 65 else Verdict.REFUTED,
                evidence=("metrics.answers.1 s downlink blackout mid-answer",),
            )
        )
    table = (
        "The agent's first answer (ms since the offer reached the server / the caller POSTed)",
        (
            "run",
            "generation finished",
            "last frame sent",
            "last frame heard",
            "pacing wait",
            "frames heard",
        ),
        tuple(rows),
    )
    return Analysis(metrics={"answers": results}, findings=tuple(findings), tables=(table,))


TTS_BURST = Scenario(
    name="tts-burst",
    purpose="Speech generated at 4x real time: pacing cost, and what a 1 s outage loses.",
    description=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
    runs=_runs,
    analyse=_analyse,
    parallel=True,
    plots=("arrival",),
)
