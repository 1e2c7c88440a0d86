"""The in-process event bus, the turn events, and the logging subscriber."""
