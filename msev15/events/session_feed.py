"""Copies every turn's client events from the bus into the session stream's log
(store/session_events.py), each with its ``turn_id``: the session stream carries the turns of
every protocol. Each instance copies the turns it runs; with Redis the log is shared. Only
sessions someone watches are copied (see store/session_events.py)."""

from __future__ import annotations

from collections.abc import Callable

from msev15.events.bus import EventBus
from msev15.events.types import CLIENT_EVENTS, TurnEvent, to_wire
from msev15.store.session_events import SessionEvents


def feed_session_events(bus: EventBus, log: SessionEvents) -> None:
    """Register the copying handler for each client event kind (a synchronous call per event;
    ``publish`` never blocks and never raises for a backend's failure)."""

    def copy(event: TurnEvent) -> None:
        if log.watched(event.tenant_id, event.session_id):  # nobody reads it otherwise: nothing built
            log.publish(event.tenant_id, event.session_id, {**to_wire(event), "turn_id": event.turn_id})

    handler: Callable[[TurnEvent], None] = copy
    for kind in CLIENT_EVENTS:
        bus.on(kind, handler)
