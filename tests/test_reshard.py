"""Resharding a worker's slot on a real Redis Cluster, while its jobs are enqueued,
claimed and settled: no script runs half while the slot moves (lua/includes/slot.lua), so
no job is lost, none is left running, and an attempt is counted only for a call that left.

The slot is moved by the steps ``redis-cli --cluster reshard`` takes (SETSLOT IMPORTING on
the new master, MIGRATING on the old one, MIGRATE its keys a few at a time, SETSLOT NODE),
slowed down between batches so that the engine's calls land in every phase of it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis_cluster import RedisCluster

from redisq.config import Config, WorkerConfig
from redisq.connection import ClusterClient, connect
from redisq.engine import Engine, Receipt
from redisq.errors import UnavailableError
from redisq.keys import WorkerKeys
from redisq.model import JobState, parse_enqueue

WORKER = "reshard"
KEYS = WorkerKeys(WORKER)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    started = RedisCluster(masters=3).start()
    try:
        yield started
    finally:
        started.stop()


def make_engine(client: Any, **limits: Any) -> Engine:
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/reshard", max_attempts=3, **limits)
    return Engine(client, Config(workers={WORKER: worker}))


@pytest.fixture
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = connect(cluster.url, cluster=True)  # the client `serve` runs on a cluster
    assert isinstance(client, ClusterClient)
    await client.initialize()
    await client.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()


def worker_slot(cluster: RedisCluster) -> int:
    return cluster.slot_of(KEYS.tag)


class SlotMove:
    """Moves one slot from the master that owns it to another, as redis-cli --cluster
    reshard does, with a pause after each batch of keys; ``start_migrating()`` and
    ``finish()`` can also be called by hand to hold the slot mid-move."""

    def __init__(self, cluster: RedisCluster, slot: int, keys_per_batch: int = 10, pause_s: float = 0.005):
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.node_for_slot(slot)
        self.target = next(node for node in cluster.nodes if node is not self.source)
        self.keys_per_batch = keys_per_batch
        self.pause_s = pause_s
        self.keys_moved = 0

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def start_migrating(self) -> None:
        source_id, target_id = self.cluster.node_id(self.source.port), self.cluster.node_id(self.target.port)
        self.client(self.target.port).execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", source_id)
        self.client(self.source.port).execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", target_id)

    def move_keys(self, most: int | None = None) -> None:
        source = self.client(self.source.port)
        moved_now = 0
        while most is None or moved_now < most:
            batch = self.keys_per_batch if most is None else min(self.keys_per_batch, most - moved_now)
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, batch)
            if not keys:
                return
            source.execute_command("MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys)
            moved_now += len(keys)
            self.keys_moved += len(keys)
            time.sleep(self.pause_s)

    def finish(self) -> None:
        target_id = self.cluster.node_id(self.target.port)
        for node in self.cluster.live_nodes():
            self.client(node.port).execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", target_id)
        self.cluster.wait_until_ok()

    def run(self) -> None:
        self.start_migrating()
        self.move_keys()
        self.finish()


def request(engine: Engine, **body: Any) -> Any:
    return parse_enqueue({"worker": WORKER, **body}, engine.config.workers)


async def slot_contents(cluster: RedisCluster, slot: int) -> dict[str, bytes]:
    """Every key of the slot on every master, dumped (a job's hash, its queue, ...)."""
    contents: dict[str, bytes] = {}
    for port in cluster.master_ports():
        node = redis.Redis(host="127.0.0.1", port=port)
        keys = node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000)
        reads = node.pipeline(transaction=False)
        for key in keys:
            reads.execute_command("ASKING")  # the node the slot moves to answers only after ASKING
            reads.dump(key)
        dumps = reads.execute()[1::2]
        contents.update((f"{port}:{key.decode()}", dump or b"") for key, dump in zip(keys, dumps, strict=True))
    return contents


async def test_no_script_runs_while_the_slot_is_held_mid_move_and_all_run_after(
        cluster_client: ClusterClient, cluster: RedisCluster) -> None:
    """The case that lost jobs: every key a claim names exists (a job is running, the
    buckets are written, the claim's reply key is there), the slot is marked MIGRATING with
    no key moved yet, and a claim empties the queue. It used to set the jobs running, then
    fail on re-reading the emptied queue, leaving them in no queue and without a lease.
    Now every script call is refused whole (503, nothing written) with none, some or most
    keys moved; once the slot has moved, the jobs are claimed at attempt 1 and succeed."""
    engine = make_engine(cluster_client, rate=1000, burst=1000, total_rate=1000, total_burst=1000)
    w = engine.config.workers[WORKER]
    for n in range(21):
        await engine.enqueue(request(engine, id=f"j{n}", args={"n": n}))
    first = await engine.claim(w, 1)  # left running: the running zset exists; so do the buckets
    assert [job.suffix for job in first.jobs] == ["j0"]
    await engine.redis.set(KEYS.reply(""), "{}")  # an untagged claim's reply key (never read)
    slot = worker_slot(cluster)
    move = SlotMove(cluster, slot)
    move.start_migrating()
    try:
        for moved_first in (0, 7, 13):  # none moved; a job's keys split; most moved
            move.move_keys(moved_first - move.keys_moved)
            before = await slot_contents(cluster, slot)
            with pytest.raises(UnavailableError, match="TRYAGAIN|TTL exhausted|reconfiguring"):
                await engine.claim(w, 100)
            with pytest.raises(UnavailableError):
                await engine.enqueue(request(engine, id="during", args={}))
            with pytest.raises(UnavailableError):
                await engine.reap(w)
            assert await slot_contents(cluster, slot) == before, "a refused script changed the slot"
    finally:
        move.move_keys()
        move.finish()
    await engine.settle(w, [Receipt("j0", 1, "success")])
    claimed: list[str] = []
    while len(claimed) < 20:
        claim = await engine.claim(w, 10)
        assert claim.jobs, "the jobs did not come back after the move"
        assert {job.attempt for job in claim.jobs} == {1}
        await engine.settle(w, [Receipt(job.suffix, job.attempt, "success") for job in claim.jobs])
        claimed += [job.suffix for job in claim.jobs]
    assert sorted(claimed) == sorted(f"j{n}" for n in range(1, 21))
    assert (await engine.get(f"{WORKER}:j3")).state == JobState.SUCCEEDED
    assert await engine.redis.zcard(KEYS.running) == 0


