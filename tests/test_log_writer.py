"""The log writer thread: batches of lines, formatted once, written to the console and the
rotating file in order, nothing lost across rotations, tracebacks and redaction kept."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

from msev15.common.env import MASK
from msev15.logs.writer import LogFile, close_logging, flush_logging, setup_logging

LINES = 3000


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_every_line_reaches_console_and_file_in_order(tmp_path: Path) -> None:
    console = io.StringIO()
    setup_logging(level="INFO", stream=console, log_file=LogFile(tmp_path / "app.log", 50_000_000, 2))
    log = logging.getLogger("test.writer")
    try:
        for i in range(LINES):
            log.info("line %05d", i)
    finally:
        close_logging()
    on_console = [line for line in console.getvalue().splitlines() if "test.writer" in line]
    in_file = [line for line in _lines(tmp_path / "app.log") if "test.writer" in line]
    assert on_console == in_file  # the same text, formatted once
    assert [line.rsplit(" ", 1)[1] for line in in_file] == [f"{i:05d}" for i in range(LINES)]
    assert all("| INFO | test.writer | session=- | tenant=- | req=- | line " in line for line in in_file)


def test_rotation_keeps_every_line_and_each_file_within_its_size(tmp_path: Path) -> None:
    max_bytes, backups = 20_000, 50  # enough backups that no line is dropped by rotation
    console = io.StringIO()
    setup_logging(level="INFO", stream=console, log_file=LogFile(tmp_path / "app.log", max_bytes, backups))
    log = logging.getLogger("test.rotate")
    try:
        for i in range(LINES):
            log.info("rotating %05d", i)
    finally:
        close_logging()
    files = [tmp_path / "app.log", *(tmp_path / f"app.log.{n}" for n in range(1, backups + 1))]
    written = [path for path in files if path.exists()]
    assert len(written) > 3, "the file rotated"
    assert all(path.stat().st_size <= max_bytes for path in written)
    numbers = sorted(int(line.rsplit(" ", 1)[1]) for path in written for line in _lines(path) if "test.rotate" in line)
    assert numbers == list(range(LINES))  # nothing lost or repeated across the rotations


def test_tracebacks_and_secrets_from_other_threads(tmp_path: Path) -> None:
    console = io.StringIO()
    setup_logging(level="INFO", stream=console, secrets=["s3cret-token-value"])
    log = logging.getLogger("test.threads")

    def work(n: int) -> None:
        for i in range(200):
            log.info("worker %d line %d token=s3cret-token-value", n, i)

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            raise ValueError("the cause, with s3cret-token-value")
        except ValueError:
            log.exception("failed")
        flush_logging()  # written out now, and the writer goes on
        assert "ValueError: the cause" in console.getvalue()
        log.info("after the flush")
    finally:
        close_logging()
    text = console.getvalue()
    assert "s3cret-token-value" not in text and text.count(MASK) >= 801  # the traceback quotes it twice
    assert sum("test.threads | session=- | tenant=- | req=- | worker" in line for line in text.splitlines()) == 800
    assert text.rstrip().endswith("after the flush")


def test_a_broken_stream_does_not_stop_the_file(tmp_path: Path, capsys) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stderr is gone")

    setup_logging(level="INFO", stream=Broken(), log_file=LogFile(tmp_path / "app.log", 10_000_000, 1))
    try:
        logging.getLogger("test.broken").warning("still written to the file")
    finally:
        close_logging()
    assert any("still written to the file" in line for line in _lines(tmp_path / "app.log"))
    assert "stderr is gone" in capsys.readouterr().err  # reported the way logging reports handler errors


def test_other_handlers_see_the_record_as_it_was_logged(tmp_path: Path) -> None:
    """The queue gets a prepared copy; a handler after ours (pytest's, an APM agent's) still gets
    the arguments and the exception object."""
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    console = io.StringIO()
    setup_logging(level="INFO", stream=console)
    collect = Collect()
    logging.getLogger().addHandler(collect)
    try:
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("test.copy").exception("lookup %s failed", "order")
    finally:
        logging.getLogger().removeHandler(collect)
        close_logging()
    (record,) = [r for r in seen if r.name == "test.copy"]
    assert record.msg == "lookup %s failed" and record.args == ("order",)
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "lookup order failed" in console.getvalue() and "KeyError: 'k'" in console.getvalue()
