"""EscalationComms: the MCP service that emails the customer and the support team for a ticket.

Run it with ``msev15 escalation-mcp`` or ``python -m msev15.escalation``; see :mod:`.cli`. The
server is :class:`.server.EscalationServer`, its settings :class:`.config.EscalationSettings`.

Its third-party packages (Azure Communication Services, Prometheus) come with the ``escalation``
extra. Nothing is imported here, so the CLI can start and say what is missing.
"""

INSTALL_HINT = "install the 'escalation' extra: pip install 'msev15e2e[escalation]'"
