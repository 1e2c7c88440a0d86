"""Memory of retained turn logs: 10,000 finished streamed turns (a tool call, a result, 50 tokens,
``done``) pass through a TurnLog with the default bounds; the figure is the traced memory the log
holds after them, per retained event, and whether the event bound held.

Run alone with ``python -m benchmarks.turnlog``; ``benchmarks.run`` includes it as "turnlog".
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from msev15.config import Settings
from msev15.events.turnlog import TurnLog
from msev15.events.types import Token, ToolCalled, ToolFinished, TurnCompleted, TurnRequested

TURNS = 10_000
TOKENS = 50


def measure(turns: int = TURNS, tokens: int = TOKENS) -> dict[str, Any]:
    defaults = Settings.defaults()
    log = TurnLog(defaults.stream_retention_seconds, defaults.stream_max_retained_events)
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(turns):
        turn_id, session = f"{i:016x}{1:016x}", f"session-{i % 500}"
        record = log.open(TurnRequested(turn_id, "tenant-001", session, f"{i:032x}", "hello", True))
        ids = (turn_id, "tenant-001", session, record.request_id)
        log.append(record, ToolCalled(*ids, "get_order_by_id", "call_1", {"order_id": "ORD-1A2B3C4D"}))
        log.append(record, ToolFinished(*ids, "get_order_by_id", "call_1", True))
        for t in range(tokens):
            log.append(record, Token(*ids, f"word{t} "))
        log.append(record, TurnCompleted(*ids, "answer", 4, {"prompt_tokens": 10, "completion_tokens": tokens}))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    bound = defaults.stream_max_retained_events
    return {
        "turns_finished": turns,
        "events_per_turn": tokens + 3,
        "turns_retained": len(log),
        "events_retained": log.retained_events,
        "event_bound": bound,
        "within_bound": log.retained_events <= bound,
        "bytes_held": held,
        "bytes_per_event": round(held / max(1, log.retained_events)),
        "bytes_at_bound": round(held / max(1, log.retained_events) * bound),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
