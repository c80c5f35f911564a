"""Per-sender rate limits (messages per second), enforced across every worker.

Why slots and not a token bucket: the provider counts a message when it
*receives* it, and the time between a worker deciding to send and the provider
receiving the request varies. Spacing requests by ``1/rate`` at the moment they
leave (a token bucket without burst, GCRA) lets two requests drift into the same
second; a token bucket with burst allows ``rate`` plus the burst in one second.
So a sender with a limit of ``rate`` per second has ``rate`` slots. Sending takes
one free slot per message and waits until each taken slot was last *finished*
at least a second ago; when the provider call returns, the slots are released
with that finishing time. Every message that used a slot reached the provider
before its call finished, and the next message on that slot leaves a full second
after that, so no 1-second window (at the provider, whatever the network did)
can hold more than ``rate`` messages.

While a send is in flight its slots are held until ``start + hold + 1`` (``hold``
is the provider timeout plus a margin): a worker that dies mid-send frees its
slots by itself, late rather than early. A held slot is recognised by that
value lying more than a second ahead, so a slot's state is one number. (A chunk
of email must finish within ``hold`` too; one chunk is at most ``rate`` messages.)

Two interchangeable limiters keep the slots: ``RedisRateLimiter`` (a sorted set
per sender, one Lua script per reserve and per release, Redis's own clock, so
workers on several hosts agree) and ``DatabaseRateLimiter`` (``RateLimitSlot``
rows named ``<key>#<i>``, one transaction; the embedded default, one host, its
clock). ``CHORUS_RATE_LIMITER`` picks one.

Cost: a slot is busy for the provider call plus a second, so a sender with a
provider round trip of L seconds gets ``rate / (1 + L)`` messages per second at
most (about 98 % of the limit with the sandbox's 20 ms), never more than ``rate``.

Trade-off: a worker sending to a slow sender sleeps through its batch (a batch of
``CHORUS_SEND_BATCH`` SMS at 1 per second keeps one worker process for that
many seconds); give senders with low limits their own queue or more processes.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from time import monotonic

from django.conf import settings
from django.db import transaction

from channels.adapters.base import Adapter, ChannelError, Outbound, SendResult
from channels.models import RateLimitSlot, SenderRateLimit

# How long to wait before asking again when every slot of a sender is in flight.
POLL_SECONDS = 0.02
# Beyond the provider timeout: how long a slot stays held by a send that never reports back.
HOLD_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Reservation:
    """Slots taken for one send: wait ``wait`` seconds, send, then ``release``."""

    wait: float
    slots: tuple[str, ...]
    held_until: float


class RateLimiter(ABC):
    """Slots per key, shared by every worker; see the module docstring."""

    @abstractmethod
    def reserve(self, key: str, per_second: int, n: int = 1) -> Reservation | None:
        """Take ``n`` free slots of ``key`` (which has ``per_second`` slots).

        Returns how long to wait before sending the ``n`` messages, or None when
        fewer than ``n`` slots are free (the others are in flight): ask again shortly.
        """

    @abstractmethod
    def release(self, key: str, reservation: Reservation) -> None:
        """The send is over (or failed): the slots become free a second from now."""

    @contextmanager
    def slots(self, key: str, per_second: int, n: int = 1) -> Iterator[None]:
        """Wait until ``n`` messages of ``key`` may go, hold the slots while the body sends them."""
        if not 1 <= n <= per_second:
            raise ValueError(f"Cannot send {n} messages at once under a limit of {per_second} per second.")
        while (reservation := self.reserve(key, per_second, n)) is None:
            time.sleep(POLL_SECONDS)
        if reservation.wait > 0:
            time.sleep(reservation.wait)
        try:
            yield
        finally:
            self.release(key, reservation)


def _hold() -> float:
    return settings.CHORUS_PROVIDER_TIMEOUT + HOLD_MARGIN_SECONDS


# KEYS[1]: the sender's slots, a sorted set (member: slot id, score: when it is free again).
# ARGV: per_second, n, hold. Returns {} when too few slots are free, else {wait, held_until, slot ids...}.
_RESERVE = """
local key, rate, n, hold = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local size = redis.call('ZCARD', key)
if size > rate then
  -- The limit went down: keep the slots used last.
  redis.call('ZPOPMIN', key, size - rate)
end
local i = 0
while size < rate do
  size = size + redis.call('ZADD', key, 'NX', 0, i)
  i = i + 1
end
local free = redis.call('ZRANGEBYSCORE', key, '-inf', string.format('%.6f', now + 1), 'WITHSCORES', 'LIMIT', 0, n)
if #free < 2 * n then
  return {}
end
local start = math.max(now, tonumber(free[2 * n]))
local held_until = string.format('%.6f', start + hold + 1)
local reply = {string.format('%.6f', start - now), held_until}
for j = 1, 2 * n, 2 do
  redis.call('ZADD', key, 'XX', held_until, free[j])
  reply[#reply + 1] = free[j]
end
redis.call('PEXPIRE', key, math.ceil((start - now + hold + 60) * 1000))
return reply
"""

# KEYS[1]: the sender's slots; ARGV: held_until, slot ids. Slots still held by this send become free in a second.
_RELEASE = """
local t = redis.call('TIME')
local free_at = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + 1)
local held_until = tonumber(ARGV[1])
for j = 2, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[j])) == held_until then
    redis.call('ZADD', KEYS[1], 'XX', free_at, ARGV[j])
  end
