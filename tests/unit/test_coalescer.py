"""Coalescer: the calls of one event-loop turn (or of a linger) go out as one batch."""

from __future__ import annotations

import asyncio

import pytest

from shared.coalescer import Coalescer


class Doubler:
    """A flush that records the batches it was given."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_with = fail_with

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 2 for item in items]


async def test_calls_of_one_turn_share_a_batch_and_get_their_own_answers() -> None:
    flush = Doubler()
    double = Coalescer(flush)
    answers = await asyncio.gather(*(double(n) for n in range(5)))
    assert answers == [0, 2, 4, 6, 8]
    assert flush.batches == [[0, 1, 2, 3, 4]]


async def test_later_calls_make_a_new_batch() -> None:
    flush = Doubler()
    double = Coalescer(flush)
    assert await double(1) == 2
    assert await asyncio.gather(double(2), double(3)) == [4, 6]
    assert flush.batches == [[1], [2, 3]]


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_is_tried_afresh() -> None:
    flush = Doubler(fail_with=ConnectionError("redis went away"))
    double = Coalescer(flush)
    results = await asyncio.gather(double(1), double(2), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
    flush.fail_with = None
    assert await double(3) == 6


async def test_an_item_that_always_fails_fails_its_caller_alone() -> None:
    batches: list[list[int]] = []

    async def refuse_13(items: list[int]) -> list[int]:
        batches.append(items)
        if 13 in items:
            raise ValueError("13 is too large")
        return [item * 2 for item in items]

    double = Coalescer(refuse_13)
    results = await asyncio.gather(double(1), double(13), double(2), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    assert batches == [[1, 13, 2], [1], [13], [2]]


async def test_a_flush_answering_the_wrong_number_of_results_fails_the_callers() -> None:
    async def nothing(items: list[int]) -> list[int]:
        return []

    lossy = Coalescer(nothing)
    with pytest.raises(RuntimeError, match="a batch of 1 answered 0 results"):
        await asyncio.gather(lossy(1), lossy(2))


async def test_a_cancelled_caller_is_left_out_of_the_batch() -> None:
    flush = Doubler()
    double = Coalescer(flush)
    first = asyncio.ensure_future(double(1))
    second = asyncio.ensure_future(double(2))
    await asyncio.sleep(0)  # both queued, the batch not yet started
    first.cancel()
    assert await second == 4
    assert first.cancelled()
    assert flush.batches == [[2]]


async def test_close_cancels_a_batch_under_way_and_its_callers() -> None:
    started = asyncio.Event()

    async def hang(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    stuck = Coalescer(hang)
    caller = asyncio.ensure_future(stuck(1))
    await started.wait()
    await stuck.close()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_close_cancels_calls_not_yet_sent_and_batches_not_yet_started() -> None:
    flush = Doubler()
    double = Coalescer(flush)
    queued = asyncio.ensure_future(double(1))
    await asyncio.sleep(0)  # queued; its batch starts on the next turn
    await double.close()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert flush.batches == []


async def test_with_a_linger_calls_of_later_turns_join_the_batch_until_it_ends() -> None:
    flush = Doubler()
    double = Coalescer(flush, linger_s=0.5)
    first = asyncio.ensure_future(double(1))
    for _ in range(5):  # several turns later, still within the linger
        await asyncio.sleep(0)
    second = asyncio.ensure_future(double(2))
    assert await asyncio.gather(first, second) == [2, 4]
    assert await double(3) == 6  # after the batch: a batch of its own
    assert flush.batches == [[1, 2], [3]]


async def test_close_cancels_calls_lingering() -> None:
    flush = Doubler()
    double = Coalescer(flush, linger_s=10)
    waiting = asyncio.ensure_future(double(1))
    await asyncio.sleep(0)
    await double.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert flush.batches == []
