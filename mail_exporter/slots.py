"""A bound on work in flight whose waiters queue fairly: scheduled probes and password checks.

Like :class:`asyncio.Semaphore`, with three differences both users need:

- the bound can change while slots are held (:meth:`Slots.resize`): a reload that
  changes ``global.concurrency`` keeps counting the probes in flight, so lowering it
  starts nothing until they are below it, and raising it starts waiters at once;
- waiters queue per bucket and buckets take turns, so one busy bucket (guesses at
  one user's password) cannot starve another (a user with the right one);
- a bucket's queue can be capped: past it, :meth:`Slots.acquire` raises
  :class:`SlotsFull` at once instead of queueing without limit.

A waiter handed a slot in the moment it is cancelled gives the slot on, so
cancellation never leaks one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class SlotsFull(Exception):
    """The bucket's queue is at its cap: come back later."""


class Slots:
    """``limit`` slots; waiters served one bucket after another, each bucket in order."""

    def __init__(self, limit: int, max_waiting: int | None = None) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        """Waiters allowed per bucket; None: no cap."""
        self.in_use = 0
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._hand_on()

    @property
    def queued(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def acquire(self, bucket: Hashable = None) -> None:
        """Wait for a slot (then :meth:`release` it); :class:`SlotsFull` if the bucket's
        queue is full."""
        if self.in_use < self.limit and not self._waiting:
            self.in_use += 1
            return
        queue = self._waiting.setdefault(bucket, deque())
        if self.max_waiting is not None and len(queue) >= self.max_waiting:
            raise SlotsFull
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter  # a slot is counted for us once this is done
        except asyncio.CancelledError:
            if not waiter.cancelled():  # handed a slot in the same moment: give it on
                self.release()
            elif waiter in queue:
                queue.remove(waiter)
                if not queue and self._waiting.get(bucket) is queue:
                    del self._waiting[bucket]
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._hand_on()

    @asynccontextmanager
    async def slot(self, bucket: Hashable = None) -> AsyncIterator[None]:
        await self.acquire(bucket)
        try:
            yield
        finally:
            self.release()

    def _hand_on(self) -> None:
        while self._waiting and self.in_use < self.limit:
            bucket, queue = next(iter(self._waiting.items()))
            waiter = queue.popleft()
            del self._waiting[bucket]
            if queue:  # to the back of the line: the next bucket goes first
                self._waiting[bucket] = queue
            if not waiter.done():  # a cancelled one has left already
                self.in_use += 1
                waiter.set_result(None)
