"""Acks in offset order, whatever order the work finishes in (pure bookkeeping).

faust commits the longest run of acked offsets that starts at its oldest acked one,
and checks for a gap before it only loosely (faust-streaming 0.15: no check at all
before a partition's first commit, and a gap of exactly one offset is missed). Records
that finish out of order -- batches in flight side by side, streamed replies that end
in any order -- could then be committed while an earlier record is still being
judged, and lost if the worker dies. The ledger hands records to faust's ack only
once every earlier record of its partition, as taken, has finished.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class OffsetLedger:
    """Per partition, the records taken and not yet acked, in the order taken."""

    def __init__(self) -> None:
        self._open: dict[Hashable, OrderedDict[int, bool]] = {}

    def take(self, partition: Hashable, offset: int) -> None:
        """A record was taken. An offset at or before one already open means the
        partition was read again from an earlier position (a rebalance or a seek):
        the open records from there on will come again and are forgotten."""
        book = self._open.setdefault(partition, OrderedDict())
        if book and offset <= next(reversed(book)):
            for stale in [o for o in book if o >= offset]:
                del book[stale]
        book[offset] = False

    def finish(self, partition: Hashable, offset: int) -> list[int]:
        """The record is done; the offsets that may now be acked, oldest first (none
        while an earlier record of the partition is still open)."""
        book = self._open.get(partition)
        if book is None or offset not in book:
            return []  # forgotten (read again since): its new copy will be acked
        book[offset] = True
        ready = []
        while book:
            first, done = next(iter(book.items()))
            if not done:
                break
            ready.append(first)
            del book[first]
        return ready

    def forget(self, partition: Hashable) -> None:
        """The partition was taken away: its open records are someone else's now."""
        self._open.pop(partition, None)

    def open_count(self) -> int:
        return sum(len(b) for b in self._open.values())


class InOrderAcks:
    """faust events acked through an :class:`OffsetLedger` (``ack``: the stream's)."""

    def __init__(self, ack: Callable[[Any], Awaitable[object]]) -> None:
        self._ack = ack
        self._ledger = OffsetLedger()
        self._events: dict[tuple[Hashable, int], Any] = {}

    @staticmethod
    def _where(event: Any) -> tuple[tuple[str, int], int]:
        m = event.message
        return (m.topic, m.partition), m.offset

    def take(self, event: Any) -> None:
        tp, offset = self._where(event)
        self._ledger.take(tp, offset)
        self._events[(tp, offset)] = event

    async def done(self, event: Any) -> None:
        """``event`` is finished: ack it, and the finished ones after it, once every
        record before it in its partition is finished too."""
        tp, offset = self._where(event)
        for ready in self._ledger.finish(tp, offset):
            await self._ack(self._events.pop((tp, ready)))

    def forget(self, topic: str, partition: int) -> None:
        tp = (topic, partition)
        self._ledger.forget(tp)
        for key in [k for k in self._events if k[0] == tp]:
            del self._events[key]
