"""Deadlines on Redis's own clock, for scripts whose effect a client must be able to rely on.

A client gives up on a command after ``COMMAND_TIMEOUT_SECONDS`` (the request then answers 503
``store_unavailable``), but a stalled Redis (paused, swapping, a slow fsync) still holds the command
and runs it when it resumes. For a turn's commit that would make a turn its client was told failed
appear in the history. So a commit carries a deadline, and its script reads ``TIME`` and refuses
to write past it: the command either runs within ``DEADLINE_SECONDS`` of being sent, while its
client still waits for the reply, or it changes nothing.

The deadline is on Redis's clock, not the instance's: the offset between the two is sampled with
a ``TIME`` call (once per ``RESAMPLE_SECONDS``; the sample's uncertainty, half its round trip, is
taken off the budget) and carried forward on the monotonic clock, so a step of the instance's wall
clock changes nothing. ``GRACE_SECONDS`` is what the reply of a script that ran just before its
deadline has to reach the client before the client gives up. The one outcome left in doubt is a
reply lost or held past that grace after the script ran (a network cut at that very moment): the
client then reports a failure for a commit that happened, as with any store.

A step of Redis's own clock moves every deadline by as much until the next sample. On a Redis
Cluster the sample comes from one node and the script reads its own node's clock: the nodes'
clocks must agree (NTP) to well within ``GRACE_SECONDS``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from msev15.store.redis_kit import COMMAND_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from msev15.store.redis_wire import HotPath

GRACE_SECONDS = 1.5
DEADLINE_SECONDS = COMMAND_TIMEOUT_SECONDS - GRACE_SECONDS
RESAMPLE_SECONDS = 60.0
MAX_SAMPLE_ERROR_SECONDS = 0.25  # a sample whose round trip took longer is not kept


def deadline_check(arg: int, refused: str) -> str:
    """Lua for a script's first lines: ARGV[arg] is the deadline (Redis seconds, '' for none);
    the script returns ``refused`` once Redis's clock has passed it."""
    return f"""
if ARGV[{arg}] ~= '' then
  local clock = redis.call('TIME')
  if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[{arg}]) then return {refused} end
end
"""


class RedisClock:
    """Redis's clock as seen from this instance (see the module's docstring)."""

    def __init__(self, client: HotPath) -> None:
        self._redis = client
        self._base: tuple[float, float] | None = None  # (Redis seconds, monotonic seconds) at the sample
        self._error = 0.0

    async def _sample(self) -> None:
        sent = time.monotonic()
        seconds, micros = (int(v) for v in await self._redis.call("TIME"))
        got = time.monotonic()
        self._base = (seconds + micros / 1_000_000, (sent + got) / 2)
        self._error = (got - sent) / 2

    async def deadline(self, budget: float = DEADLINE_SECONDS) -> str:
        """A deadline ``budget`` seconds from now on Redis's clock, as a script argument."""
        if (self._base is None or time.monotonic() - self._base[1] > RESAMPLE_SECONDS
                or self._error > MAX_SAMPLE_ERROR_SECONDS):  # a slow sample is used once, then taken again
            await self._sample()
        assert self._base is not None
        redis_at, mono_at = self._base
        return repr(redis_at + (time.monotonic() - mono_at) + budget - self._error)
