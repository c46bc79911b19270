"""A client-side pause after empty fetches, for brokers that answer them at once.

Apache Kafka holds a fetch that finds no records for ``fetch.max.wait.ms``, so
an idle aiokafka consumer sends about two fetches a second. The embedded local
broker (noida-db) answers an empty fetch immediately, and aiokafka then fetches
again at once: one idle consumer used ~0.9 of a core here, which on a 2-core
machine is the CPU the model needs (docs/performance.md).

``install_idle_fetch_backoff(ms)`` makes every aiokafka consumer in this
process wait until ``ms`` have passed since an empty fetch was sent before it
fetches from that broker again. A fetch that returns records is not delayed,
so a busy stream runs as before; a record that arrives while a consumer is idle
waits at most ``ms`` longer. It is on by default everywhere: Kafka holds an
empty fetch for ``fetch.max.wait.ms`` (faust's worker consumer asks for 1.5 s,
plain aiokafka for 0.5 s), longer than the pause, so there it costs nothing.

aiokafka has no option for this, so it wraps ``Fetcher._proc_fetch_request``
(aiokafka is pinned in pyproject.toml; the wrapper fails loudly if the method
disappears).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.consumer import fetcher

_ORIGINAL = "_guardstream_original_proc_fetch_request"
_BACKOFF = "_guardstream_idle_fetch_backoff_s"


def install_idle_fetch_backoff(ms: int) -> None:
    """Pause ``ms`` after each empty fetch (0 removes the pause). Idempotent."""
    cls: Any = fetcher.Fetcher
    if not hasattr(cls, _ORIGINAL):
        if not hasattr(cls, "_proc_fetch_request"):
            raise RuntimeError(
                "aiokafka's Fetcher has no _proc_fetch_request: "
                "set GUARDSTREAM_KAFKA__IDLE_FETCH_BACKOFF_MS=0 or pin aiokafka"
            )
        setattr(cls, _ORIGINAL, cls._proc_fetch_request)
        cls._proc_fetch_request = _with_backoff(cls._proc_fetch_request)
    setattr(cls, _BACKOFF, ms / 1000)


def _with_backoff(
    original: Callable[..., Awaitable[bool]],
) -> Callable[..., Awaitable[bool]]:
    async def proc_fetch_request(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
        started = time.monotonic()
        has_new_data = await original(self, assignment, node_id, request)
        left = getattr(type(self), _BACKOFF, 0.0) - (time.monotonic() - started)
        if not has_new_data and left > 0:
            try:
                await asyncio.sleep(left)
            except asyncio.CancelledError:
                # Like the original: a cancelled fetch (close, reassignment)
                # simply has no new data.
                return False
        return has_new_data

    return proc_fetch_request
