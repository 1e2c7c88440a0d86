"""HTTP handlers, middlewares and routes."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from msev15.config import Settings
from msev15.handlers import agui, aisdk, chat, health, metrics, sessions, turns
from msev15.handlers.docs import setup_docs
from msev15.handlers.playground import setup_playground
from msev15.keys import SETTINGS


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health.health)
    app.router.add_get("/health/liveness", health.liveness)
    app.router.add_get("/health/readiness", health.readiness)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_post("/api/v1/chat", chat.chat)
    app.router.add_post("/api/v1/chat/stream", chat.chat_stream)
    app.router.add_get("/api/v1/sessions", sessions.list_sessions)
    app.router.add_get("/api/v1/sessions/{session_id}/history", sessions.history)
    app.router.add_delete("/api/v1/sessions/{session_id}", sessions.delete_session)
    app.router.add_post("/api/v1/sessions/{session_id}/cancel", turns.cancel_session)
    app.router.add_get("/api/v1/sessions/{session_id}/turns/{turn_id}", turns.turn_status)
    app.router.add_get("/api/v1/sessions/{session_id}/turns/{turn_id}/events", turns.turn_events)
    app.router.add_post("/api/v1/sessions/{session_id}/turns/{turn_id}/cancel", turns.cancel_turn)
    app.router.add_post("/api/v1/ag-ui", agui.ag_ui)
    app.router.add_post("/api/v1/ai-sdk/chat", aisdk.chat)
    app.router.add_get("/api/v1/ai-sdk/chat/{id}/stream", aisdk.resume)
    setup_docs(app)
    if app[SETTINGS].playground_enabled:
        setup_playground(app)


_EXPOSED = ("X-Request-ID", "X-Turn-ID", "X-Tenant-ID", "x-vercel-ai-ui-message-stream", "Retry-After",
            "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "WWW-Authenticate")


def _cors_options(credentials: bool) -> aiohttp_cors.ResourceOptions:
    # aiohttp-cors ships py.typed but leaves ResourceOptions.__new__ unannotated.
    return aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=credentials,
        expose_headers=_EXPOSED,  # listed, not "*": with credentials browsers take "*" literally
        allow_headers="*",
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
    )


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Call after every route is added: aiohttp-cors wraps the routes that exist then.

    Credentials (cookies, Authorization sent by the browser) are allowed only for origins listed
    explicitly. ``*`` answers ``Access-Control-Allow-Origin: *`` without credentials: aiohttp-cors
    would reflect the caller's origin, which with credentials lets any site act as the user.
    """
    if not settings.enable_cors:
        return
    listed = frozenset(o for o in settings.cors_origins if o != "*")
    defaults = {origin: _cors_options(credentials=True) for origin in listed}
    if "*" in settings.cors_origins:
        defaults["*"] = _cors_options(credentials=False)
    cors = aiohttp_cors.setup(app, defaults=defaults)
    for route in list(app.router.routes()):
        if route.method != "HEAD":
            cors.add(route)
    if "*" in settings.cors_origins:

        async def any_origin(request: web.Request, response: web.StreamResponse) -> None:
            # After aiohttp-cors' own hook (registered by setup() above): an unlisted origin gets "*".
            if response.headers.get("Access-Control-Allow-Origin") not in (None, "*", *listed):
                response.headers["Access-Control-Allow-Origin"] = "*"
                response.headers.pop("Access-Control-Allow-Credentials", None)

        app.on_response_prepare.append(any_origin)
