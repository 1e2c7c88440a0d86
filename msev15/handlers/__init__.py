"""HTTP handlers, middlewares and routes."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from msev15.config import Settings
from msev15.handlers import chat, health, metrics, sessions, turns
from msev15.handlers.docs import setup_docs


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
    setup_docs(app)


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Call after every route is added: aiohttp-cors wraps the routes that exist then."""
    if not settings.enable_cors:
        return
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        # Listed, not "*": with credentials browsers take "*" literally.
        expose_headers=("X-Request-ID", "X-Turn-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                        "X-RateLimit-Reset"),
        allow_headers="*",
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in settings.cors_origins})
    for route in list(app.router.routes()):
        if route.method != "HEAD":
            cors.add(route)
