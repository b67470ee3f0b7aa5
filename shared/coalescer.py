"""Calls made close together, sent as one batch.

Every action the dispatcher handles makes the same few small requests (its outcome lookup,
its outcome record, its history record), and every tracking request of ingest produces a few
records. Concurrent callers reach those requests at nearly the same time, so a
:class:`Coalescer` queues them and runs them together, on the next turn of the event loop or
after a short linger: one Redis pipeline or one Kafka record batch per partition instead of
one round trip each, while each caller still awaits its own answer (or the batch's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """``await coalescer(item)``: the items of one turn (or of ``linger_s`` from the first
    one) go to ``flush`` together, which answers one result per item, in order."""

    def __init__(
        self,
        flush: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        linger_s: float = 0.0,
    ) -> None:
        self._flush = flush
        self._linger_s = linger_s
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Handle | None = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            if self._linger_s > 0:
                self._timer = loop.call_later(self._linger_s, self._start)
            else:
                self._timer = loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, []
        task = asyncio.create_task(self._run(pending), name="coalesced-flush")
        self._flushing.add(task)
        task.add_done_callback(partial(self._finished, pending))

    def _finished(
        self, pending: list[tuple[Item, asyncio.Future[Result]]], task: asyncio.Task[None]
    ) -> None:
        self._flushing.discard(task)
        for _, future in pending:  # left unanswered only by a batch cancelled (close())
            if not future.done():
                future.cancel()

    async def _run(self, pending: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        # Callers that were cancelled meanwhile are left out. Each caller handles errors
        # (retries) itself; when a batch fails, its items are tried once more one by one, so
        # that one item that always fails (a record too large) fails its caller alone.
        live = [(item, future) for item, future in pending if not future.done()]
        if not live:
            return
        try:
            answers: Sequence[Result | BaseException] = await self._answers(
                [item for item, _ in live]
            )
        except Exception as exc:  # noqa: BLE001 - handed to the callers below
            if len(live) == 1:
                answers = [exc]
            else:
                alone = [self._answers([item]) for item, _ in live]
                answers = [
                    a if isinstance(a, BaseException) else a[0]
                    for a in await asyncio.gather(*alone, return_exceptions=True)
                ]
        for (_, future), answer in zip(live, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, asyncio.CancelledError):
                future.cancel()
            elif isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _answers(self, items: list[Item]) -> Sequence[Result]:
        results = await self._flush(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} answered {len(results)} results")
        return results

    async def close(self) -> None:
        """Cancel the calls not yet sent and the batches under way (with their callers)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for _, future in pending:
            future.cancel()
        for task in list(self._flushing):
            task.cancel()
        if self._flushing:
            await asyncio.wait(self._flushing)
