"""Calls made in the same event-loop turn, sent as one batch.

Every action the dispatcher handles makes the same few small requests (its outcome lookup,
its outcome record, its history record). Concurrent deliveries reach those requests in the
same turn of the event loop, so a :class:`Coalescer` queues them and runs them together on the
next turn: one Redis pipeline or one Kafka record batch per partition instead of one round
trip each, while each caller still awaits its own answer (or the batch's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """``await coalescer(item)``: the items of one turn go to ``flush`` together, which
    answers one result per item, in order."""

    def __init__(self, flush: Callable[[list[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._flush = flush
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        pending, self._pending = self._pending, []
        task = asyncio.create_task(self._run(pending), name="coalesced-flush")
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run(self, pending: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        # Callers that were cancelled meanwhile are left out; each caller handles errors
        # (retries) itself, so a failed batch fails every waiting caller.
        live = [(item, future) for item, future in pending if not future.done()]
        if not live:
            return
        try:
            results = await self._flush([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"a batch of {len(live)} answered {len(results)} results")
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller, who handles it
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Cancel batches still under way (their callers are cancelled with them)."""
        for task in list(self._flushing):
            task.cancel()
        if self._flushing:
            await asyncio.wait(self._flushing)
