"""Job hashes written by the earlier layout, renamed before a coordinator dispatches.

Up to this layout a job's hash kept its fields under their long names (``state``,
``args``, ...); now they are stored short (``job_fields.py``). The scripts read only the
short names, and one that met a long-named hash would take it for a job that is gone
(claim drops its queue entry). So a coordinator that is to dispatch first walks every job
of each worker, by the state indexes, the ``running`` zset and the queues (every job is in
one of them), and renames what it finds (``lua/migrate_fields.lua``, 500 hashes a call), then
marks the worker done (``WorkerKeys.layout``); a start that finds the mark walks nothing.

A walk by rank can miss a job that moves while it walks (another coordinator's cancel or
claim shifts the ranks), so it walks again until a whole walk renames nothing. The walk
is safe to run on several coordinators at once: a renamed hash is left as it is.

Coordinators of the earlier version must be stopped before this version starts: they
read and write the long names (README, "Upgrading").

The API reads both layouts (``job_fields.decode_job_hash`` keeps a long name as it is), so
it serves while the walk runs; while Redis cannot be reached the coordinator's dispatch
waits for the walk (``Coordinator.start``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from functools import partial

from .engine import Engine, WorkerEngine
from .engine.records import integer
from .keys import QUEUE_SEQ_DIGITS
from .model import JobState

log = logging.getLogger("redisq.migrate")

LAYOUT = "2"  # the short field names
PAGE = 500  # job hashes per script call
MAX_WALKS = 5  # a walk that renames nothing ends it; more than this many means something else is writing
PROGRESS_EVERY = 100_000  # hashes renamed between progress lines


async def page_of(engine: WorkerEngine, index: str, first: int) -> list[str]:
    """The members of zset ``index`` from rank ``first`` on, at most ``PAGE``."""
    members = await engine.redis.zrange(index, first, first + PAGE - 1)
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


async def members_of(engine: WorkerEngine, index: str) -> AsyncIterator[list[str]]:
    """Every member of zset ``index``, a page at a time."""
    first = 0
    while members := await engine.read(partial(page_of, engine, index, first)):
        yield members
        first += PAGE


async def job_suffixes(engine: WorkerEngine, indexes: list[str]) -> AsyncIterator[list[str]]:
    """Every job of the worker, a page at a time: by ``indexes``, then by the queues of the
    throttle keys that have waiting jobs (a scheduled job without a throttle key is in no
    index: it is listed from its queue)."""
    keys = engine.keys
    for index in indexes:
        async for suffixes in members_of(engine, index):
            yield suffixes
    async for throttle_keys in members_of(engine, keys.throttle_keys):
        for throttle_key in throttle_keys:
            async for members in members_of(engine, keys.queue(throttle_key)):
                yield [member[QUEUE_SEQ_DIGITS:] for member in members]


async def migrate_worker(engine: WorkerEngine) -> int:
    """Rename the worker's long-named job hashes (see above); returns how many. Raises the
    engine's errors (``UnavailableError`` while Redis cannot be reached)."""
    keys = engine.keys
    if await engine.read(lambda: engine.redis.get(keys.layout)) in (LAYOUT, LAYOUT.encode()):
        return 0
    indexes = [keys.running] + [keys.state_index(state.value) for state in JobState if state is not JobState.RUNNING]
    started = time.monotonic()
    total, next_progress = 0, PROGRESS_EVERY
    for _walk in range(MAX_WALKS):
        renamed = 0
        async for suffixes in job_suffixes(engine, indexes):
            job_keys = [keys.job(suffix) for suffix in suffixes]
            renamed += integer(await engine.run("migrate_fields", job_keys, []))
            if total + renamed >= next_progress:
                log.info("%s: %d job hashes renamed to the short field names so far", engine.name,
                         total + renamed)
                next_progress += PROGRESS_EVERY
        total += renamed
        if renamed == 0:
            break
    else:
        log.warning("%s: job hashes were still being renamed after %d walks; a coordinator of an earlier "
                    "version may be running on this Redis (stop it: it writes the long field names)",
                    engine.name, MAX_WALKS)
    await engine.read(lambda: engine.redis.set(keys.layout, LAYOUT))
    if total:
        log.info("%s: %d job hashes of the earlier layout renamed to the short field names in %.1f s",
                 engine.name, total, time.monotonic() - started)
    return total


async def migrate(engine: Engine) -> int:
    """``migrate_worker`` for every configured worker; returns the hashes renamed in all."""
    total = 0
    for worker in engine.workers.values():
        total += await migrate_worker(worker)
    return total
