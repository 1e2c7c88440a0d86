"""The end of a turn that handed its session to a person (the ``handoff_to_human`` tool).

After the turn's messages are committed, the session's mode moves from ``agent`` to
``waiting_for_human`` and the turn emits ``handoff`` (mode, reason, summary) before its ``done``
(status ``with_human``). From then on customer messages are stored for the operator, not sent
to the model (handlers/handoff_chat.py), until an operator releases the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from msev15.events.types import Handoff, TurnEvent, TurnRequested
from msev15.store.base import Sessions

log = logging.getLogger("agent.handoff")

WAITING = "waiting_for_human"
WITH_HUMAN = "with_human"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def begin_handoff(sessions: Sessions, turn: TurnRequested, emit: Callable[[TurnEvent], None],
                        arguments: dict[str, Any]) -> None:
    """Move the just-committed session to ``waiting_for_human`` and emit the ``handoff`` event.
    A session a person already holds (an operator claimed it during the turn) keeps its mode."""
    moved = await sessions.set_mode(turn.tenant_id, turn.session_id, WAITING, expect="agent")
    session = None if moved else await sessions.get(turn.tenant_id, turn.session_id)
    mode = WAITING if moved or session is None else session.mode
    log.info("session handed off to a person (mode %s)", mode)
    emit(Handoff(turn.turn_id, turn.tenant_id, turn.session_id, turn.request_id, mode,
                 _text(arguments.get("reason")), _text(arguments.get("summary"))))
