"""The server layer: connections (limits, timeouts, shedding) and serving an app until a signal."""
