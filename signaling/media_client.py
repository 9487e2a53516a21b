"""The media servers' internal HTTP API, as signaling calls it.

Every method turns network trouble into a value (a failure with a reason),
never an exception, so the handlers and the poller decide what it means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from signaling.core.forwarding import FailureReason, Verdict, classify
from signaling.core.health import HealthReport
from signaling.core.offer import SDP_CONTENT_TYPE

# The session id signaling chose (webrtc_server/app.py reads the same header).
SESSION_ID_HEADER = "X-Rtclab-Session-Id"


@dataclass(frozen=True, slots=True)
class Created:
    answer: str
    session_path: str  # the backend's Location, resolved to a path on it


@dataclass(frozen=True, slots=True)
class Rejected:
    """The backend refused the offer itself; the caller gets this response as is."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Failed:
    reason: FailureReason
    detail: str
    # The backend is certainly not serving (connection refused or dropped),
    # as opposed to slow or answering errors.
    conclusive: bool = False


@dataclass(frozen=True, slots=True)
class SessionLookup:
    """The backend's live session JSON, or a code and message saying why there is none."""

    session: Any | None
    error_code: str | None = None  # ended, unreachable, timeout, bad_response
    error_message: str | None = None


def _failure(exc: Exception) -> Failed:
    if isinstance(exc, TimeoutError):
        return Failed(FailureReason.TIMEOUT, "timed out")
    conclusive = isinstance(exc, aiohttp.ClientConnectionError)
    return Failed(FailureReason.UNREACHABLE, f"{type(exc).__name__}: {exc}", conclusive)


def session_path(base_url: str, location: str) -> str | None:
    """The path ``location`` names on the backend at ``base_url``; None if elsewhere."""
    base = URL(base_url)
    target = base.join(URL(location))
    if target.origin() != base.origin() or not target.path.startswith("/"):
        return None
    return target.raw_path


class MediaClient:
    """One HTTP connection pool to every media server, opened and closed with the app."""

    def __init__(self, *, forward_timeout_s: float, health_timeout_s: float) -> None:
        self._forward_timeout = aiohttp.ClientTimeout(total=forward_timeout_s)
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No proxies from the environment: media servers are internal addresses.
        self._http = aiohttp.ClientSession(trust_env=False)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "MediaClient used before start()"
        return self._http

    async def create_session(
        self, base_url: str, offer: str, session_id: str | None = None
    ) -> Created | Rejected | Failed:
        """``POST /sessions``: forward the offer, classify the answer.

        ``session_id`` asks the media server to give the session that id, so
        it can be deleted even if this request never returns.
        """
        headers = {"Content-Type": SDP_CONTENT_TYPE}
        if session_id is not None:
            headers[SESSION_ID_HEADER] = session_id
        try:
            async with self.http.post(
                f"{base_url}/sessions",
                data=offer.encode(),
                headers=headers,
                timeout=self._forward_timeout,
            ) as response:
                body = await response.read()
                location = response.headers.get("Location")
                outcome = classify(response.status, has_location=location is not None)
                if outcome.verdict is Verdict.REJECTED_OFFER:
                    return Rejected(response.status, body, response.content_type)
                if outcome.verdict is Verdict.TRY_NEXT:
                    assert outcome.reason is not None
                    detail = f"HTTP {response.status}: {body[:200].decode(errors='replace')}"
                    return Failed(outcome.reason, detail)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _failure(exc)
        assert location is not None
        path = session_path(base_url, location)
        if path is None:
            return Failed(FailureReason.BAD_RESPONSE, f"Location {location!r} is not on it")
        try:
            return Created(body.decode("utf-8"), path)
        except UnicodeDecodeError:
            return Failed(FailureReason.BAD_RESPONSE, "the answer is not UTF-8 text")

    async def get_session(self, session_url: str) -> SessionLookup:
        """``GET /sessions/{id}``: the live session JSON, or why there is none."""
        try:
            async with self.http.get(session_url, timeout=self._forward_timeout) as response:
                if response.status == 404:
                    return SessionLookup(None, "ended", "the media server no longer has it")
                if response.status != 200:
                    return SessionLookup(None, "bad_response", f"HTTP {response.status}")
                return SessionLookup(await response.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _failure(exc)
            return SessionLookup(None, failure.reason.value, failure.detail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return SessionLookup(None, "bad_response", "the session is not JSON")

    async def delete_session(self, session_url: str, *, quick: bool = False) -> int | Failed:
        """``DELETE /sessions/{id}``: the backend's status, or why it was not reached.

        ``quick`` waits only the health timeout: cleaning up after a backend
        that already failed to answer must not make the caller wait twice.
        """
        timeout = self._health_timeout if quick else self._forward_timeout
        try:
            async with self.http.delete(session_url, timeout=timeout) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _failure(exc)

    async def healthz(self, base_url: str) -> HealthReport | Failed:
        """``GET /healthz``, checked field by field."""
        try:
            async with self.http.get(
                f"{base_url}/healthz", timeout=self._health_timeout
            ) as response:
                if response.status != 200:
                    return Failed(FailureReason.BAD_RESPONSE, f"/healthz HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _failure(exc)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return Failed(FailureReason.BAD_RESPONSE, "/healthz body is not JSON")
        return parse_health(body)


def parse_health(body: Any) -> HealthReport | Failed:
    """A media server's /healthz JSON as a report, or what is wrong with it."""
    if not isinstance(body, dict) or body.get("status") != "ok":
        return Failed(FailureReason.BAD_RESPONSE, f"/healthz status is not ok: {body!r:.200}")
    backend_id, sessions, draining = (body.get(k) for k in ("backend_id", "sessions", "draining"))
    # bool is an int subclass: a True backend_id is a bug on the other side.
    if type(backend_id) is not int or type(sessions) is not int or type(draining) is not bool:
        return Failed(
            FailureReason.BAD_RESPONSE,
            "/healthz needs integer backend_id and sessions and boolean draining",
        )
    return HealthReport(backend_id=backend_id, sessions=sessions, draining=draining)
