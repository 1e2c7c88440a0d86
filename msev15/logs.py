"""Tenant-aware structured logging.

Line format (the spec's, plus the request id)::

    2026-02-19 10:30:45 | INFO | api.chat | session=abc-123 | tenant=company-A | req=9f1c... | User message received

Session, tenant and request id come from contextvars bound by the request middleware (and by the
agent for each turn), so every line written while serving a request, including lines from tasks
it spawned, carries them. A record may also carry them explicitly as ``extra``.
Configured secrets are scrubbed from every line before it is written anywhere.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import queue
import sys
from collections.abc import Iterable
from pathlib import Path

from aiohttp.http_exceptions import HttpProcessingError

from msev15.common.env import MASK
from msev15.config import Settings

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
session_var: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant_id", default="-")

FORMAT = "%(asctime)s | %(levelname)s | %(name)s | session=%(session)s | tenant=%(tenant)s | req=%(request_id)s | %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
_HANDLER_MARK = "_msev15_handler"


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


class RedactingFormatter(logging.Formatter):
    """Formats, then replaces any configured secret with a mask (tracebacks included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(FORMAT, DATEFMT)
        # Longest first so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


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


class _Writer:
    """The handlers that do the writing, behind one QueueListener thread: a slow disk, a log
    rotation or a stalled stderr pipe never blocks the event loop."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        self.handlers = handlers
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.listener = logging.handlers.QueueListener(self.queue, *handlers, respect_handler_level=True)
        self.listener.start()

    def flush(self) -> None:
        """Write out everything queued so far (stop drains the queue; start again after)."""
        self.listener.stop()
        for handler in self.handlers:
            handler.flush()
        self.listener.start()

    def close(self) -> None:
        self.listener.stop()
        for handler in self.handlers:
            handler.close()


_writer: _Writer | None = None


def setup_logging(settings: Settings, stream=None) -> list[logging.Handler]:
    """Console always, rotating file when LOG_TO_FILE, written by a background thread.

    Idempotent: replaces what an earlier call set up. The context filter runs in the logging
    task (contextvars are read there); formatting, redaction and I/O happen in the writer thread.
    """
    global _writer
    close_logging()
    root = logging.getLogger()
    formatter = RedactingFormatter(settings.secrets())
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if settings.log_to_file:
        path = Path(settings.log_file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                path,
                maxBytes=settings.log_max_size_mb * 1024 * 1024,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    _writer = _Writer(handlers)
    front = logging.handlers.QueueHandler(_writer.queue)
    front.addFilter(ContextFilter())
    setattr(front, _HANDLER_MARK, True)
    root.addHandler(front)
    root.setLevel(settings.log_level)
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server_log.filters:
        server_log.addFilter(_MALFORMED)
    # The HTTP clients under openai and mcp log every request at INFO: noise at our INFO.
    for noisy in ("httpx", "httpx2", "httpcore", "mcp.client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiohttp's access log duplicates our request lines; keep it for DEBUG only.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    return handlers


def flush_logging() -> None:
    if _writer is not None:
        _writer.flush()


def close_logging() -> None:
    global _writer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    if _writer is not None:
        _writer.close()
        _writer = None
