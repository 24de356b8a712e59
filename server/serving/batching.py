"""Dynamic batching across devices: activation batches for the same model version and cut, from any
stream, run the tail as one batch (Triton's dynamic batcher is the model).

Each (model, version, cut) has a lane. The first waiting batch's thread leads: it waits up to
`max_delay_s` after that batch arrived for others to join (only while other streams have sent to the
lane within the last second: a lone device never waits, nor does a batch whose deadline is near),
takes batches earliest deadline first (then in arrival order) up to `max_inputs` inputs (and the
tail's own bound), runs them as one through one admission slot, and hands each batch its rows. A
batch that can no longer finish by its deadline once the slot is granted is shed (DeadlineExceeded)
instead of computed. Request ids, order within a stream and resends are untouched: each stream still
gets its own answers for its own ids. An error in the shared run is every member's error.
"""
import asyncio
import collections
import contextlib
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from qpart.common.errors import Cancelled, DeadlineExceeded

ACTIVE_WINDOW_S = 1.0      # a stream that sent to a lane within this long may join the next batch


@dataclass
class Item:
    x: list[np.ndarray]                  # decoded tensors that cross the cut, each [n, *sample_shape]
    n: int                               # inputs in this batch
    source: int                          # the stream it came from
    deadline: float = math.inf           # time.perf_counter() by which its answer must be ready
    need_s: float = 0.0                  # the tail's measured time: it must start by deadline - need_s
    arrived: float = field(default_factory=time.perf_counter)
    outputs: list[np.ndarray] | None = None
    error: BaseException | None = None
    tail_s: float = 0.0                  # seconds the shared tail run took
    waited_s: float = 0.0                # seconds from arrival to the start of that run
    batch_inputs: int = 0                # inputs in the shared run
    done: bool = False
    context: object = None               # what a joint run needs of this item beside x (a generation session)
    waiter: object = None                # the asyncio future the event-loop batcher (arun) resolves when done


class Lane:
    def __init__(self, max_delay_s: float):
        self.max_delay_s = max_delay_s
        self.arrival: asyncio.Event | None = None      # set on each join (the event-loop batcher)
        self.leader: asyncio.Task | None = None        # the task running the lane's batches (the event-loop batcher)
        self.cond = threading.Condition()
        self.pending: list[Item] = []
        self.leading = False
        self.seen: dict[int, float] = {}         # source -> when it last sent

    def others_active(self, source: int, now: float) -> bool:
        self.seen = {s: t for s, t in self.seen.items() if now - t < ACTIVE_WINDOW_S}
        return any(s != source for s in self.seen)

    def join(self, item: Item) -> None:
        self.seen[item.source] = item.arrived
        self.pending.append(item)

    def wait_until(self) -> float:
        """The latest the lane's next run waits for company: its first batch's arrival plus the delay, or
        sooner where a deadline needs it."""
        first = min(self.pending, key=lambda i: i.arrived)
        return min(first.arrived + self.max_delay_s, min(i.deadline - i.need_s for i in self.pending))

    def company_wait(self, cap: int, source: int, until: float) -> float:
        """Seconds the next run may still wait for company (0: run now): while it is short of cap inputs, other
        streams than `source` have sent to the lane lately, and `until` has not passed."""
        if sum(i.n for i in self.pending) >= cap or not self.others_active(source, time.perf_counter()):
            return 0.0
        return max(until - time.perf_counter(), 0.0)

    def take(self, cap: int) -> list[Item]:
        """The next run's batches, earliest deadline first, up to cap inputs."""
        self.pending.sort(key=lambda i: (i.deadline, i.arrived))
        batch, total = [], 0
        for i in self.pending:
            if batch and total + i.n > cap:
                break
            batch.append(i)
            total += i.n
        del self.pending[:len(batch)]
        return batch


