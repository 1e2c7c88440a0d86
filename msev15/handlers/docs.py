"""/openapi.json (built once at start-up by handlers/openapi_spec.py); /docs (Swagger UI) and /redoc.

Swagger UI's assets ship in the ``swagger-ui-bundle`` package and ReDoc's standalone bundle is
vendored under ``handlers/static/redoc`` (with its licence), so both work with no internet;
REDOC_JS_URL points /redoc at another copy instead.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from msev15.config import SETTINGS
from msev15.handlers.openapi_spec import build_spec

SPEC_KEY = web.AppKey("msev15.openapi", dict)
REDOC_DIR = Path(__file__).parent / "static" / "redoc"
REDOC_BUNDLED = "/redoc/static/redoc.standalone.js"


async def openapi(request: web.Request) -> web.Response:
    """This document.
    ---
    summary: OpenAPI document
    tags: [docs]
    responses:
      "200":
        description: The OpenAPI 3.0 document of this service, as configured (AUTH_MODE, MAX_MESSAGE_CHARS).
        content:
          application/json: {schema: {type: object}}
    """
    return web.json_response(request.app[SPEC_KEY])


async def _build_on_startup(app: web.Application) -> None:
    # Every route exists by now (CORS included); the spec is built once.
    app[SPEC_KEY] = build_spec(app.router.routes(), app[SETTINGS])


# No validator badge: Swagger UI would fetch it from a public host; the docs work offline.
_SWAGGER_INIT = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null});'
_SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSEv15E2E API — Swagger UI</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>""" + _SWAGGER_INIT + """</script>
</body></html>"""

_REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSEv15E2E API — ReDoc</title></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="{src}"></script></body></html>"""


def _sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def _headers(script_src: str) -> dict[str, str]:
    """The pages' security headers. Both renderers set inline styles at run time (Swagger UI's
    attributes, ReDoc's styled-components), hence ``'unsafe-inline'`` for styles only; scripts
    come from this service (or REDOC_JS_URL's origin) and, for Swagger, the one inline start-up
    script by its hash. ReDoc parses the document in a worker made from a blob: URL."""
    csp = (f"default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'")
    return {"Content-Security-Policy": csp, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


_SWAGGER_HEADERS = _headers("'self' " + _sha256(_SWAGGER_INIT))


def _redoc_script_src(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"'self' {parts.scheme}://{parts.netloc}"
    return "'self'"


async def swagger(request: web.Request) -> web.Response:
    """Swagger UI over /openapi.json (no network needed).
    ---
    summary: API documentation (Swagger UI)
    tags: [docs]
    responses:
      "200":
        description: The Swagger UI page; it loads /openapi.json.
        content:
          text/html: {schema: {type: string}}
    """
    return web.Response(text=_SWAGGER, content_type="text/html", headers=_SWAGGER_HEADERS)


async def redoc(request: web.Request) -> web.Response:
    """ReDoc over /openapi.json (the bundled copy, or REDOC_JS_URL).
    ---
    summary: API documentation (ReDoc)
    tags: [docs]
    responses:
      "200":
        description: The ReDoc page; it loads /openapi.json.
        content:
          text/html: {schema: {type: string}}
    """
    url = request.app[SETTINGS].redoc_js_url or REDOC_BUNDLED
    return web.Response(text=_REDOC.replace("{src}", html.escape(url, quote=True)), content_type="text/html",
                        headers=_headers(_redoc_script_src(url)))


def setup_docs(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", swagger)
    app.router.add_get("/redoc", redoc)
    app.router.add_static("/docs/static", swagger_ui_path, name="swagger-static")
    app.router.add_static("/redoc/static", REDOC_DIR, name="redoc-static")
    app.on_startup.append(_build_on_startup)
