"""Call records and their bounded table."""

from __future__ import annotations

from signaling.calls import CallRecord, CallTable, new_call_id


def record(call_id: str) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        backend_id=2,
        media_url="http://127.0.0.1:8102",
        session_path="/sessions/s1",
        created_unix_s=1_700_000_000.25,
    )


def test_call_ids_are_distinct_and_url_safe() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("call_") and i[5:].isalnum() for i in ids)


def test_record_json_and_session_url() -> None:
    call = record("call_a")
    assert call.session_url == "http://127.0.0.1:8102/sessions/s1"
    assert call.to_json() == {
        "call_id": "call_a",
        "state": "placed",
        "backend": 2,
        "media_url": "http://127.0.0.1:8102",
        "session_path": "/sessions/s1",
        "created": "2023-11-14T22:13:20.250Z",
    }


def test_table_forgets_the_oldest_past_its_bound() -> None:
    table = CallTable(max_calls=2)
    assert table.add(record("a")) is None
    assert table.add(record("b")) is None
    forgotten = table.add(record("c"))
    assert forgotten is not None and forgotten.call_id == "a"
    assert table.get("a") is None and table.get("c") is not None
    assert len(table) == 2


def test_remove() -> None:
    table = CallTable(max_calls=10)
    table.add(record("a"))
    assert table.remove("a") is not None
    assert table.remove("a") is None
    assert len(table) == 0
