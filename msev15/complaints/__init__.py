"""The reference complaints MCP server (``msev15 complaints-mcp``)."""
