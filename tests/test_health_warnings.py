"""One wording of what is degraded, for the readiness body and for the start-up banner."""

from __future__ import annotations

from msev15.agent.mcp_client import McpConnection
from msev15.agent.tools.mailer import Mailer
from msev15.config import Settings
from msev15.handlers.health_monitor import readiness_warnings

MCP_URL, ESCALATION_URL = "http://127.0.0.1:9/mcp", "http://127.0.0.1:9/escalation"
RETRYING = "; continuing without its tools and reconnecting in the background"


async def test_readiness_and_the_banner_share_one_wording() -> None:
    settings = Settings.defaults(llm_provider="auto")
    mailer = Mailer(None, sender_email="", problem="SENDER_EMAIL is required with SMTP_SERVER")
    mcp = {"complaints": McpConnection("complaints", MCP_URL),
           "escalation": McpConnection("escalation", ESCALATION_URL)}
    ready = readiness_warnings(settings, model_status="not_configured", mailer=mailer, mcp=mcp)
    assert ready == [
        f"MCP server not reachable at {MCP_URL}",
        f"Escalation MCP server not reachable at {ESCALATION_URL}",
        "No language model configured: using the built-in offline assistant",
        "Email tools disabled: SENDER_EMAIL is required with SMTP_SERVER",
    ]
    at_start = readiness_warnings(settings, model_status="not_configured", mailer=mailer, mcp=mcp, at_start=True)
    assert at_start == [ready[0] + RETRYING, ready[1] + RETRYING, *ready[2:]]


async def test_nothing_degraded_means_no_warnings(tmp_path) -> None:
    settings = Settings.defaults(llm_provider="openai", openai_base_url="http://127.0.0.1:9/v1")
    mailer = Mailer.from_settings(settings.replace(email_outbox_dir=str(tmp_path)))
    assert readiness_warnings(settings, model_status="healthy", mailer=mailer, mcp={}) == []
    assert readiness_warnings(settings, model_status="unreachable", mailer=mailer, mcp={},
                              model_endpoint="http://127.0.0.1:9/v1") == [
        "Language model endpoint (openai) at http://127.0.0.1:9/v1 is not reachable: check OPENAI_BASE_URL"]


async def test_an_unavailable_session_store_is_named(tmp_path) -> None:
    settings = Settings.defaults(llm_provider="offline", session_store="sqlite")
    mailer = Mailer.from_settings(settings.replace(email_outbox_dir=str(tmp_path)))
    assert readiness_warnings(settings, model_status="offline", mailer=mailer, mcp={},
                              session_store="unavailable") == [
        "Session store (sqlite) is unavailable: new answers cannot be saved"]
    assert readiness_warnings(settings, model_status="offline", mailer=mailer, mcp={}, session_store="healthy") == []
