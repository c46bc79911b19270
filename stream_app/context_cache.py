"""Recent turns per conversation, kept in memory by a worker (bounded, LRU).

Bounded three ways: turns per conversation, conversations, and the UTF-8 bytes
of the stored text (plus a fixed per-turn overhead), so its memory does not
depend on how long users' turns are. The least recently used conversation goes
first.

Used for agent turns whose event carries no ``context``. Keyed by tenant AND
conversation id, so one tenant's turns never become another's context, even
on the same conversation id. Keyed partitioning by conversation id sends a
conversation's turns to one worker, in order. A turn whose index is already
stored (a replay) is not stored again; any other index is, so one turn with
a huge ``turn_index`` cannot make the real turns after it look like replays.
The cache starts empty after a restart or rebalance; events that need exact
context should carry it in ``context``.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from guard.conversation import Turn

#: (tenant, conversation id): the unit of context.
ConversationKey = tuple[str | None, str]

#: Bytes counted per stored turn on top of its text (tuple, Turn, deque slot).
TURN_OVERHEAD_BYTES = 200


def turn_cost(turn: Turn) -> int:
    return len(turn.content.encode("utf-8")) + TURN_OVERHEAD_BYTES


class ContextCache:
    def __init__(
        self, max_turns: int, max_conversations: int, max_bytes: int | None = None
    ) -> None:
        self.max_turns = max_turns
        self.max_conversations = max_conversations
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[ConversationKey, deque[tuple[int, Turn]]] = OrderedDict()

    def history(self, key: ConversationKey, turn_index: int) -> tuple[Turn, ...]:
        """Stored turns of the conversation with an index below ``turn_index``, in
        index order."""
        turns = self._data.get(key)
        if turns is None:
            return ()
        self._data.move_to_end(key)
        return tuple(t for i, t in sorted(turns, key=lambda it: it[0]) if i < turn_index)

    def add(self, key: ConversationKey, turn_index: int, turn: Turn) -> None:
        if self.max_turns == 0:
            return
        turns = self._data.get(key)
        if turns is None:
            turns = self._data[key] = deque(maxlen=self.max_turns)
        elif any(i == turn_index for i, _ in turns):
            return  # a replay
        if len(turns) == self.max_turns:
            self.bytes -= turn_cost(turns[0][1])  # append drops the oldest
        turns.append((turn_index, turn))
        self.bytes += turn_cost(turn)
        self._data.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.max_conversations or (
            self.max_bytes is not None and self.bytes > self.max_bytes and len(self._data) > 1
        ):
            _, dropped = self._data.popitem(last=False)
            self.bytes -= sum(turn_cost(t) for _, t in dropped)

    def __len__(self) -> int:
        return len(self._data)
