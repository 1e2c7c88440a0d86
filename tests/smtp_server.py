"""A recording SMTP server for tests: aiosmtpd on a free loopback port, in the test's event loop.

    async with RecordingSMTP() as smtp:
        ...send to smtp.host, smtp.port...
        [received] = await smtp.wait_for(1)
        assert received.rcpt_tos == ("a@example.com",)

Options: refuse the first ``fail_first`` deliveries with ``fail_code`` (421 = transient, 554 =
permanent), refuse some recipients (``refuse_recipients={"x@example.com": 550}``), require a
login (``auth=("user", "secret")``), offer STARTTLS (``starttls_context``)
or speak implicit TLS (``implicit_tls_context``). See :func:`make_tls_contexts` for a throwaway
self-signed certificate.

The server runs in the running loop (no thread), so the test must not block that loop while a
client talks to it: use asyncio subprocesses and clients, not ``subprocess.run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import ssl
import tempfile
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True, slots=True)
class Received:
    """One accepted message: the SMTP envelope and the parsed content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None  # the authenticated user, if any
    tls: bool  # whether the message came over TLS

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, owner: RecordingSMTP) -> None:
        self.owner = owner

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        code = self.owner.refuse_recipients.get(address.lower())
        if code is not None:
            return f"{code} 5.1.1 <{address}>: recipient refused"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner.data_started.set()
        if self.owner.hold is not None:  # a slow relay: DATA waits until the test lets it go
            await self.owner.hold.wait()
        status = self.owner._deliver(session, envelope)
        async with self.owner._changed:
            self.owner._changed.notify_all()
        return status


class RecordingSMTP:
    """Async context manager; ``messages`` holds what was accepted, ``attempts`` every DATA."""

    def __init__(
        self,
        *,
        fail_first: int = 0,
        fail_code: int = 421,
        fail_text: str = "Service temporarily unavailable, try again later",
        auth: tuple[str, str] | None = None,
        refuse_recipients: dict[str, int] | None = None,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        self.fail_first = fail_first
        self.fail_code = fail_code
        self.fail_text = fail_text
        self.auth = auth
        self.refuse_recipients = {a.lower(): code for a, code in (refuse_recipients or {}).items()}
        self.starttls_context = starttls_context
        self.implicit_tls_context = implicit_tls_context
        self.messages: list[Received] = []
        self.attempts = 0
        self._changed = asyncio.Condition()
        self.hold: asyncio.Event | None = None  # set to an Event to hold every DATA until it is set
        self.data_started = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    # --- server side -------------------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self.auth is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.auth)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    def _factory(self) -> SMTP:
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True, "hostname": "smtp.test"}
        if self.auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.starttls_context is not None)
        if self.starttls_context is not None:
            kwargs.update(tls_context=self.starttls_context, require_starttls=True)
        with warnings.catch_warnings():
            # AUTH without TLS is what a test of login over a plain relay needs.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            protocol = SMTP(_Handler(self), loop=asyncio.get_running_loop(), **kwargs)
        self._protocols.append(protocol)
        return protocol

    def _deliver(self, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return f"{self.fail_code} {self.fail_text}"
        content = envelope.original_content or b""
        self.messages.append(Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content,
            login=session.auth_data if isinstance(session.auth_data, str) else None,
            tls=session.ssl is not None or self.implicit_tls_context is not None,
        ))
        return "250 OK queued"

    # --- test side ---------------------------------------------------------------------------

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` messages were accepted; return them all."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, self.host, 0, ssl=self.implicit_tls_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()
        tasks = [p._handler_coroutine for p in self._protocols if p._handler_coroutine is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def make_tls_contexts(hostname: str = "127.0.0.1") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A (server, client) pair sharing a fresh self-signed certificate for ``hostname``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cert.pem").write_bytes(cert_pem)
        (Path(tmp) / "key.pem").write_bytes(key_pem)
        server.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
