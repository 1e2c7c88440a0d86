"""Logging for the service and the two MCP servers: the writer (formatting, redaction, a writer
thread, rotation), repeat filtering, the service's request/turn context, and the bus subscriber."""
