"""The key layout: job ids lead to their keys, and a worker's keys share one hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from redisq.keys import WorkerKeys, job_id, job_key, split_job_id


@pytest.mark.parametrize("worker, suffix", [
    ("send-email", "abc"),
    ("a", "x"),
    ("shop_sync-2", "order:123:retry"),  # the suffix may hold colons: the worker ends at the first
    ("w" * 64, "s" * 200),
    ("0worker", "A.b_c~d-e:F"),
])
def test_split_job_id_round_trips(worker, suffix):
    assert split_job_id(job_id(worker, suffix)) == (worker, suffix)
    assert job_key(job_id(worker, suffix)) == WorkerKeys(worker).job(suffix)


@pytest.mark.parametrize("text", [
    "",
    "send-email",              # no separator
    ":abc",                    # no worker
    "send-email:",             # no suffix
    "Send-Email:abc",          # worker names are lower case
    "-send:abc",               # and start with a letter or digit
    "w" * 65 + ":abc",         # at most 64 characters
    "send-email:" + "s" * 201,  # suffixes at most 200
    "send-email:abc def",
    "send-email:abc/def",
    "send-email:ab{c}",        # a brace would change the hash tag
    "send email:abc",
])
def test_split_job_id_rejects_what_is_not_a_job_id(text):
    assert split_job_id(text) is None
    assert job_key(text) is None


@pytest.mark.parametrize("text", ["send-email:abc\n", "send-email\n:abc"])
def test_split_job_id_rejects_a_trailing_newline(text):
    assert split_job_id(text) is None


def test_key_names():
    keys = WorkerKeys("send-email")
    assert keys.throttle_keys == "redisq:{send-email}:keys"
    assert keys.scheduled == keys.queue("") == keys.queue_prefix == "redisq:{send-email}:queue:"
    assert keys.queue("shop-a.myshopify.com") == "redisq:{send-email}:queue:shop-a.myshopify.com"
    assert keys.key_bucket("shop-a") == keys.key_bucket_prefix + "shop-a" == "redisq:{send-email}:kbucket:shop-a"
    assert keys.limits == "redisq:{send-email}:limits"
    assert keys.stats == "redisq:{send-email}:stats"
    assert keys.dispatched == "redisq:{send-email}:dispatched"
    assert keys.running == "redisq:{send-email}:running"
    assert keys.finished == "redisq:{send-email}:finished"
    assert keys.bucket == "redisq:{send-email}:bucket"
    assert keys.seq == "redisq:{send-email}:seq"
    assert keys.job("abc") == keys.job_prefix + "abc" == "redisq:{send-email}:job:abc"


def test_a_workers_keys_share_one_hash_slot_and_workers_differ():
    def slots(worker: str) -> set[int]:
        keys = WorkerKeys(worker)
        names = [keys.throttle_keys, keys.queue("shop-a"), keys.key_bucket("shop-a"), keys.limits, keys.stats,
                 keys.dispatched, keys.scheduled, keys.running, keys.finished, keys.bucket, keys.seq,
                 keys.job("abc"), keys.job("x:y:z"), job_key(job_id(worker, "other")) or ""]
        return {key_slot(name.encode()) for name in names}

    assert slots("send-email") == {key_slot(b"send-email")}
    assert slots("sync-shop") == {key_slot(b"sync-shop")}
    assert slots("send-email") != slots("sync-shop")
