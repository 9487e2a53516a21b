"""Small, pure edits and checks on SDP text (RFC 8866, RFC 8839).

Not a general SDP library: just what the call path needs, each edit a pure
function from text to text so signaling, the media server and tests agree on
one meaning.  Line endings are normalised to CRLF, as RFC 8866 requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CRLF = "\r\n"


class SdpError(ValueError):
    """SDP that cannot be used; ``code`` names why (``malformed``, ``no_audio``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str  # "audio", "video", "application"
    port: int
    proto: str
    formats: tuple[str, ...]
    attributes: tuple[str, ...] = field(default=())  # "a=" lines without the "a="

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` (or ``""`` for a flag), else None."""
        for line in self.attributes:
            key, sep, value = line.partition(":")
            if key == name:
                return value if sep else ""
        return None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    session_attributes: tuple[str, ...]
    media: tuple[MediaSection, ...]

    def attribute(self, name: str) -> str | None:
        """Session-level attribute value, else the first media section's."""
        for line in self.session_attributes:
            key, sep, value = line.partition(":")
            if key == name:
                return value if sep else ""
        for section in self.media:
            found = section.attribute(name)
            if found is not None:
                return found
        return None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(section.kind for section in self.media)


def _lines(sdp: str) -> list[str]:
    # Every line boundary Python knows (\r, \x1c, \u2028... as well as \n), because
    # aiortc reads offers with str.splitlines(): an edit that saw "a=x\x1ca=candidate:..."
    # as one line would leave a candidate aiortc then reads, and the media server
    # would check that address directly, bypassing the relay.
    return [line for line in sdp.splitlines() if line]


def _join(lines: list[str]) -> str:
    return CRLF.join(lines) + CRLF


def parse(sdp: str) -> SessionDescription:
    """Structural parse; raise :class:`SdpError` (code ``malformed``) if it is not SDP."""
    lines = _lines(sdp)
    if not lines:
        raise SdpError("malformed", "empty SDP")
    if lines[0] != "v=0":
        raise SdpError("malformed", "SDP must start with 'v=0'")
    session_attrs: list[str] = []
    media: list[MediaSection] = []
    current: dict[str, object] | None = None
    attrs: list[str] = []

    def close() -> None:
        if current is not None:
            media.append(MediaSection(attributes=tuple(attrs), **current))  # type: ignore[arg-type]

    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError("malformed", f"line {number} is not '<type>=<value>': {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            close()
            parts = value.split()
            port = parts[1].split("/")[0] if len(parts) >= 4 else ""
            # ASCII digits only (str.isdigit() takes "²", which int() refuses), and a port.
            if not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 0xFFFF):
                raise SdpError("malformed", f"line {number}: bad media line {line[:60]!r}")
            current = {
                "kind": parts[0],
                "port": int(port),
                "proto": parts[2],
                "formats": tuple(parts[3:]),
            }
            attrs = []
        elif kind == "a":
            (attrs if current is not None else session_attrs).append(value)
    close()
    return SessionDescription(session_attributes=tuple(session_attrs), media=tuple(media))


def validate_offer(sdp: str) -> SessionDescription:
    """An offer this lab can answer: parseable, with an audio section and ICE credentials."""
    description = parse(sdp)
    if not description.media:
        raise SdpError("malformed", "the offer has no media sections")
    if "audio" not in description.kinds:
        raise SdpError("no_audio", "the offer has no audio section")
    if description.attribute("ice-ufrag") is None or description.attribute("ice-pwd") is None:
        raise SdpError("malformed", "the offer has no ICE credentials (a=ice-ufrag/a=ice-pwd)")
    if description.attribute("fingerprint") is None:
        raise SdpError("malformed", "the offer has no DTLS fingerprint")
    return description


def strip_candidates(sdp: str) -> str:
    """Remove every ``a=candidate`` and ``a=end-of-candidates``.

    The media server must learn the client only through the relay: a candidate
    left in the offer lets it check the client directly and bypass the relay.
    """
    return _join(
        [
            line
            for line in _lines(sdp)
            if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
        ]
    )


def set_single_candidate(sdp: str, host: str, port: int) -> str:
    """Advertise exactly one host candidate ``host:port`` in every media section.

    Also points ``c=`` and each ``m=`` port at it, so clients that read those
    (some do before ICE completes) see the same address.
    """
    ip_version = "IP6" if ":" in host else "IP4"
    candidate = f"a=candidate:1 1 udp 2130706431 {host} {port} typ host"
    out: list[str] = []
    in_media = False
    for line in _lines(sdp):
        if line.startswith("a=candidate:") or line == "a=end-of-candidates":
            continue
        if line.startswith("m="):
            if in_media:
                out += [candidate, "a=end-of-candidates"]
            in_media = True
            parts = line.split(" ")
            if len(parts) > 1 and parts[1] != "0":  # port 0: a rejected section, left so
                parts[1] = str(port)
            line = " ".join(parts)
        elif line.startswith("c=") and in_media:
            line = f"c=IN {ip_version} {host}"
        out.append(line)
    if in_media:
        out += [candidate, "a=end-of-candidates"]
    return _join(out)


def offer_setup(sdp: str) -> str | None:
    """The offer's DTLS role attribute value (``actpass``, ``active``, ``passive``)."""
    return parse(sdp).attribute("setup")


def answer_setup(answer: str, offer_role: str | None) -> str:
    """Answer ``a=setup:passive`` when the offer says ``actpass``.

    aiortc answers ``active``; some clients (FFmpeg WHIP, several WHIP/WHEP
    stacks) expect the server to stay DTLS server.  Passive is always a valid
    answer to actpass (RFC 5763 section 5).
    """
    if offer_role != "actpass":
        return _join(_lines(answer))
    return _join(
        ["a=setup:passive" if line.startswith("a=setup:") else line for line in _lines(answer)]
    )


def only_sha256_fingerprints(sdp: str) -> str:
    """Keep only ``a=fingerprint:sha-256`` lines.

    aiortc lists sha-256, sha-384 and sha-512; some clients reject a hash they
    do not know instead of skipping it.
    """
    return _join(
        [
            line
            for line in _lines(sdp)
            if not line.startswith("a=fingerprint:") or line.startswith("a=fingerprint:sha-256 ")
        ]
    )


def ice_credentials(sdp: str) -> tuple[str, str]:
    """``(ufrag, pwd)`` of a description; raise SdpError if missing."""
    description = parse(sdp)
    ufrag, pwd = description.attribute("ice-ufrag"), description.attribute("ice-pwd")
    if not ufrag or not pwd:
        raise SdpError("malformed", "no ICE credentials")
    return ufrag, pwd
