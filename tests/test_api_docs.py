"""The served OpenAPI document and the pages that show it: the document is valid OpenAPI (as
``openapi-spec-validator`` reads it) under every AUTH_MODE, documents every route the router
has, and /docs and /redoc send the same kind of security headers as the playground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from msev15.app import create_app
from tests.conftest import make_settings

_SKIPPED = ("HEAD", "OPTIONS")


def _router_operations(app: web.Application) -> set[tuple[str, str]]:
    """(path template, method) of every route but HEAD/OPTIONS and static files."""
    found = set()
    for route in app.router.routes():
        if route.method in _SKIPPED or route.resource is None or isinstance(route.resource, web.StaticResource):
            continue
        info = route.resource.get_info()
        found.add((info.get("path") or info["formatter"], route.method.lower()))
    return found


@pytest.mark.parametrize("mode", ["none", "api_key"])
async def test_the_served_document_is_valid_openapi(aiohttp_client: Any, tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, auth_mode=mode, api_keys_db_path=str(tmp_path / "keys.db"))
    client = await aiohttp_client(await create_app(settings))
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    validate(await resp.json())  # raises OpenAPIValidationError naming the first problem


async def test_a_header_description_with_commas_stays_one_string(service: Any) -> None:
    spec = await (await (await service()).get("/openapi.json")).json()
    for path in ("/api/v1/ag-ui", "/api/v1/chat/stream"):
        header = spec["paths"][path]["post"]["responses"]["200"]["headers"]["X-Turn-ID"]
        assert set(header) == {"description", "schema"} and "," in header["description"]


async def test_every_route_of_the_router_is_documented(aiohttp_client: Any, tmp_path: Path) -> None:
    app = await create_app(make_settings(tmp_path, playground_enabled=True))
    client = await aiohttp_client(app)
    spec = await (await client.get("/openapi.json")).json()
    documented = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    routes = _router_operations(app)
    assert ("/api/v1/chat", "post") in routes and ("/", "get") in routes  # the walk sees the real router
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations with no route"


async def test_an_undocumented_route_is_caught(aiohttp_client: Any, tmp_path: Path) -> None:
    """The comparison above fails for a route whose handler has no operation docstring."""
    app = await create_app(make_settings(tmp_path))

    async def undocumented(request: web.Request) -> web.Response:
        return web.Response(text="x")

    app.router.add_get("/api/v1/undocumented", undocumented)
    client = await aiohttp_client(app)
    spec = await (await client.get("/openapi.json")).json()
    documented = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert _router_operations(app) - documented == {("/api/v1/undocumented", "get")}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_send_security_headers(service: Any, path: str) -> None:
    resp = await (await service()).get(path)
    assert resp.status == 200
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_swagger_inline_script_is_allowed_by_its_hash_only(service: Any) -> None:
    import base64
    import hashlib
    import re

    resp = await (await service()).get("/docs")
    scripts = re.findall(r"<script>(.*?)</script>", await resp.text(), re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in resp.headers["Content-Security-Policy"]


async def test_redoc_from_another_origin_is_allowed_by_that_origin(service: Any) -> None:
    resp = await (await service(redoc_js_url="https://mirror.example.com/redoc/redoc.js")).get("/redoc")
    script_src = next(part for part in resp.headers["Content-Security-Policy"].split(";")
                      if part.strip().startswith("script-src"))
    assert script_src.split()[1:] == ["'self'", "https://mirror.example.com"]