async def test_a_live_reshard_while_jobs_flow_loses_nothing(cluster_client: ClusterClient,
                                                           cluster: RedisCluster) -> None:
    """Jobs are enqueued in batches and claimed and settled by two loops while the worker's
    slot moves to another master and back. Afterwards every job has succeeded at its first
    attempt (every claimed job was settled at once, so a second attempt would be one that
    never left), nothing is running, and every call refused meanwhile was a 503. (The
    worker has buckets, and the claims' reply key is there, so that every key a claim names
    exists while jobs flow.)"""
    engine = make_engine(cluster_client, rate=20_000, burst=20_000, total_rate=20_000, total_burst=20_000)
    w = engine.config.workers[WORKER]
    await cluster_client.set(KEYS.reply(""), "{}")  # an untagged claim's reply key (never read)
    total_jobs, batch = 3000, 50
    refused: dict[str, int] = {"enqueue": 0, "claim": 0, "settle": 0}
    calls_while_moving: dict[str, int] = {"enqueue": 0, "claim": 0}
    moving = threading.Event()
    other_errors: list[BaseException] = []
    enqueued: set[str] = set()
    settled: list[tuple[str, int]] = []
    producing = True

    async def produce() -> None:
        nonlocal producing
        n = 0
        while n < total_jobs:
            requests = [request(engine, id=f"live-{n + i}", args={"n": n + i}) for i in range(batch)]
            if moving.is_set():
                calls_while_moving["enqueue"] += 1
            try:
                await engine.enqueue_many(requests)
            except UnavailableError:
                refused["enqueue"] += 1
                await asyncio.sleep(0.01)
                continue  # the same ids again: an enqueue of an id that exists changes nothing
            except Exception as e:  # noqa: BLE001 - anything but a 503 fails the test below
                other_errors.append(e)
                await asyncio.sleep(0.01)
                continue
            enqueued.update(f"live-{n + i}" for i in range(batch))
            n += batch
            await asyncio.sleep(0.05)  # about 4 s of enqueueing: the moves happen meanwhile
        producing = False

    async def consume() -> None:
        while producing or len(settled) < total_jobs:
            if moving.is_set():
                calls_while_moving["claim"] += 1
            try:
                claim = await engine.claim(w, 100)
            except UnavailableError:
                refused["claim"] += 1
                await asyncio.sleep(0.01)
                continue
            except Exception as e:  # noqa: BLE001
                other_errors.append(e)
                await asyncio.sleep(0.01)
                continue
            if not claim.jobs:
                await asyncio.sleep(0.005)
                continue
            receipts = [Receipt(job.suffix, job.attempt, "success") for job in claim.jobs]
            while True:  # a receipt is kept until it is settled, as the dispatcher keeps it
                try:
                    await engine.settle(w, receipts)
                    break
                except UnavailableError:
                    refused["settle"] += 1
                    await asyncio.sleep(0.01)
            settled.extend((job.suffix, job.attempt) for job in claim.jobs)

    slot = worker_slot(cluster)
    moves_done = threading.Event()
    keys_moved = {"there": 0, "back": 0}

    def reshard_there_and_back() -> None:
        time.sleep(0.3)  # jobs are flowing
        there = SlotMove(cluster, slot, keys_per_batch=5, pause_s=0.01)
        moving.set()
        there.run()
        moving.clear()
        time.sleep(0.3)
        back = SlotMove(cluster, slot, keys_per_batch=5, pause_s=0.01)
        moving.set()
        back.run()
        moving.clear()
        keys_moved.update(there=there.keys_moved, back=back.keys_moved)
        moves_done.set()

    reshard = threading.Thread(target=reshard_there_and_back, daemon=True)
    reshard.start()
    await asyncio.wait_for(asyncio.gather(produce(), consume(), consume()), timeout=300)
    reshard.join(120)
    assert moves_done.is_set(), "the slot did not finish moving"
    assert not other_errors, f"calls failed with something other than a 503: {other_errors[:3]}"
    assert min(keys_moved.values()) > 0
    assert min(calls_while_moving.values()) > 0, f"no calls landed while the slot moved: {calls_while_moving}"

    assert len(enqueued) == total_jobs
    assert sorted(suffix for suffix, _ in settled) == sorted(enqueued), "a job was lost or ran twice"
    assert {attempt for _, attempt in settled} == {1}, "an attempt was counted for a call that never left"
    client = engine.redis
    assert await client.zcard(KEYS.running) == 0
    stats = {k.decode(): int(v) for k, v in (await client.hgetall(KEYS.stats)).items()}
    assert stats.get("succeeded") == total_jobs and stats.get("queued", 0) == 0
    states = {(await engine.get(f"{WORKER}:live-{n}")).state for n in range(0, total_jobs, 97)}
    assert states == {JobState.SUCCEEDED}
    print(f"calls while the slot moved: {json.dumps(calls_while_moving)}; refused (503): {json.dumps(refused)}; "
          f"keys moved: {json.dumps(keys_moved)}")
