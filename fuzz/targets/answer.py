"""webrtc_server.core.answer: the media server's offer preparation and answer edits."""

from __future__ import annotations

from fuzz.target import SDP_DIRS, Target
from webrtc_server.core import answer
from wire.sdp import SdpError


def one_input(data: bytes) -> None:
    prepared = answer.prepare_offer(data.decode("utf-8", errors="replace"))
    assert not [line for line in prepared.sdp.splitlines() if line.startswith("a=candidate:")]
    # The offer again in the answer's place: the edits must hold on any parseable text.
    local = answer.local_answer(prepared.sdp, prepared.setup)
    answer.wire_answer(local, ("192.0.2.1", 3478), prepared.setup)


TARGET = Target(
    name="answer",
    about="the media server's offer checks and candidate strip, and its answer edits",
    one_input=one_input,
    expected=(SdpError,),
    seed_dirs=SDP_DIRS,
    instrument=("wire", "webrtc_server.core"),
)
