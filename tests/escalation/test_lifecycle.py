"""Start-up and restart behaviour of the server and its delivery records."""

from __future__ import annotations

import re
import socket
from datetime import date

import pytest

from msev15.escalation.models import DeliveryRecord
from msev15.escalation.server import EscalationServer
from msev15.escalation.tracking import TrackingStore

from .conftest import connect, http_get, running


async def test_messages_left_pending_by_a_stopped_run_are_marked_failed(settings_for):
    settings = settings_for()
    store = await TrackingStore.open(settings.escalation_db_path)
    try:
        email_id = await store.next_email_id("UC2", date(2025, 11, 7))
        await store.create([DeliveryRecord(
            email_id=email_id, tenant_id="default", role=role, ticket_id="TKT-2025-000001", use_case="UC2",
            recipient="a@example.com",
            backend="smtp", attempts=1, status="pending", provider_message_id="", provider_status="",
            created_at="2025-11-07T10:00:00+00:00", updated_at="2025-11-07T10:00:00+00:00", sent_at="",
            delivered_at="", last_error="") for role in ("customer", "support_team")])
    finally:
        await store.close()

    async with running(settings) as server, connect(server) as client:
        result = await client.call_tool("get_email_status", {"email_id": email_id})
    assert email_id.startswith("EMAIL-UC2-20251107-001-")
    assert result.structured_content["status"] == "failed"
    for record in result.structured_content["recipients"].values():
        assert record["last_error"].startswith("interrupted: the service stopped")


async def test_a_taken_port_fails_start_up_and_releases_everything(settings_for):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = EscalationServer(settings_for(), port=taken.getsockname()[1])
        with pytest.raises(OSError, match=re.escape("cannot listen on 127.0.0.1")):
            await server.start()
    assert server.service is None  # the database was closed again


def _listening(port: int) -> bool:
    """Whether something still listens on the loopback port (SO_REUSEADDR: TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def test_stop_is_idempotent(settings_for):
    server = EscalationServer(settings_for())
    await server.start()
    port = server.port
    assert (await http_get(server, "/health"))[0] == 200 and _listening(port)

    await server.stop()
    assert server.service is None and not _listening(port)  # the first stop released everything
    await server.stop()  # the second finds nothing left to release, and neither fails nor changes that
    assert server.service is None and not _listening(port)
