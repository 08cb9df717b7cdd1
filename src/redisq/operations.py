"""Bulk operations: an operator's retry or delete of many finished jobs (``POST /jobs/retry``,
``POST /jobs/delete``), run in slices so that neither Redis nor the request is held long.

Each slice is one script call on at most ``SLICE_JOBS`` jobs (``lua/retry.lua``,
``lua/delete.lua``), which also counts what it did in the operation's hash in Redis
(``WorkerKeys.operation``): any coordinator answers ``GET /operations/{id}`` with the
progress, for an hour. The request waits ``WAIT_S`` for the operation; one that takes
longer goes on in this coordinator's background (202), and a coordinator that stops marks
it ended with an error (what was done stays done; run it again for the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import WorkerConfig
from .engine import Engine, WorkerEngine, redis_errors_mapped
from .errors import NotFoundError, RedisqError, ValidationError, shown
from .inputs import MAX_AMOUNT, NumberRule, object_with
from .json_text import COMPACT_JSON
from .keys import WORKER_NAME_RE, split_job_id
from .model import DELAY_S, JobState, parse_run_at

log = logging.getLogger("redisq.operations")

SLICE_JOBS = 500
WAIT_S = 2.0
KEPT_S = 3600
MAX_IDS = 10_000
LIMIT = NumberRule(1, MAX_AMOUNT, whole=True)
KINDS = {"retry": ("dead", "cancelled"), "delete": ("succeeded", "dead", "cancelled")}
DONE_WORD = {"retry": "retried", "delete": "deleted"}


@dataclass(frozen=True)
class BulkRequest:
    """A validated ``POST /jobs/retry`` or ``/jobs/delete`` body."""

    kind: str  # retry | delete
    worker: str
    state: JobState
    ids: tuple[str, ...] | None  # None = every job in the state ("all": true)
    limit: int | None = None  # at most this many (with "all")
    run_at_ms: int | None = None  # retry: when the jobs run again (None = now + delay_ms)
    delay_ms: int = 0
    args_json: str = ""  # retry: new args for every job ('' = each keeps its own)


def parse_bulk(kind: str, body: Any, workers: Mapping[str, WorkerConfig]) -> BulkRequest:
    body = object_with(body, ("worker", "state", "ids", "all", "limit", *(RERUN_FIELDS if kind == "retry" else ())))
    worker = body.get("worker")
    if not isinstance(worker, str) or worker not in workers:
        known = ", ".join(sorted(workers)) or "none are configured"
        raise ValidationError(f"worker: unknown worker {shown(worker)} (known: {known})", field="worker")
    allowed = KINDS[kind]
    state_text = body.get("state", "dead")
    if state_text not in allowed:
        raise ValidationError(f"state: must be one of {', '.join(allowed)}, got {shown(state_text)}", field="state")
    ids, every = body.get("ids"), body.get("all", False)
    if not isinstance(every, bool):
        raise ValidationError(f"all: must be true or false, got {shown(every)}", field="all")
    if (ids is None) == (not every):
        raise ValidationError("ids: give either ids (a list of job ids) or \"all\": true", field="ids")
    if ids is not None:
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS \
                or not all(isinstance(i, str) and split_job_id(i) for i in ids):
            raise ValidationError(f"ids: must be a list of 1 to {MAX_IDS} job ids", field="ids")
        if "limit" in body:
            raise ValidationError("limit: goes with \"all\": true, not with ids", field="limit")
    limit = None if body.get("limit") is None else int(LIMIT.read(body["limit"], "limit"))
    rerun = parse_rerun(body)
    return BulkRequest(kind, worker, JobState(state_text), None if ids is None else tuple(ids), limit,
                       rerun.run_at_ms, rerun.delay_ms, rerun.args_json)


RERUN_FIELDS = ("args", "runAt", "delay")


@dataclass(frozen=True)
class Rerun:
    """How retried jobs run again: at ``run_at_ms`` (None = now + ``delay_ms``), with new
    args when ``args_json`` is not ''."""

    run_at_ms: int | None = None
    delay_ms: int = 0
    args_json: str = ""


def parse_rerun(body: Mapping[str, Any]) -> Rerun:
    """The ``args``, ``runAt`` and ``delay`` of a retry's body (``POST /job/{id}/retry``,
    ``POST /jobs/retry``), checked as enqueue checks them."""
    if body.get("runAt") is not None and body.get("delay") is not None:
        raise ValidationError("runAt: give either runAt or delay, not both", field="runAt")
    run_at_ms = None
    if body.get("runAt") is not None:
        try:
            run_at_ms = parse_run_at(body["runAt"])
        except ValueError as e:
            raise ValidationError(f"runAt: {e}", field="runAt") from None
    delay_ms = 0 if body.get("delay") is None else int(round(DELAY_S.read(body["delay"], "delay") * 1000))
    args_json = ""
    if "args" in body:
        try:
            args_json = COMPACT_JSON.encode(body["args"])
        except ValueError:
            raise ValidationError("args: must be JSON (no NaN or Infinity)", field="args") from None
    return Rerun(run_at_ms, delay_ms, args_json)


@dataclass
class Progress:
    """Where an operation stands: ``changed`` jobs retried (or deleted) so far."""

    operation: str
    request: BulkRequest
    total: int | None
    changed: int = 0
    done: bool = False
    error: str | None = None
    failure: RedisqError | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        r = self.request
        answer: dict[str, Any] = {"operation": self.operation, "kind": r.kind, "worker": r.worker,
                                  "state": r.state.value, DONE_WORD[r.kind]: self.changed, "total": self.total,
                                  "done": self.done, "error": self.error}
        if r.ids is not None:
            answer["skipped"] = [{"id": i, "reason": reason} for i, reason in self.skipped.items()]
        return answer


class Operations:
    """The bulk operations this coordinator runs (``start``) and any coordinator's (``get``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._running: set[asyncio.Task[None]] = set()

    async def start(self, request: BulkRequest) -> tuple[Progress, bool]:
        """Run the operation, waiting for it ``WAIT_S`` at most: (its progress, finished)."""
        engine = self.engine.worker(request.worker)
        operation = f"{request.worker}:{secrets.token_hex(6)}"
        suffix = operation.partition(":")[2]
        total = len(request.ids) if request.ids is not None else await engine.count_in_state(request.state)
        if request.limit is not None and total is not None:
            total = min(total, request.limit)
        progress = Progress(operation, request, total)
        key = engine.keys.operation(suffix)
        with redis_errors_mapped():
            await self.engine.redis.hset(key, mapping={
                "kind": request.kind, "worker": request.worker, "state": request.state.value, "total": total,
                "done": 0, "finished": 0, "ids": 0 if request.ids is None else 1})
            await self.engine.redis.expire(key, KEPT_S)
        task = asyncio.create_task(self._run(engine, suffix, progress))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), WAIT_S)
        if progress.failure is not None and progress.changed == 0 and task.done():
            raise progress.failure  # nothing was done: the request fails as a single call would
        return progress, task.done()

    async def _run(self, engine: WorkerEngine, suffix: str, progress: Progress) -> None:
        request = progress.request
        states = [request.state]
        try:
            if request.ids is not None:
                for start in range(0, len(request.ids), SLICE_JOBS):
                    await self._slice(engine, suffix, progress, states, ids=request.ids[start:start + SLICE_JOBS])
            else:
                left = request.limit
                while left is None or left > 0:
                    most = SLICE_JOBS if left is None else min(SLICE_JOBS, left)
                    changed = await self._slice(engine, suffix, progress, states, most=most)
                    if left is not None:
                        left -= changed
                    if changed < most:
                        break
                    await asyncio.sleep(0)  # other requests go between slices
        except asyncio.CancelledError:
            progress.error = "the coordinator stopped before the operation ended; run it again for the rest"
            await self._finish(engine, suffix, progress)
            raise
        except RedisqError as e:
            progress.error, progress.failure = e.message, e
        except Exception as e:  # never lose track of an operation to a bug: it ends with the error
            log.exception("bulk %s %s failed", request.kind, suffix)
            progress.error = f"internal error: {type(e).__name__}"
        await self._finish(engine, suffix, progress)

    async def _slice(self, engine: WorkerEngine, suffix: str, progress: Progress, states: Sequence[JobState],
                     ids: Sequence[str] | None = None, most: int = 0) -> int:
        r = progress.request
        if r.kind == "retry":
            result = await engine.retry_jobs(states, ids=ids, most=most, run_at_ms=r.run_at_ms, delay_ms=r.delay_ms,
                                             args_json=r.args_json, operation=suffix)
        else:
            result = await engine.delete_jobs(states, ids=ids, most=most, operation=suffix)
        progress.changed += result.changed
        progress.skipped.update(result.skipped)
        return result.changed

    async def _finish(self, engine: WorkerEngine, suffix: str, progress: Progress) -> None:
        progress.done = True
        with contextlib.suppress(Exception):  # the progress in memory is answered anyway
            await self.engine.redis.hset(engine.keys.operation(suffix),
                                         mapping={"finished": 1, "error": progress.error or ""})

    async def get(self, operation: str) -> dict[str, Any]:
        """Any coordinator's operation, from Redis: 404 when unknown or older than an hour."""
        worker, _, suffix = operation.partition(":")
        if not WORKER_NAME_RE.match(worker) or worker not in self.engine.workers or not suffix.isalnum():
            raise NotFoundError(f"no operation {operation!r}")
        engine = self.engine.worker(worker)
        with redis_errors_mapped():
            raw = await self.engine.redis.hgetall(engine.keys.operation(suffix))
        if not raw:
            raise NotFoundError(f"no operation {operation!r} (operations are kept for an hour)")
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        total = f.get("total")
        return {"operation": operation, "kind": f["kind"], "worker": worker, "state": f["state"],
                DONE_WORD[f["kind"]]: int(f.get("done", 0)), "total": int(total) if total else None,
                "done": f.get("finished") == "1", "error": f.get("error") or None}

    async def stop(self) -> None:
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(BaseException):
                await task
