"""Limits shared by workers, on a real Redis Cluster of 3 masters: the job types naming
``[limits.shopify]`` live in the limit's hash slot (README, Redis Cluster), so their claim
stays one atomic script on a cluster too. Two ``redisq serve`` processes dispatch three job
types sharing Shopify's bucket per shop (``tests/shopify_server.py``) and an unrelated worker
of its own slot, on another master. What is asserted is what a user would check: where the
keys are (``CLUSTER KEYSLOT`` of every key, on the master that holds it), the start-up
summary, no 429, every job succeeded, each shop at 2/s after its burst, and the /limits
routes against the cluster."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import redis
from redis_cluster import RedisCluster

from redisq.keys import LimitKeys, WorkerKeys

from test_cluster import cluster_errors_in, start_cluster, worker_counts
from test_resilience import WorkerSink, client, job, wait_until  # noqa: F401
from test_shared_shopify import JOB_TYPES, enqueue_every_type, start_coordinators
from test_shopify import BUCKET, SHOPS, ShopifyWorker, check_every_shop_at_two_per_second, wait_served

LIMIT = "shopify"
PER_TYPE_PER_SHOP = 33  # 99 calls per shop: 39 at once, then 60 at 2/s, 30 s
OTHER_JOBS = 300


def name_on_another_master(cluster: RedisCluster, than_key: str) -> str:
    """A worker name whose own slot is on another master than ``than_key``'s."""
    taken = cluster.node_for_slot(cluster.slot_of(than_key)).port
    for n in itertools.count():
        name = f"send-email-{n}"
        if cluster.node_for_slot(cluster.slot_of(WorkerKeys(name).tag)).port != taken:
            return name
    raise AssertionError("unreachable")


def keys_by_master(cluster: RedisCluster) -> dict[int, dict[str, int]]:
    """Each master's port -> every redisq key it holds and every sharded channel subscribed
    on it (the coordinators' wake-ups, ``PUBSUB SHARDCHANNELS``), with its slot as it says
    (``CLUSTER KEYSLOT``)."""
    placed = {}
    for port in cluster.master_ports():
        with redis.Redis(port=port) as node:
            keys = [key.decode() for key in node.scan_iter("redisq:*", count=1000)]
            keys += [channel.decode() for channel in node.execute_command("PUBSUB", "SHARDCHANNELS", "redisq:*")]
            pipe = node.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("CLUSTER", "KEYSLOT", key)
            placed[port] = dict(zip(keys, pipe.execute(), strict=True))
    return placed


def check_keys_placed(cluster: RedisCluster, other: str) -> tuple[int, int]:
    """The shared workers' and the limit's keys (and the workers' wake-up channels) all in
    the limit's slot, on its master; the other worker's in its own, on another master.
    Returns the two masters' ports."""
    slot = cluster.slot_of(LimitKeys(LIMIT, LIMIT).limits)
    assert {cluster.slot_of(WorkerKeys(t, LIMIT).tag) for t in JOB_TYPES} == {slot}
    other_slot = cluster.slot_of(WorkerKeys(other).tag)
    shared_master = cluster.node_for_slot(slot).port
    other_master = cluster.node_for_slot(other_slot).port
    assert other_master != shared_master
    placed = keys_by_master(cluster)
    owners = [f"/worker/{t}:" for t in JOB_TYPES] + [f"/limit/{LIMIT}:", f"{{{other}}}:"]
    seen: dict[str, set[tuple[int, int]]] = {owner: set() for owner in owners}
    for port, keys in placed.items():
        for key, key_slot in keys.items():
            assert not any(f"{{{t}}}" in key for t in JOB_TYPES), f"{key} is in a shared worker's own slot"
            for owner in owners:
                if owner in key:
                    seen[owner].add((port, key_slot))
    for owner in owners[:-1]:
        assert seen[owner] == {(shared_master, slot)}, (owner, seen[owner])
    assert seen[owners[-1]] == {(other_master, other_slot)}, seen[owners[-1]]
    assert LimitKeys(LIMIT, LIMIT).limits in placed[shared_master]
    assert {WorkerKeys(t, LIMIT).wake_channel for t in JOB_TYPES} <= set(placed[shared_master])
    assert WorkerKeys(other).wake_channel in placed[other_master]
    return shared_master, other_master


