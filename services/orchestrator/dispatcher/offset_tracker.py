"""Which offsets may be committed while deliveries finish out of order.

Records of one partition are handed to concurrent deliveries; the committed position is
the first record whose delivery has not finished, so a crash replays only unfinished ones
(and the finished ones that follow them, which the delivery log then skips).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(slots=True)
class _Partition:
    in_order: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    next_position: int | None = None  # offset after the highest tracked record
    committed: int | None = None


class OffsetTracker(Generic[P]):
    """Offsets in flight per partition; no I/O."""

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}

    @property
    def in_flight(self) -> int:
        return sum(len(p.in_order) for p in self._partitions.values())

    def track(self, partition: P, offset: int) -> None:
        """A record was read; offsets of one partition arrive in increasing order."""
        state = self._partitions.setdefault(partition, _Partition())
        state.in_order.append(offset)
        state.next_position = offset + 1

    def finish(self, partition: P, offset: int) -> None:
        """A record's effects are durable."""
        state = self._partitions.get(partition)
        if state is None:
            return  # the partition was handed over meanwhile
        state.finished.add(offset)
        while state.in_order and state.in_order[0] in state.finished:
            state.finished.discard(state.in_order.popleft())

    def committable(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Positions that moved since the last :meth:`committed`."""
        chosen = self._partitions.keys() if partitions is None else partitions
        offsets: dict[P, int] = {}
        for partition in chosen:
            state = self._partitions.get(partition)
            if state is None or state.next_position is None:
                continue
            position = state.in_order[0] if state.in_order else state.next_position
            if position != state.committed:
                offsets[partition] = position
        return offsets

    def committed(self, offsets: dict[P, int]) -> None:
        for partition, position in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = position

    def forget(self, partitions: Iterable[P]) -> None:
        """The partitions were handed to another consumer."""
        for partition in partitions:
            self._partitions.pop(partition, None)