class TailBatcher:
    def __init__(self, max_inputs: int, max_delay_s: float):
        self.max_inputs, self.max_delay_s = max_inputs, max_delay_s
        self._lanes: dict[tuple, Lane] = {}
        self._lock = threading.Lock()
        self.runs = 0              # tail runs
        self.merged = 0            # batches that ran together with another stream's
        self.waits = 0             # times a leader waited for company (never while its stream is alone)
        self.sizes: collections.Counter[int] = collections.Counter()   # inputs in a run -> runs of that size

    def lane(self, key: tuple) -> Lane:
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(self.max_delay_s)
            return lane

    def forget(self, key: tuple, source: int) -> None:
        """The source sends no more to this lane (a closed generation session): it is no company to wait for."""
        lane = self.lane(key)
        with lane.cond:
            lane.seen.pop(source, None)

    def run(self, key: tuple, item: Item, tail, slot, limit: int, joint: bool = False) -> Item:
        """Run `tail(tensors) -> outputs` over this item's batch joined with others of the lane, inside
        `slot(start_by)` (the admission slot; yields the seconds waited); `limit` bounds the inputs of one
        run (the tail's memory bound). Returns the item with its rows of the outputs. joint: `tail(items)`
        runs the items itself (their x need not stack) and returns each item's outputs."""
        lane = self.lane(key)
        with lane.cond:
            lane.join(item)
            lane.cond.notify_all()
            while not item.done:
                if lane.leading:
                    lane.cond.wait()
                    continue
                lane.leading = True
                batch = self._gather(lane, min(self.max_inputs, limit), item.source)
                lane.cond.release()
                try:
                    self._compute(batch, tail, slot, joint)
                finally:
                    lane.cond.acquire()
                    lane.leading = False
                    lane.cond.notify_all()
        if item.error is not None:
            raise item.error
        return item

    def _gather(self, lane: Lane, cap: int, source: int) -> list[Item]:
        """Called holding lane.cond: wait for company while it may come, then take batches earliest deadline
        first."""
        until = lane.wait_until()
        while (remaining := lane.company_wait(cap, source, until)) > 0:
            self.waits += 1            # under lane.cond, which only this leader holds while it gathers
            lane.cond.wait(remaining)
        return lane.take(cap)

    async def arun(self, key: tuple, item: Item, tail, slot, limit: int, pool) -> Item:
        """run() for callers on an asyncio event loop: the item waits as a future, not a thread; one task per lane
        gathers batches by the same rules and hands each run to `pool` (one thread handoff per batch). Every
        caller of arun is on the same loop."""
        lane = self.lane(key)
        item.waiter = asyncio.get_running_loop().create_future()
        lane.join(item)
        if lane.arrival is None:
            lane.arrival = asyncio.Event()
        lane.arrival.set()
        if lane.leader is None:
            lane.leader = asyncio.create_task(self._lead(lane, min(self.max_inputs, limit), tail, slot, pool))
        await item.waiter
        if item.error is not None:
            raise item.error
        return item

    async def _lead(self, lane: Lane, cap: int, tail, slot, pool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while lane.pending:
                until, source = lane.wait_until(), min(lane.pending, key=lambda i: i.arrived).source
                while (remaining := lane.company_wait(cap, source, until)) > 0:
                    self.waits += 1
                    lane.arrival.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lane.arrival.wait(), remaining)
                batch = lane.take(cap)
                try:
                    await loop.run_in_executor(pool, self._compute, batch, tail, slot)
                finally:
                    _settle(batch)     # a batch whose run never started (the loop is closing) ends Cancelled
        finally:
            lane.leader = None
            leftover, lane.pending = lane.pending, []     # cancelled with batches waiting: none is left hanging
            _settle(leftover)

    def _compute(self, batch: list[Item], tail, slot, joint: bool = False) -> None:
        live = run_together(batch, tail, slot, joint)
        with self._lock:
            self.runs += bool(live)
            if live:
                self.sizes[sum(i.n for i in live)] += 1
            self.merged += len(live) if len(live) > 1 else 0


def _settle(items: list[Item]) -> None:
    """Resolve the event-loop waiters of items whose run is over; one that never ran ends Cancelled."""
    for i in items:
        if not i.done:
            i.error, i.done = Cancelled("the server stopped before the batch ran"), True
        if not i.waiter.done():
            i.waiter.set_result(None)


def run_alone(item: Item, tail, slot, joint: bool = False) -> Item:
    """One batch through the same admission and deadline rules, without joining others."""
    run_together([item], tail, slot, joint)
    if item.error is not None:
        raise item.error
    return item


def run_together(batch: list[Item], tail, slot, joint: bool = False) -> list[Item]:
    """Run the batches' tail as one inside one admission slot; shed those that could no longer finish by their
    deadline when the slot came; returns those computed. Every item is done on return."""
    started = time.perf_counter()
    live: list[Item] = []
    try:
        with slot(max(i.deadline - i.need_s for i in batch)) as queued_s:
            now = time.perf_counter()
            for i in batch:
                if now + i.need_s > i.deadline:
                    i.error, i.done = DeadlineExceeded(
                        f"shed: a compute slot came {1e3 * (now - i.arrived):.0f} ms after arrival, too late to "
                        f"finish the tail ({1e3 * i.need_s:.1f} ms) by the deadline"), True
            live = [i for i in batch if not i.done]
            if not live:
                return []
            began = time.perf_counter()
            if joint:
                outputs = tail(live)                                           # each item's own outputs
            else:
                x = live[0].x if len(live) == 1 else [np.concatenate(parts) for parts in zip(*(i.x for i in live))]
                outputs = tail(x)                                              # each [sum of n, ...]
            tail_s = time.perf_counter() - began
    except BaseException as e:          # every member gets the error, and the leader's own call raises it
        for i in batch:
            if not i.done:
                i.error, i.done = e, True
        return []
    total, start = sum(i.n for i in live), 0
    for j, i in enumerate(live):
        i.outputs = outputs[j] if joint else [o[start:start + i.n] for o in outputs]
        i.tail_s, i.waited_s, i.batch_inputs, i.done = tail_s, started - i.arrived + queued_s, total, True
        start += i.n
    return live
