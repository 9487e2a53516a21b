"""wire.stun: parse, then MESSAGE-INTEGRITY and FINGERPRINT over what parsed."""

from __future__ import annotations

from fuzz.target import Target
from wire import stun

_KEY = b"VOkJxbRl1RmTxUk/WvJxBt"  # RFC 5769's password: the vectors' integrity verifies


def one_input(data: bytes) -> None:
    header_tid = stun.request_transaction_id(data)
    message = stun.parse(data)
    assert (header_tid is not None) == message.is_request
    assert isinstance(stun.check_fingerprint(message, data), bool)
    assert isinstance(stun.check_integrity(message, data, _KEY), bool)
    assert message.username is None or isinstance(message.username, str)


TARGET = Target(
    name="stun",
    about="STUN parse (RFC 8489), integrity and fingerprint checks, header-only request id",
    one_input=one_input,
    expected=(stun.StunError,),
    seed_dirs=("tests/data/stun", "fuzz/corpus/stun"),
)
