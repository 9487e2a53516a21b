"""wire.sdp: the structural parse and every edit, on offer-shaped text."""

from __future__ import annotations

from fuzz.target import SDP_DIRS, Target
from wire import sdp


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    # No line aiortc would read (it splits with str.splitlines) is a candidate.
    for line in sdp.strip_candidates(text).splitlines():
        assert not line.startswith("a=candidate:") and line != "a=end-of-candidates", line
    sdp.only_sha256_fingerprints(text)
    sdp.answer_setup(text, "actpass")
    single = sdp.set_single_candidate(text, "192.0.2.1", 3478)
    candidates = [line for line in single.splitlines() if line.startswith("a=candidate:")]
    assert len(set(candidates)) <= 1
    description = sdp.parse(text)
    for section in description.media:
        section.attribute("mid")
    sdp.offer_setup(text)
    sdp.validate_offer(text)
    sdp.ice_credentials(text)


TARGET = Target(
    name="sdp",
    about="SDP parse, offer validation and the candidate/setup/fingerprint edits",
    one_input=one_input,
    expected=(sdp.SdpError,),
    seed_dirs=SDP_DIRS,
)
