"""The bound on work in flight: order across buckets, caps, resizing and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from mail_exporter.slots import Slots, SlotsFull


async def test_buckets_take_turns_and_each_keeps_its_order() -> None:
    slots = Slots(1)
    await slots.acquire()
    served: list[str] = []

    async def wait(bucket: str, name: str) -> None:
        async with slots.slot(bucket):
            served.append(name)

    waiters = [
        asyncio.create_task(wait(bucket, name))
        for bucket, name in (("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"))
    ]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert served == ["a1", "b1", "c1", "a2", "a3"]
    assert slots.in_use == 0


async def test_a_full_bucket_refuses_at_once_and_others_still_queue() -> None:
    slots = Slots(1, max_waiting=2)
    await slots.acquire()
    queued = [asyncio.create_task(slots.acquire("a")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(SlotsFull):
        await slots.acquire("a")
    other = asyncio.create_task(slots.acquire("b"))
    await asyncio.sleep(0)
    assert slots.queued == 3
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*queued, other), 5)
    assert slots.in_use == 1 and slots.queued == 0


async def test_cancelled_waiters_never_keep_a_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    left = asyncio.create_task(slots.acquire("a"))
    handed = asyncio.create_task(slots.acquire("a"))
    last = asyncio.create_task(slots.acquire("b"))
    await asyncio.sleep(0)
    left.cancel()  # gave up while waiting
    await asyncio.sleep(0)
    slots.release()  # hands the slot to ``handed``...
    handed.cancel()  # ...which is cancelled before it could use it: it passes it on
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(last, 5)
    assert slots.in_use == 1 and slots.queued == 0


async def test_resizing_counts_the_slots_in_use() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    slots.resize(1)
    slots.release()
    await asyncio.sleep(0.01)
    assert not waiter.done()  # one still in use: at the new bound
    slots.resize(3)
    await asyncio.wait_for(waiter, 5)
    assert slots.in_use == 2
