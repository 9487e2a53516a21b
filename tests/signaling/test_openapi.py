"""signaling/openapi.json against the running app: served as committed, every route
documented and nothing documented that is not a route, and real answers
validate against the schemas it states."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient

from signaling.app import OPENAPI
from tests.signaling.conftest import StartSignaling, StartStandIn

SPEC: dict[str, Any] = json.loads(OPENAPI.read_text())
SDP = {"Content-Type": "application/sdp"}
# The browser page and its scripts are not part of the API.
NOT_API = {"/", "/static/{name}"}
# Routed only to answer 405 not_supported with a reason (the document says so).
NOT_SUPPORTED = {"patch"}


def schema_of(path: str, method: str, status: int) -> dict[str, Any]:
    response = SPEC["paths"][path][method]["responses"][str(status)]
    media = next(iter(response["content"].values()))
    return {**media["schema"], "components": SPEC["components"]}


def check(body: Any, path: str, method: str, status: int) -> None:
    # The schema carries the document's components, so its $refs resolve.
    jsonschema.validate(body, schema_of(path, method, status))


def test_the_document_is_openapi_3_1_with_an_operation_id_everywhere() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    ids = [
        op["operationId"]
        for item in SPEC["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "responses" in op
    ]
    assert len(ids) == len(set(ids))
    for item in SPEC["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    media = response["content"]["application/json"]["schema"]
                    assert media == {"$ref": "#/components/schemas/Error"}, (method, status)


async def test_served_as_committed_and_it_names_exactly_the_routes(
    signaling: StartSignaling, standin: StartStandIn
) -> None:
    backend = await standin(1)
    client: TestClient[Any, Any] = await signaling(backend.url)
    response = await client.get("/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == SPEC

    routed: set[tuple[str, str]] = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        skipped = route.method in ("*", "HEAD") or route.method.lower() in NOT_SUPPORTED
        if path in NOT_API or skipped:
            continue
        routed.add((path, route.method.lower()))
    documented = {
        (path, method)
        for path, item in SPEC["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routed == documented


async def test_real_answers_validate_against_the_document(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client: TestClient[Any, Any] = await signaling(backend.url)
    created = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    assert created.status == 201
    pattern = SPEC["paths"]["/v1/calls"]["post"]["responses"]["201"]["headers"]["Location"]
    assert re.fullmatch(pattern["schema"]["pattern"][1:-1], created.headers["Location"])

    call = await (await client.get(created.headers["Location"])).json()
    check(call, "/v1/calls/{call_id}", "get", 200)
    check(await (await client.get("/v1/backends")).json(), "/v1/backends", "get", 200)
    check(await (await client.get("/healthz")).json(), "/healthz", "get", 200)
    missing = await client.get("/v1/calls/nope")
    check(await missing.json(), "/v1/calls/{call_id}", "get", 404)
    bad = await client.post("/v1/calls", data="not sdp", headers=SDP)
    check(await bad.json(), "/v1/calls", "post", 400)
