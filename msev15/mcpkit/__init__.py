"""Our MCP contract, shared by the service's MCP client and the project's two MCP servers.

- :mod:`.meta`: the tenant and idempotency-key ``_meta`` keys and their readers.
- :mod:`.caller`: the calling tenant and idempotency key of a tool call, as a server sees them.
- :mod:`.auth`: the bearer token (MCP_AUTH_TOKEN) every HTTP request must carry, and the
  start-up refusal on a non-loopback address without one.
- :mod:`.runner`: running an MCP server's ASGI app on a socket (uvicorn), with a clean stop.

Imports only :mod:`msev15.common` and third-party packages, never the service's layers.
"""