end
"""


class RedisRateLimiter(RateLimiter):
    """Slots in Redis: any number of workers on any number of hosts (Redis's clock decides)."""

    prefix = "chorus:ratelimit:"

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self._reserve = self.client.register_script(_RESERVE)
        self._release = self.client.register_script(_RELEASE)

    def reserve(self, key: str, per_second: int, n: int = 1) -> Reservation | None:
        reply = self._reserve(keys=[self.prefix + key], args=[per_second, n, _hold()])
        if not reply:
            return None
        wait, held_until, *slots = (item.decode() for item in reply)
        return Reservation(wait=float(wait), slots=tuple(slots), held_until=float(held_until))

    def release(self, key: str, reservation: Reservation) -> None:
        self._release(keys=[self.prefix + key], args=[f"{reservation.held_until:.6f}", *reservation.slots])


class DatabaseRateLimiter(RateLimiter):
    """Slots as ``RateLimitSlot`` rows: the embedded default (one host, so one clock).

    On SQLite every write transaction takes the database lock up front; on
    PostgreSQL the sender's rows are locked (``SELECT ... FOR UPDATE``).
    """

    def reserve(self, key: str, per_second: int, n: int = 1) -> Reservation | None:
        with transaction.atomic():
            rows = self._locked(key)
            if len(rows) < per_second:
                taken = {row.key for row in rows}
                names = (f"{key}#{i}" for i in range(per_second * 2))
                missing = [name for name in names if name not in taken][: per_second - len(rows)]
                RateLimitSlot.objects.bulk_create([RateLimitSlot(key=name) for name in missing], ignore_conflicts=True)
                rows = self._locked(key)
            rows.sort(key=lambda row: row.next_at)
            if len(rows) > per_second:  # the limit went down: keep the slots used last
                RateLimitSlot.objects.filter(key__in=[row.key for row in rows[: len(rows) - per_second]]).delete()
                rows = rows[len(rows) - per_second :]
            now = time.time()
            free = [row for row in rows if row.next_at <= now + 1][:n]
            if len(free) < n:
                return None
            start = max(now, free[-1].next_at)
            held_until = round(start + _hold() + 1, 6)
            slots = tuple(row.key for row in free)
            RateLimitSlot.objects.filter(key__in=slots).update(next_at=held_until)
        return Reservation(wait=max(0.0, start - time.time()), slots=slots, held_until=held_until)

    def release(self, key: str, reservation: Reservation) -> None:
        RateLimitSlot.objects.filter(key__in=reservation.slots, next_at=reservation.held_until).update(
            next_at=round(time.time() + 1, 6)
        )

    @staticmethod
    def _locked(key: str) -> list[RateLimitSlot]:
        rows = RateLimitSlot.objects.select_for_update().filter(key__startswith=f"{key}#").order_by("key")
        return [row for row in rows if row.key.rpartition("#")[0] == key]


@cache
def _limiter(kind: str, url: str) -> RateLimiter:
    return RedisRateLimiter(url) if kind == "redis" else DatabaseRateLimiter()


def limiter() -> RateLimiter:
    """The limiter ``CHORUS_RATE_LIMITER`` names (one per process: the Redis client keeps its pool)."""
    return _limiter(settings.CHORUS_RATE_LIMITER, settings.CHORUS_REDIS_URL)


class _Limits:
    """Every ``SenderRateLimit`` row, read at most once per ``CHORUS_RATE_LIMIT_CACHE_SECONDS``.

    One query per interval instead of one per batch; a limit changed in the
    admin applies to every worker within that interval.
    """

    loaded_at = -math.inf
    per_sender: dict[tuple[str, str], int] = {}

    def get(self, channel: str, sender: str) -> int | None:
        if monotonic() - self.loaded_at >= settings.CHORUS_RATE_LIMIT_CACHE_SECONDS:
            rows = SenderRateLimit.objects.values_list("channel", "sender", "per_second")
            self.per_sender = {(channel, sender): per_second for channel, sender, per_second in rows}
            self.loaded_at = monotonic()
        return self.per_sender.get((channel, sender))


limits = _Limits()


def send_throttled(adapter: Adapter, outbound: Sequence[Outbound]) -> list[SendResult]:
    """``adapter.send(outbound)``, never faster than each sender's ``SenderRateLimit``.

    Messages of an unlimited sender go out in one call, as before. Those of a
    limited sender go in chunks of at most ``per_second`` (one message per chunk
    on SMS and WhatsApp, where each message is its own request), each chunk
    holding one slot per message. Results keep the order of ``outbound``. As the
    adapter contract says, once part of the batch went out a failure is
    reported in the results of the messages not sent, never raised.
    """
    channel = adapter.channel
    unlimited: list[int] = []
    by_sender: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, msg in enumerate(outbound):
        sender = adapter.sender_of(msg)
        if (per_second := limits.get(channel, sender)) is None:
            unlimited.append(i)
        else:
            by_sender[sender, per_second].append(i)
    if not by_sender:
        return adapter.send(outbound)
    results: list[SendResult | None] = [None] * len(outbound)

    def send(indices: list[int]) -> None:
        for i, result in zip(indices, adapter.send([outbound[i] for i in indices]), strict=True):
            results[i] = result

    try:
        if unlimited:
            send(unlimited)
        rate = limiter()
        for (sender, per_second), indices in by_sender.items():
            size = 1 if channel in ("sms", "whatsapp") else per_second
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                with rate.slots(f"{channel}:{sender}", per_second, len(chunk)):
                    send(chunk)
    except ChannelError as error:
        if all(result is None for result in results):
            raise
        return [
            result or SendResult(msg.message_id, error=error) for result, msg in zip(results, outbound, strict=True)
        ]
    return results
