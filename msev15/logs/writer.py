"""The one log setup of the three programs: one format, secrets redacted, written off the loop.

Line format::

    2026-02-19 10:30:45 | INFO | api.chat | session=abc-123 | tenant=company-A | req=9f1c... | User message received

Session, tenant and request id are filled by the program when it knows them (the service binds
them per request and turn: :mod:`msev15.logs.service`); a line without them shows ``-``, so every
program's lines read and parse alike. Configured secrets are scrubbed from every line before it
is written anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from msev15.common.env import MASK

# ``trace`` is empty unless tracing is on (then `` | trace_id=… span_id=…``, msev15.events.tracing).
FORMAT = ("%(asctime)s | %(levelname)s | %(name)s | session=%(session)s | tenant=%(tenant)s | "
          "req=%(request_id)s%(trace)s | %(message)s")
DATEFMT = "%Y-%m-%d %H:%M:%S"
CONTEXT_FIELDS = ("session", "tenant", "request_id")
_HANDLER_MARK = "_msev15_handler"


class RedactingFormatter(logging.Formatter):
    """Formats in :data:`FORMAT`, then replaces any configured secret with a mask (tracebacks
    included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(FORMAT, DATEFMT, defaults={**{name: "-" for name in CONTEXT_FIELDS}, "trace": ""})
        # Longest first so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


@dataclass(frozen=True, slots=True)
class LogFile:
    """A rotating log file, written besides the console."""

    path: str | Path
    max_bytes: int
    backup_count: int


class _Writer:
    """The handlers that do the writing, behind one thread: a slow disk, a log rotation or a
    stalled stderr pipe never blocks the event loop.

    The thread takes whatever has queued up since its last write (up to :data:`BATCH` records),
    formats each record once, and writes the batch to each handler's stream in one call with one
    flush. Under load that is a few writes a second instead of two per line, and the thread wakes
    (and takes the interpreter lock from the event loop) once per batch, not once per line.
    """

    BATCH = 512
    _STOP = None

    def __init__(self, handlers: list[logging.StreamHandler[Any]], formatter: logging.Formatter) -> None:
        self.handlers = handlers
        self.formatter = formatter
        self.queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write out everything queued so far, then end the thread."""
        if self._thread is not None:
            self.queue.put(self._STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        while True:
            record = get()
            batch: list[logging.LogRecord] = []
            while record is not None:
                batch.append(record)
                if len(batch) >= self.BATCH:
                    break
                try:
                    record = get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if record is None:
                return

    def _write(self, batch: list[logging.LogRecord]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(self.formatter.format(record))
            except Exception:
                logging.Handler.handleError(self.handlers[0], record)
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        for handler in self.handlers:
            try:
                with handler.lock or contextlib.nullcontext():
                    if isinstance(handler, logging.handlers.RotatingFileHandler) and handler.maxBytes > 0:
                        _write_rotating(handler, lines)
                    else:
                        handler.stream.write(text)
                    handler.stream.flush()
            except Exception:
                handler.handleError(batch[-1])

    def flush(self) -> None:
        """Write out everything queued so far."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        for handler in self.handlers:
            handler.close()


def _write_rotating(handler: logging.handlers.RotatingFileHandler, lines: list[str]) -> None:
    """RotatingFileHandler's rule, for a batch: roll over before a line would take the file past
    maxBytes (counted in characters, as the stdlib does); a line alone larger than that still gets
    a file of its own."""
    if handler.stream is None:  # closed after a failed rollover: reopen
        handler.stream = handler._open()
    size, start = handler.stream.tell(), 0
    for i, line in enumerate(lines):
        if size and size + len(line) + 1 > handler.maxBytes:
            if i > start:
                handler.stream.write("\n".join(lines[start:i]) + "\n")
            handler.doRollover()
            size, start = 0, i
        size += len(line) + 1
    handler.stream.write("\n".join(lines[start:]) + "\n")


class _QueueFront(logging.handlers.QueueHandler):
    """The stdlib QueueHandler, with a cheaper copy of the record: its ``copy.copy`` goes through
    ``__reduce_ex__`` and cost more than the rest of ``prepare`` together."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        msg = self.format(record)  # merges the arguments, appends a traceback's text
        queued = logging.LogRecord.__new__(logging.LogRecord)
        queued.__dict__.update(record.__dict__)  # a copy: other handlers see the record as it was
        queued.message = queued.msg = msg
        queued.args = None
        queued.exc_info = queued.exc_text = queued.stack_info = None
        return queued


_writer: _Writer | None = None


def setup_logging(*, level: str, secrets: Iterable[str] = (), stream: TextIO | None = None,
                  log_file: LogFile | None = None, filters: Iterable[logging.Filter] = (),
                  quiet: Iterable[str] = ()) -> list[logging.Handler]:
    """Console (``stream``, default stderr) always, plus ``log_file`` if given; returns the
    writing handlers.

    Idempotent: replaces what an earlier call set up. ``filters`` run in the logging task, so
    they can read its contextvars; formatting, redaction and I/O happen in the writer thread.
    Loggers named in ``quiet`` log WARNING and above only (unless ``level`` is stricter).
    """
    global _writer
    close_logging()
    root = logging.getLogger()
    formatter = RedactingFormatter(secrets)
    handlers: list[logging.StreamHandler[Any]] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file is not None:
        path = Path(log_file.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=log_file.max_bytes, backupCount=log_file.backup_count, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    _writer = _Writer(handlers, formatter)
    front = _QueueFront(_writer.queue)
    for log_filter in filters:
        front.addFilter(log_filter)
    setattr(front, _HANDLER_MARK, True)
    root.addHandler(front)
    root.setLevel(level)
    # The format names no thread or process: don't look them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return list(handlers)


def add_log_filter(log_filter: logging.Filter) -> None:
    """Run ``log_filter`` on every record, in the logging task, beside those set up at start."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_MARK, False) and log_filter not in handler.filters:
            handler.addFilter(log_filter)


def remove_log_filter(log_filter: logging.Filter) -> None:
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_MARK, False):
            handler.removeFilter(log_filter)


def flush_logging() -> None:
    if _writer is not None:
        _writer.flush()


def close_logging() -> None:
    """Write out what is queued, then remove and close what :func:`setup_logging` installed."""
    global _writer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    if _writer is not None:
        _writer.close()
        _writer = None
