"""The five email tools: their names, schemas and descriptions (from
:mod:`msev15.agent.tools.email_schemas`), each bound to the one :class:`~msev15.agent.tools.mailer.Mailer`.
"""

from __future__ import annotations

from typing import Any

from msev15.agent.tools.email_schemas import CONNECTION_DESCRIPTION, CONNECTION_SCHEMA, SENDERS
from msev15.agent.tools.mailer import Mailer
from msev15.agent.tools.registry import Tool, ToolContext
from msev15.mcpkit import capabilities as caps

__all__ = ["email_tools"]


def email_tools(mailer: Mailer) -> list[Tool]:
    """The five email tools bound to ``mailer``; none when its configuration is invalid."""
    if mailer.status == "invalid":
        return []

    async def send(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        # One implementation: each schema admits only its own fields (the registry checks them first).
        html_body = args.get("html_body")
        return await mailer.send(
            ctx, to=args["to"], subject=args["subject"],
            body=args["body"] if html_body is None else html_body,
            cc=args.get("cc"), bcc=args.get("bcc"), html=html_body is not None or bool(args.get("html")),
            text_alternative=args.get("text_body"), attachments=args.get("attachments"))

    async def test_connection(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return await mailer.test_connection()

    # Every sender does the same job; the offline assistant picks the first one whose schema fits.
    tools = [Tool(name, description, schema, send, capability=caps.EMAIL_SEND)
             for name, (description, schema) in SENDERS.items()]
    return [*tools, Tool("test_connection", CONNECTION_DESCRIPTION, CONNECTION_SCHEMA, test_connection,
                         capability=caps.EMAIL_CHECK)]
