"""EscalationComms: the MCP service that emails the customer and the support team for a ticket.

Run it with ``msev15 escalation-mcp`` or ``python -m msev15.escalation``; see :mod:`.cli`.
"""

from msev15.escalation.config import EscalationSettings
from msev15.escalation.server import EscalationServer, build_mcp_server
from msev15.escalation.service import EscalationService
from msev15.escalation.templates import EmailTemplate, TemplateError, TemplateRegistry

__all__ = ["EscalationSettings", "EscalationServer", "EscalationService", "EmailTemplate", "TemplateError",
           "TemplateRegistry", "build_mcp_server"]
