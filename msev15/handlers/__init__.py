"""HTTP handlers, middlewares and routes."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import hdrs, web

from msev15.config import SETTINGS, Settings
from msev15.handlers import (
    a2a_routes,
    agui,
    aisdk,
    chat,
    feedback,
    handoffs,
    health,
    mcp_endpoint,
    metrics,
    pending,
    profiles,
    session_stream,
    sessions,
    turns,
)
from msev15.handlers.console import setup_console
from msev15.handlers.docs import setup_docs
from msev15.handlers.playground import setup_playground


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health.health)
    app.router.add_get("/health/liveness", health.liveness)
    app.router.add_get("/health/readiness", health.readiness)
    app.router.add_get("/metrics", metrics.metrics)
    metrics.setup_token_guard(app, app[SETTINGS])
    app.router.add_post("/api/v1/chat", chat.chat)
    app.router.add_post("/api/v1/chat/stream", chat.chat_stream)
    app.router.add_get("/api/v1/sessions", sessions.list_sessions)
    app.router.add_get("/api/v1/sessions/{session_id}/history", sessions.history)
    app.router.add_delete("/api/v1/sessions/{session_id}", sessions.delete_session)
    app.router.add_post("/api/v1/sessions/{session_id}/cancel", turns.cancel_session)
    app.router.add_get("/api/v1/sessions/{session_id}/turns/{turn_id}", turns.turn_status)
    app.router.add_get("/api/v1/sessions/{session_id}/turns/{turn_id}/events", turns.turn_events)
    app.router.add_post("/api/v1/sessions/{session_id}/turns/{turn_id}/cancel", turns.cancel_turn)
    app.router.add_get("/api/v1/sessions/{session_id}/pending", pending.list_pending)
    app.router.add_post("/api/v1/sessions/{session_id}/pending/{call_id}", pending.decide)
    app.router.add_post("/api/v1/ag-ui", agui.ag_ui)
    app.router.add_post("/api/v1/ai-sdk/chat", aisdk.chat)
    app.router.add_get("/api/v1/ai-sdk/chat/{id}/stream", aisdk.resume)
    feedback.setup_routes(app)
    app.router.add_get(a2a_routes.CARD_PATH, a2a_routes.agent_card)  # public
    app.router.add_post(a2a_routes.RPC_PATH, a2a_routes.rpc)
    app.router.add_post(mcp_endpoint.MCP_PATH, mcp_endpoint.mcp)  # stateless: no GET stream, no DELETE
    handoffs.setup_routes(app)  # the operator routes (human handoff)
    profiles.setup_routes(app)  # the tenant's agent profile (admins)
    app.router.add_get("/api/v1/sessions/{session_id}/events", session_stream.session_events)
    setup_docs(app)
    if app[SETTINGS].playground_enabled:
        setup_playground(app)
        setup_console(app)  # the operator console (human handoff), beside the playground


_EXPOSED = ("X-Request-ID", "X-Turn-ID", "X-Tenant-ID", "x-vercel-ai-ui-message-stream", "Retry-After",
            "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "WWW-Authenticate", "ETag")


def _cors_options(credentials: bool) -> aiohttp_cors.ResourceOptions:
    # aiohttp-cors ships py.typed but leaves ResourceOptions.__new__ unannotated.
    return aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=credentials,
        expose_headers=_EXPOSED,  # listed, not "*": with credentials browsers take "*" literally
        allow_headers="*",
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
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
    # aiohttp-cors registered its response hook just now. It resolves the route's CORS config for
    # every response, then does nothing without an Origin header (CORS 6.1.1): ask it only when
    # the request is cross-origin, so same-origin and server-to-server calls pay nothing.
    cors_hook = app.on_response_prepare.pop()
    assert type(getattr(cors_hook, "__self__", None)).__module__.startswith("aiohttp_cors"), cors_hook
    for route in list(app.router.routes()):
        if route.method != "HEAD":
            cors.add(route)
    any_origin = "*" in settings.cors_origins

    async def cross_origin(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN not in request.headers:
            return
        await cors_hook(request, response)
        # An unlisted origin under "*" gets "*", without credentials.
        if any_origin and response.headers.get(hdrs.ACCESS_CONTROL_ALLOW_ORIGIN) not in (None, "*", *listed):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*"
            response.headers.pop(hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS, None)

    app.on_response_prepare.append(cross_origin)
