"""The call page at ``GET /``: served with the right types, and self-contained.

A person opens it against `rtclab up` with no network beyond the lab, so
everything it loads (scripts, and whatever they import) must come from the
same origin: no CDN, no build step.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from tests.signaling.conftest import StartSignaling, StartStandIn

JS_TYPES = ("text/javascript", "application/javascript")
# Static and dynamic ES module imports: `import x from "./a.js"`, `import("./b.js")`.
IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")


class References(HTMLParser):
    """Every URL an HTML document makes the browser load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)
        self.module_scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "action", "poster", "data"):
            value = found.get(name)
            if value:
                self.urls.append((tag, value))
        if tag == "script" and found.get("type") == "module" and found.get("src"):
            self.module_scripts.append(str(found["src"]))


def same_origin(base: str, reference: str) -> bool:
    if reference.startswith("data:"):
        return True  # inline, nothing is fetched
    resolved = urlsplit(urljoin(base, reference))
    origin = urlsplit(base)
    return (resolved.scheme, resolved.netloc) == (origin.scheme, origin.netloc)


@pytest.fixture
async def client(signaling: StartSignaling, standin: StartStandIn) -> TestClient[Any, Any]:
    backend = await standin(1)
    return await signaling(backend.url)


async def test_root_serves_the_page_as_html(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    page = await response.text()
    for control in ('id="call"', 'id="hangup"', 'id="source"', 'id="log"', "<audio"):
        assert control in page, control


async def test_every_script_and_module_it_imports_is_served_as_javascript(
    client: TestClient[Any, Any],
) -> None:
    base = str(client.make_url("/"))
    parser = References()
    parser.feed(await (await client.get("/")).text())
    assert parser.module_scripts, "the page loads no module script"

    pending, seen = [urljoin(base, src) for src in parser.module_scripts], set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        assert same_origin(base, url), url
        response = await client.get(urlsplit(url).path)
        assert response.status == 200, url
        assert response.content_type in JS_TYPES, (url, response.content_type)
        source = await response.text()
        assert "http://" not in source and "https://" not in source, f"{url} names a host"
        pending.extend(urljoin(url, target) for target in IMPORT.findall(source))
    # app.js imports the call and the audio modules: the walk really followed imports.
    assert {urlsplit(url).path for url in seen} >= {"/static/app.js", "/static/call.js"}


async def test_the_page_references_only_its_own_origin(client: TestClient[Any, Any]) -> None:
    base = str(client.make_url("/"))
    parser = References()
    parser.feed(await (await client.get("/")).text())
    assert parser.urls
    foreign = [(tag, url) for tag, url in parser.urls if not same_origin(base, url)]
    assert foreign == []


@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/app.py", "/static/..%2Fapp.py", "/static/.hidden.js"]
)
async def test_anything_else_under_static_is_a_json_404(
    client: TestClient[Any, Any], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert set(body["error"]) == {"code", "message"}


def test_the_reference_checker_rejects_other_hosts() -> None:
    base = "http://127.0.0.1:8080/"
    assert same_origin(base, "/static/app.js") and same_origin(base, "data:,")
    assert not same_origin(base, "https://cdn.example/x.js")
    assert not same_origin(base, "//cdn.example/x.js")
    assert IMPORT.findall('import { A } from "./a.js";\nconst b = await import("./b.js");') == [
        "./a.js",
        "./b.js",
    ]
