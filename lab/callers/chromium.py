"""Headless Chromium on signaling's call page: a WebRTC client nobody here wrote.

The driver starts Debian's Chromium with Playwright (pointed at the system
binary: Playwright never downloads a browser here), opens the page at the
offer URL's origin, chooses the test tone and presses Call, exactly as a
person would.  The page measures the call itself (its own timestamps, getStats,
WebAudio analysers) and exposes the numbers as ``window.rtclab.snapshot()``;
:func:`lab.callers.page.result.call_result` turns a snapshot and the server's
session JSON into the call result of DESIGN.md (``schema: 1``).

One browser per call: every call gets its own profile, audio service and UDP
sockets, as a real user's browser does, a crash or hang stays inside one
call, and cleanup is "close that browser".  It costs ~1 s of start-up before
the offer (not part of any setup time) and a few hundred MB per concurrent
call, fine for the handful of calls a scenario makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lab.callers.page.result import call_result, failed_result
from lab.callers.record import session_from_body

log = logging.getLogger("rtclab.caller")

BINARY_NAMES = ("chromium", "chromium-browser")
# Headless Chromium that makes WebRTC calls on loopback and nothing else: fake
# capture devices with permission prompts answered, no GPU, no sandbox (it runs
# as root in CI containers), no background traffic, no QUIC, and loopback ICE
# candidates (without them, in a network namespace with only `lo`, it has none).
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-quic",
)


@dataclass(frozen=True, slots=True)
class ChromiumOptions:
    # Talk time once connected; setup time comes on top.
    seconds: float = 8.0
    # From the click to DTLS connected: loopback takes ~100 ms, a delayed path seconds.
    setup_timeout_s: float = 10.0
    # Chromium plus Playwright's driver start in ~1 s; a loaded 2-core CI box is slower.
    launch_timeout_s: float = 30.0
    # The driver's own GET of the server's session.
    http_timeout_s: float = 10.0
    # How often the driver looks at the page while waiting; the page samples on its own.
    poll_s: float = 0.1
    headless: bool = True


@dataclass
class _Outcome:
    """What one driven call left behind, filled in as far as it got."""

    snapshot: dict[str, Any] | None = None  # the page's last rtclab.snapshot()
    server: dict[str, Any] | None = None  # the media session, read before hang-up
    end_ms: float | None = None  # when talking stopped, ms since the POST
    error: str | None = None
    version: str | None = None


class CallFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def find_binary() -> str | None:
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def page_url(offer_url: str) -> str:
    """The call page for ``offer_url``: its origin's ``/``, naming the offer path if unusual."""
    parts = urlsplit(offer_url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    path = parts.path or "/v1/calls"
    return origin if path == "/v1/calls" else f"{origin}?offer={path}"


class ChromiumCall:
    """One call from its own headless Chromium; :meth:`run` it once."""

    def __init__(self, offer_url: str, options: ChromiumOptions | None = None) -> None:
        self.offer_url = offer_url
        self.options = options or ChromiumOptions()
        self.connected = asyncio.Event()  # set once the page reports DTLS connected
        self._stop = asyncio.Event()
        self._ran = False

    def stop(self) -> None:
        """End the call now (it still reads its stats and hangs up)."""
        self._stop.set()

    async def run(self) -> dict[str, Any]:
        assert not self._ran, "a ChromiumCall runs once"
        self._ran = True
        binary = find_binary()
        if binary is None:
            return failed_result("unavailable: no chromium binary on PATH")
        from playwright.async_api import async_playwright

        outcome = _Outcome()
        try:
            with tempfile.TemporaryDirectory(
                prefix="rtclab-chromium-", ignore_cleanup_errors=True
            ) as profile:
                async with async_playwright() as playwright:
                    context = await asyncio.wait_for(
                        playwright.chromium.launch_persistent_context(
                            profile,
                            executable_path=binary,
                            headless=self.options.headless,
                            args=list(FLAGS),
                        ),
                        self.options.launch_timeout_s,
                    )
                    try:
                        outcome.version = context.browser.version if context.browser else None
                        await self._drive(context, outcome)
                    finally:  # also on cancellation
                        with contextlib.suppress(Exception):
                            await context.close()
        except _browser_errors(OSError) as exc:
            outcome.error = outcome.error or f"browser: {type(exc).__name__}: {exc}"
        if outcome.error is not None:
            log.info("chromium call failed", extra={"error": outcome.error})
        if outcome.snapshot is None:
            return failed_result(outcome.error or "browser: the page never started a call")
        result = call_result(
            outcome.snapshot, outcome.server, end_ms=outcome.end_ms, error=outcome.error
        )
        result["client"] = {"name": "chromium", "version": outcome.version}
        return result

    async def _drive(self, context: Any, outcome: _Outcome) -> None:
        """Press Call with the test tone, talk, hang up; what happened goes into ``outcome``."""
        page = context.pages[0] if context.pages else await context.new_page()
        try:
            await page.goto(page_url(self.offer_url))
            await page.wait_for_function("window.rtclab !== undefined")
            await page.select_option("#source", "tone")
            await page.click("#call")
            await self._wait_connected(page)
            self.connected.set()
            await self._talk(page)
        except CallFailed as exc:
            outcome.error = str(exc)
        except _browser_errors() as exc:
            outcome.error = f"browser: {type(exc).__name__}: {exc}"
        finally:  # also on cancellation: the call is hung up, not left to time out
            with contextlib.suppress(Exception):
                await self._hang_up(page, outcome)

    async def _hang_up(self, page: Any, outcome: _Outcome) -> None:
        """Read the server's view while the call is live, then press Hang up."""
        before = await _snapshot(page)
        if before is None:
            return
        outcome.snapshot = before
        outcome.end_ms = before.get("now_ms")
        if before.get("location"):
            outcome.server = await _fetch_session(before["location"], self.options.http_timeout_s)
        after = await asyncio.wait_for(
            page.evaluate("rtclab.hangUp().then(() => rtclab.snapshot())"),
            self.options.http_timeout_s,
        )
        if isinstance(after, dict):
            outcome.snapshot = after

    async def _wait_connected(self, page: Any) -> None:
        deadline = time.monotonic() + self.options.setup_timeout_s
        while time.monotonic() < deadline:
            state = await _snapshot(page)
            if state is not None:
                if state.get("error"):
                    raise CallFailed(*_split_error(state["error"]))
                if "dtls_connected" in state["phases"]:
                    return
            await asyncio.sleep(self.options.poll_s)
        raise CallFailed(
            "setup_timeout", f"not connected {self.options.setup_timeout_s:g} s after Call"
        )

    async def _talk(self, page: Any) -> None:
        started = time.monotonic()
        while time.monotonic() - started < self.options.seconds and not self._stop.is_set():
            state = await _snapshot(page)
            if state is not None and state.get("connection") in ("failed", "closed"):
                raise CallFailed(
                    "connection_lost",
                    f"connection {state['connection']} after "
                    f"{time.monotonic() - started:.1f} s of talk",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.options.poll_s)


def _browser_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What a browser that crashed, hung or refused raises (TimeoutError: our own limits)."""
    # Imported late, like playwright itself: a machine without it can still list drivers.
    from playwright.async_api import Error

    return (Error, TimeoutError, *more)


async def _snapshot(page: Any) -> dict[str, Any] | None:
    found = await page.evaluate("rtclab.snapshot()")
    return found if isinstance(found, dict) else None


async def _fetch_session(location: str, timeout_s: float) -> dict[str, Any] | None:
    """The server's view of the call (signaling's call record holds it under ``session``)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(location) as response:
            if response.status != 200:
                return None
            return session_from_body(await response.json())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


def _split_error(text: str) -> tuple[str, str]:
    code, _, message = text.partition(": ")
    return (code, message) if message else ("call_failed", text)


class ChromiumDriver:
    """Headless Chromium as a :class:`lab.callers.drivers.ClientDriver`."""

    name = "chromium"
    direction = "sendrecv"

    def unavailable(self) -> str | None:
        if find_binary() is None:
            return "no Chromium binary (Debian: apt-get install chromium)"
        if importlib.util.find_spec("playwright") is None:
            return "the Python package playwright is not installed (pip install playwright)"
        return None

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        return await ChromiumCall(offer_url, ChromiumOptions(seconds=seconds)).run()


DRIVER = ChromiumDriver()
