"""The job hash's stored field names: one table on each side (job_fields.py, lua/includes/fields.lua),
held equal here, and hashes written by the earlier layout (long names) renamed by migrate.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from redisq.config import Config
from redisq.engine import Engine, Receipt
from redisq.job_fields import (
    HISTORY_FIELDS,
    JOB_FIELDS,
    LONG_NAMES,
    OLD_TAKEN_PREFIX,
    TAKEN_PREFIX,
    decode_job_hash,
    stored,
    stored_job_fields,
)
from redisq.migrate import migrate
from redisq.model import parse_enqueue
from redisq.scripts import lua_dir

from test_dispatch import Worker, coordinator, worker_config

LUA_ENTRY_RE = re.compile(r"^  (\w+) = '([^']*)',$")


def lua_fields(table: str = "F") -> tuple[dict[str, str], str]:
    text = (lua_dir() / "includes" / "fields.lua").read_text()
    body = text.split(f"local {table} = {{\n", 1)[1].split("\n}\n", 1)[0]
    entries = {}
    for line in body.splitlines():
        match = LUA_ENTRY_RE.match(line)
        assert match, f"lua/includes/fields.lua: {line!r} is not `  name = 'stored',`"
        entries[match.group(1)] = match.group(2)
    (prefix,) = re.findall(r"^local TAKEN_PREFIX = '([^']*)'$", text, re.MULTILINE)
    return entries, prefix


def test_the_lua_table_is_the_python_one() -> None:
    entries, prefix = lua_fields()
    assert entries == dict(JOB_FIELDS)
    assert prefix == TAKEN_PREFIX
    assert lua_fields("H")[0] == dict(HISTORY_FIELDS)
    assert len(set(HISTORY_FIELDS.values())) == len(HISTORY_FIELDS)


def test_stored_names_are_distinct_and_no_stored_name_is_a_long_one() -> None:
    assert len(LONG_NAMES) == len(JOB_FIELDS)
    assert not set(LONG_NAMES) & set(JOB_FIELDS)  # a hash in either layout reads one way
    assert not any(short.startswith(TAKEN_PREFIX) for short in LONG_NAMES)


def test_a_hash_as_read_is_decoded_to_the_long_names() -> None:
    raw = {b"s": b"running", b"a": b'{"n":1}', b"n": b"2", b"x:shopify": b"1.000000"}
    assert decode_job_hash(raw) == {"state": "running", "args": '{"n":1}', "attempts": "2", "x:shopify": "1.000000"}
    assert decode_job_hash(stored_job_fields(state="dead", seq=3)) == {"state": "dead", "seq": 3}
    assert stored("state", "run_at_ms") == ["s", "r"]


# -- hashes of the earlier layout ---------------------------------------------------------------


async def to_earlier_layout(client: Any, key: str) -> dict[str, str]:
    """Rewrite a job hash as the earlier layout wrote it (long names, ``taken:NAME``); returns
    the hash as it was (decoded), which the migration must give back."""
    now = decode_job_hash(await client.hgetall(key))
    old = {(OLD_TAKEN_PREFIX + name[len(TAKEN_PREFIX):]) if name.startswith(TAKEN_PREFIX) else name: value
           for name, value in now.items()}
    raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (await client.hgetall(key)).items()}
    await client.delete(key)
    await client.hset(key, mapping=old)
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}


async def test_a_start_renames_the_earlier_layouts_hashes_and_the_jobs_run_on(engine_redis) -> None:
    """Jobs left by the earlier version (scheduled, running, dead) are renamed before the
    coordinator dispatches: the waiting ones run, the others read as they did, and nothing
    is dropped; a second start walks nothing."""
    worker = worker_config("http://127.0.0.1:9/never", max_attempts=1, timeout_s=60.0)
    store = Engine(engine_redis, Config(workers={worker.name: worker}))
    keys = store.keys(worker.name)
    suffixes = ["died", "running", "waiting-1", "waiting-2"]
    await store.enqueue_many([parse_enqueue({"worker": worker.name, "id": s, "args": {"n": n}}, store.config.workers)
                              for n, s in enumerate(suffixes)])
    (died,) = (await store.claim(worker, 1)).jobs
    await store.settle(worker, [Receipt(died.suffix, died.attempt, "permanent", error="HTTP 400: bad", seq=died.seq)])
    (running,) = (await store.claim(worker, 1)).jobs  # left running, its lease a minute long
    assert (died.suffix, running.suffix) == ("died", "running")
    await engine_redis.hset(keys.job("waiting-1"), TAKEN_PREFIX + "shopify", "1.000000")  # as a shared limit's claim
    before = {s: (await store.get(f"{worker.name}:{s}")).to_json() for s in suffixes}
    as_written = {s: await to_earlier_layout(engine_redis, keys.job(s)) for s in suffixes}
    assert await engine_redis.hget(keys.job("died"), "state") == b"dead"  # long names, as the earlier version's
    assert await engine_redis.hget(keys.job("waiting-1"), OLD_TAKEN_PREFIX + "shopify") == b"1.000000"

    assert await migrate(store) == 4
    for s in suffixes:
        raw = {k.decode(): v.decode() for k, v in (await engine_redis.hgetall(keys.job(s))).items()}
        assert raw == as_written[s], s  # exactly what this version writes
        assert (await store.get(f"{worker.name}:{s}")).to_json() == before[s]
    assert await engine_redis.get(keys.layout) == b"2"
    assert await migrate(store) == 0  # marked done: nothing walked

    # a coordinator renames them at its start, before it dispatches: the waiting jobs run
    # (claim would drop a hash it cannot read: the jobs would never finish)
    for s in suffixes:
        await to_earlier_layout(engine_redis, keys.job(s))
    await engine_redis.delete(keys.layout)
    async with Worker() as sink:
        async with coordinator(engine_redis, worker_config(sink.url, max_attempts=1)) as run:
            for s in ("waiting-1", "waiting-2"):
                job = await run.finished(f"{worker.name}:{s}")
                assert job["state"] == "succeeded", job
            assert (await run.get(f"{worker.name}:died"))["state"] == "dead"
            assert (await run.get(f"{worker.name}:running"))["state"] == "running"
        assert sorted(call.job_id for call in sink.calls) == [f"{worker.name}:waiting-1", f"{worker.name}:waiting-2"]
    assert await engine_redis.get(keys.layout) == b"2"


async def test_while_redis_cannot_be_read_at_start_dispatch_waits_for_the_rename(engine_redis_not_cluster,
                                                                                monkeypatch, caplog) -> None:
    """The API serves while the walk cannot run; the dispatcher starts once it could, and not
    before: no claim meets a hash it cannot read. (Redis is down for the walk only, so the
    test needs no cluster.)"""
    import redisq.coordinator as coordinator_module
    from redisq.coordinator import Coordinator
    from redisq.errors import UnavailableError

    walks: list[str] = []

    async def walk_fails_twice(engine: Engine) -> int:
        walks.append("failed" if len(walks) < 2 else "ran")
        if walks[-1] == "failed":
            raise UnavailableError("redis is unavailable: connection refused")
        return await migrate(engine)

    monkeypatch.setattr(coordinator_module, "migrate", walk_fails_twice)
    monkeypatch.setattr(coordinator_module, "MIGRATION_RETRY_S", 0.05)
    async with Worker() as sink:
        config = Config(secret="s", public_url="http://127.0.0.1:9", workers={"work": worker_config(sink.url)})
        coord = Coordinator(config, redis=engine_redis_not_cluster)
        await coord.start()
        try:
            assert coord.dispatcher is None and walks == ["failed"]
            assert "dispatching waits for redis" in caplog.text
            for _ in range(100):
                if coord.dispatcher is not None:
                    break
                await asyncio.sleep(0.05)
            assert walks == ["failed", "failed", "ran"] and coord.dispatcher is not None
            assert coord.poller is not None and coord.ticker is not None
            assert caplog.text.count("dispatching waits for redis") == 1  # said once
        finally:
            await coord.stop()


async def test_a_coordinator_waiting_for_redis_to_rename_stops_at_once(engine_redis_not_cluster, monkeypatch) -> None:
    import redisq.coordinator as coordinator_module
    from redisq.coordinator import Coordinator
    from redisq.errors import UnavailableError

    async def walk_fails(engine: Engine) -> int:
        raise UnavailableError("redis is unavailable: connection refused")

    monkeypatch.setattr(coordinator_module, "migrate", walk_fails)
    monkeypatch.setattr(coordinator_module, "MIGRATION_RETRY_S", 0.05)
    config = Config(secret="s", public_url="http://127.0.0.1:9", workers={"work": worker_config("http://127.0.0.1:9")})
    coord = Coordinator(config, redis=engine_redis_not_cluster)
    await coord.start()
    await asyncio.sleep(0.2)
    await asyncio.wait_for(coord.stop(), 5.0)
    assert coord.dispatcher is None
