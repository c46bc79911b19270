"""Recent turns per conversation, kept in memory by a worker (bounded, LRU).

Used for agent turns whose event carries no ``context``. Keyed partitioning
by conversation id sends a conversation's turns to one worker, in order. A
turn index at or below the last one stored (a replay) is not stored again.
The cache starts empty after a restart or rebalance; events that need exact
context should carry it in ``context``.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from guard.conversation import Turn


class ContextCache:
    def __init__(self, max_turns: int, max_conversations: int) -> None:
        self.max_turns = max_turns
        self.max_conversations = max_conversations
        self._data: OrderedDict[str, deque[tuple[int, Turn]]] = OrderedDict()

    def history(self, conversation_id: str, turn_index: int) -> tuple[Turn, ...]:
        """Stored turns of the conversation that come before ``turn_index``."""
        turns = self._data.get(conversation_id)
        if turns is None:
            return ()
        self._data.move_to_end(conversation_id)
        return tuple(t for i, t in turns if i < turn_index)

    def add(self, conversation_id: str, turn_index: int, turn: Turn) -> None:
        if self.max_turns == 0:
            return
        turns = self._data.get(conversation_id)
        if turns is None:
            turns = self._data[conversation_id] = deque(maxlen=self.max_turns)
            while len(self._data) > self.max_conversations:
                self._data.popitem(last=False)
        elif turns and turn_index <= turns[-1][0]:
            return  # replay or out-of-order duplicate
        turns.append((turn_index, turn))
        self._data.move_to_end(conversation_id)

    def __len__(self) -> int:
        return len(self._data)