def check_limits_routes(client: httpx.Client, bases: list[str], shopify: ShopifyWorker, other: str) -> None:
    """GET /limits and /limits/shopify, a PATCH seen by the other coordinator, and a paused
    key whose job waits while another key's goes, until it is resumed."""
    listed = client.get(f"{bases[1]}/limits").json()["limits"]
    assert [(lim["name"], lim["slot"], sorted(lim["workers"])) for lim in listed] == [
        (LIMIT, LIMIT, sorted(JOB_TYPES))]
    one = client.get(f"{bases[1]}/limits/{LIMIT}", params={"key": SHOPS[0]})
    assert one.status_code == 200, one.text
    # the shop's bucket the three job types drained, refilling since (it is full 19.5 s after)
    assert one.json()["key"]["paused"] is False and one.json()["key"]["tokens"] < BUCKET // 2, one.text
    patched = client.patch(f"{bases[0]}/limits/{LIMIT}", json={"rate": 4})
    assert patched.status_code == 200 and patched.json()["limits"]["rate"] == 4.0, patched.text
    assert client.get(f"{bases[1]}/limits/{LIMIT}").json()["limits"]["rate"] == 4.0
    workers = {w["name"]: w for w in client.get(f"{bases[1]}/workers").json()["workers"]}
    assert {t: workers[t]["sharedLimits"][0]["rate"] for t in JOB_TYPES} == dict.fromkeys(JOB_TYPES, 4.0)
    assert workers[other]["sharedLimits"] == []

    gone, fresh = "gone.myshopify.com", "fresh.myshopify.com"
    paused = client.post(f"{bases[0]}/limits/{LIMIT}/pause", json={"key": gone})
    assert paused.status_code == 200 and paused.json()["pausedKeys"] == [gone], paused.text
    sent = client.post(f"{bases[1]}/jobs", json={"jobs": [
        {"worker": JOB_TYPES[0], "throttleKey": gone, "args": {"shop": gone, "n": 0}},
        {"worker": JOB_TYPES[1], "throttleKey": fresh, "args": {"shop": fresh, "n": 0}}]})
    assert sent.status_code == 201, sent.text
    gone_id, fresh_id = (j["id"] for j in sent.json()["jobs"])
    wait_until(lambda: job(client, bases[0], fresh_id)["state"] == "succeeded", 10, "the fresh key's job succeeded")
    assert job(client, bases[0], gone_id)["state"] == "scheduled"
    assert gone not in shopify.calls
    resumed = client.post(f"{bases[1]}/limits/{LIMIT}/resume", json={"key": gone})
    assert resumed.status_code == 200 and resumed.json()["pausedKeys"] == [], resumed.text
    wait_until(lambda: job(client, bases[0], gone_id)["state"] == "succeeded", 10, "the resumed key's job succeeded")


def test_job_types_sharing_a_limit_on_a_cluster_live_in_its_slot_and_get_no_429(tmp_path, client, processes):
    cluster = start_cluster(processes)
    other = name_on_another_master(cluster, LimitKeys(LIMIT, LIMIT).limits)
    with ShopifyWorker() as shopify, WorkerSink(lambda: 0.0) as sink:
        coordinators: list[Any] = start_coordinators(
            tmp_path, client, processes, cluster.url, shopify.url, count=2, limit={"rate": 2, "burst": BUCKET - 1},
            others={other: sink.url}, cluster=True)
        bases = [c.base_url for c in coordinators]
        jobs_of = enqueue_every_type(client, bases[0], PER_TYPE_PER_SHOP)
        resp = client.post(f"{bases[1]}/jobs", json={"jobs": [{"worker": other} for _ in range(OTHER_JOBS)]})
        assert resp.status_code == 201, resp.text

        wait_served(shopify, len(jobs_of), within_s=60)
        check_every_shop_at_two_per_second(shopify, SHOPS, PER_TYPE_PER_SHOP * len(JOB_TYPES))
        expected = {**dict.fromkeys(JOB_TYPES, PER_TYPE_PER_SHOP * len(SHOPS)), other: OTHER_JOBS}
        wait_until(lambda: {name: jobs["succeeded"] for name, jobs in worker_counts(client, bases[1]).items()}
                   == expected, 10, "every job succeeded")
        counts = worker_counts(client, bases[0])
        assert all(counts[name]["dead"] == counts[name]["retrying"] == 0 for name in expected), counts
        assert len(sink.delivered_ids()) == OTHER_JOBS

        shared_master, other_master = check_keys_placed(cluster, other)
        summary = next(line for line in coordinators[0].log().splitlines() if "serving on" in line)
        assert f"127.0.0.1:{shared_master}: {', '.join(sorted(JOB_TYPES))}" in summary, summary
        assert f"127.0.0.1:{other_master}: {other}" in summary, summary

        check_limits_routes(client, bases, shopify, other)
        assert shopify.throttled == []
        assert cluster_errors_in(coordinators) == []
        assert all(c.alive() for c in coordinators)
