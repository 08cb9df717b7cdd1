"""Wake-ups: named events reach their local listeners, and the cross-process ones reach the
other coordinators on ``redisq:wake`` as the bare worker name (the earlier versions' format);
on a Redis Cluster on each worker's sharded channel, which lives on the worker's master."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from redisq.connection import is_cluster
from redisq.keys import WAKE_CHANNEL, WorkerKeys
from redisq.wakeups import CROSS_PROCESS, Event, Wakeups

WORKERS = ("first", "v", "w")


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[Event, tuple[Any, ...]]] = []

    def listener(self, event: Event) -> Any:
        return lambda *args: self.calls.append((event, args))


def listening(wakeups: Wakeups) -> Heard:
    heard = Heard()
    for event in Event:
        wakeups.subscribe(event, heard.listener(event))
    return heard


async def until_heard(heard: Heard, send: Any, within_s: float = 5.0) -> None:
    """The listener subscribes in the background: send until it hears."""
    deadline = time.monotonic() + within_s
    while not heard.calls:
        assert time.monotonic() < deadline, "the listener heard nothing"
        await send()
        await asyncio.sleep(0.02)


async def until(condition: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_an_event_wakes_its_own_listeners_here_with_its_details(engine_redis):
    wakeups = Wakeups(engine_redis)
    heard = listening(wakeups)
    wakeups.publish(Event.RETRY_DUE, "w")
    wakeups.publish(Event.LEASE_STARTED, "w", 30_000)
    wakeups.deliver(Event.JOBS_DUE, "v")
    assert heard.calls == [(Event.RETRY_DUE, ("w",)), (Event.LEASE_STARTED, ("w", 30_000)), (Event.JOBS_DUE, ("v",))]
    one = Heard()
    wakeups.subscribe((Event.JOBS_DUE, Event.SLOT_FREED), one.listener(Event.JOBS_DUE))
    await wakeups.publish_and_wait(Event.SLOT_FREED, "w")
    assert one.calls == [(Event.JOBS_DUE, ("w",))]


async def test_cross_process_events_reach_the_others_as_the_bare_worker_name(engine_redis):
    """Only JOBS_DUE and SLOT_FREED leave the process; the message is the worker's name, and
    a coordinator receiving one wakes its claim loop (JOBS_DUE)."""
    assert {Event.JOBS_DUE, Event.SLOT_FREED} == CROSS_PROCESS
    here, there = Wakeups(engine_redis, WORKERS), Wakeups(engine_redis, WORKERS)
    heard_there = listening(there)
    raw = engine_redis.pubsub()
    sharded = is_cluster(engine_redis)
    if sharded:  # each worker's own channel, on its master
        await raw.ssubscribe(*(WorkerKeys(worker).wake_channel for worker in WORKERS))
    else:
        await raw.subscribe(WAKE_CHANNEL)
    await there.start()
    try:
        await until_heard(heard_there, lambda: here.publish_and_wait(Event.JOBS_DUE, "first"))
        await asyncio.sleep(0.1)
        heard_there.calls.clear()
        for event in (Event.SLOT_FREED, Event.RETRY_DUE, Event.SCHEDULE_CHANGED):
            here.publish(event, "w")
        here.publish(Event.LEASE_STARTED, "w", 100)
        await here.publish_and_wait(Event.JOBS_DUE, "v")
        await until(lambda: len(heard_there.calls) >= 2)
        await asyncio.sleep(0.1)
        # (SLOT_FREED was sent in the background, JOBS_DUE awaited: either may come first)
        assert sorted(heard_there.calls) == [(Event.JOBS_DUE, ("v",)), (Event.JOBS_DUE, ("w",))]
        seen = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if sharded:
                message = await raw.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
            else:
                message = await raw.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                seen.append(message["data"])
        if sharded:  # each master's channel is read on its own connection: no order across them
            assert {b"v", b"w"} <= set(seen) <= {b"first", b"v", b"w"}
        else:
            assert sorted(seen[-2:]) == [b"v", b"w"] and set(seen) <= {b"first", b"v", b"w"}
    finally:
        await there.stop()
        await raw.aclose()
    assert all(task.done() for task in there.tasks)


async def test_a_message_of_an_earlier_version_wakes_the_claim_loop(engine_redis_not_cluster):
    # Not on a cluster: earlier versions could not reach one, so no message of theirs is there.
    engine_redis = engine_redis_not_cluster
    there = Wakeups(engine_redis)
    heard = listening(there)
    await there.start()
    try:
        await until_heard(heard, lambda: engine_redis.publish(WAKE_CHANNEL, "w"))
        assert set(heard.calls) == {(Event.JOBS_DUE, ("w",))}
    finally:
        await there.stop()


@pytest.mark.parametrize("slot", [None, "shopify"])
async def test_on_a_cluster_a_wake_up_stays_on_its_workers_master(cluster_redis, slot):
    """SPUBLISH reaches only the subscribers of the worker's master: the wake-up of a worker
    is not copied to the other masters (PUBLISH on a cluster goes to every node). A worker
    naming a shared limit (``slot``) lives on the limit's master: its wake-ups stay there."""
    engine_redis = cluster_redis
    slots = {"w": slot}
    there = Wakeups(engine_redis, WORKERS, slots)
    heard = listening(there)
    await there.start()
    try:
        await until_heard(heard, lambda: Wakeups(engine_redis, slots=slots).publish_and_wait(Event.JOBS_DUE, "w"))
        channel = WorkerKeys("w", slot).wake_channel
        counts = {node.name: (await engine_redis.execute_command("PUBSUB", "SHARDNUMSUB", channel,
                                                                 target_nodes=node))
                  for node in engine_redis.get_primaries()}
        owner = engine_redis.get_node_from_key(WorkerKeys("w", slot).job("a")).name  # the master of its keys
        subscribers = {name: dict(zip(reply[::2], reply[1::2], strict=True)).get(channel.encode(), 0)
                       for name, reply in counts.items()}
        assert subscribers[owner] >= 1
        assert all(count == 0 for name, count in subscribers.items() if name != owner)
    finally:
        await there.stop()
