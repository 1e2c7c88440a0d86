"""The service's logging: the one log setup (:mod:`msev15.logs.writer`) with its context.

Session, tenant and request id come from contextvars bound by the request middleware (and by the
agent for each turn), so every line written while serving a request, including lines from tasks
it spawned, carries them. A record may also carry them explicitly as ``extra``.
"""

from __future__ import annotations

import contextvars
import logging
from typing import TextIO

from aiohttp.http_exceptions import HttpProcessingError

from msev15.config import Settings
from msev15.logs.repeat import RepeatFilter
from msev15.logs.writer import LogFile
from msev15.logs.writer import setup_logging as _setup_logging

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
session_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant_id", default="-")

# The HTTP clients under openai and mcp log every request at INFO: noise at our INFO.
_NOISY = ("httpx", "httpx2", "httpcore", "mcp.client")


def bind(*, request_id: str | None = None, session_id: str | None = None, tenant_id: str | None = None) -> None:
    """Bind log context for the current task (and tasks it creates from now on)."""
    if request_id is not None:
        request_id_var.set(request_id)
    if session_id is not None:
        session_var.set(session_id)
    if tenant_id is not None:
        tenant_var.set(tenant_id)


class ContextFilter(logging.Filter):
    """Fills session/tenant/request id from the record's extras or the contextvars."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session"):
            record.session = session_var.get()
        if not hasattr(record, "tenant"):
            record.tenant = tenant_var.get()
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs every malformed request (header floods, over-long lines) at ERROR with a
    traceback, from its parser, before our middleware runs. They are the client's fault and a
    public port sees them all the time: one WARNING line each is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.msg}: malformed request ({type(exc).__name__}: {exc.message})"
            record.exc_info = record.exc_text = None
        return True


_MALFORMED = MalformedRequestFilter()


def setup_logging(settings: Settings, stream: TextIO | None = None) -> list[logging.Handler]:
    """Console always, rotating file when LOG_TO_FILE, with the request context on every line.

    Idempotent; undone by :func:`msev15.logs.writer.close_logging`.
    """
    log_file = (LogFile(settings.log_file_path, settings.log_max_size_mb * 1024 * 1024, settings.log_backup_count)
                if settings.log_to_file else None)
    handlers = _setup_logging(level=settings.log_level, secrets=settings.secrets(), stream=stream,
                              log_file=log_file, filters=[ContextFilter(), RepeatFilter()], quiet=_NOISY)
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server_log.filters:
        server_log.addFilter(_MALFORMED)
    # aiohttp's access log duplicates our request lines; keep it for DEBUG only.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    return handlers
