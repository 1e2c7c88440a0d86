"""The browser playground at ``/``: one static page from the package (no CDN, no build step).

It talks to the public REST + SSE API like any client (chat stream, sessions, cancel, resume with
``Last-Event-ID``), so it shows nothing the API does not. ``PLAYGROUND_ENABLED=false`` removes it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static" / "playground"
# The page loads only its own files and talks only to this service.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def page(request: web.Request) -> web.FileResponse:
    """The browser playground (PLAYGROUND_ENABLED).
    ---
    summary: Playground
    tags: [docs]
    responses:
      "200":
        description: A page to chat with the agent through this API.
        content:
          text/html: {schema: {type: string}}
    """
    return web.FileResponse(STATIC / "index.html", headers={
        "Content-Security-Policy": _CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def setup_playground(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_static("/playground/static", STATIC, name="playground-static")
