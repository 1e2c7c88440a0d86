"""The operator console at ``/console``: one static page from the package (no CDN, no build step),
served beside the playground (PLAYGROUND_ENABLED).

It uses only the public API with an operator's credential: the handoff queue, claim, the live
transcript from the session stream, replies and release.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static" / "console"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def page(request: web.Request) -> web.FileResponse:
    """The operator console (PLAYGROUND_ENABLED): the handoff queue, claim, reply, release.
    ---
    summary: Operator console
    tags: [docs]
    responses:
      "200":
        description: A page for operators; it signs in with an operator key kept for the tab only.
        content:
          text/html: {schema: {type: string}}
    """
    return web.FileResponse(STATIC / "index.html", headers={
        "Content-Security-Policy": _CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def setup_console(app: web.Application) -> None:
    app.router.add_get("/console", page)
    app.router.add_static("/console/static", STATIC, name="console-static")
