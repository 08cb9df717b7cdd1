"""What the coordinator tells its operators. Every event is one call of ``Signals``, which
writes its log line (logs.py) and counts it (metrics.py): the dispatcher, the settler, the
poller, the engine's outage clock and the API report here, and nowhere else.

    dispatched(worker)                         a call was written to the worker
    call_ended(worker, duration_s)             its answer came (or its failure)
    attempt_ended(worker, job_id, attempt,     settled: "succeeded", "retrying" (INFO line;
      outcome, ...)                              a back-pressure pause: INFO or WARNING line),
                                                 "dead" (WARNING line); other words count nothing
    leases_reaped(worker, reaped)              the poller failed attempts whose lease ran out
    dead_letter_failed(worker, job_id, ...)    an on_dead callback was given up (WARNING)
    redis_lost(), redis_back()                 WARNING, then INFO, once per outage
    limits_changed(worker, before, after, by)  PATCH /workers/NAME, pause, resume (INFO)
    started(...)                               the start-up summary (INFO)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import Config
from .engine.records import Reaped
from .limits import Limits
from .logs import event_line
from .metrics import Metrics
from .model import iso_from_ms

log = logging.getLogger("redisq.signals")

PAUSE_LOG_STEP_MS = 1000  # a pause of the same key is logged again once it ends this much later
PAUSES_KEPT = 10_000  # pauses remembered for that; past ones are forgotten beyond this many


@dataclass(frozen=True)
class CallFacts:
    """What the call of an attempt knew that its receipt does not carry."""

    throttle_key: str = ""
    status: int | None = None  # the worker's HTTP status; None = no answer (or a posted receipt)


def number(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def limits_text(limits: Limits) -> str:
    parts = [f"rate {number(limits.rate)}/s burst {number(limits.bucket_size)}" if limits.rate is not None
             else "rate unlimited"]
    if limits.total_rate is not None:
        parts.append(f"total_rate {number(limits.total_rate)}/s total_burst {number(limits.total_bucket_size)}")
    parts.append(f"concurrency {number(limits.concurrency) if limits.concurrency is not None else 'unlimited'}")
    parts.append(f"timeout {number(limits.timeout_s)} s")
    if limits.paused:
        parts.append("paused")
    return ", ".join(parts)


def limit_changes(before: Limits, after: Limits) -> dict[str, list[Any]]:
    """{field: [before, after]} of the fields that differ, by the API's names."""
    old, new = before.to_json(), after.to_json()
    return {name: [old[name], new[name]] for name in new if old.get(name) != new[name]}


class Signals:
    def __init__(self, config: Config, metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics(config.workers)
        self._paused_until_ms: dict[tuple[str, str], int] = {}
        self._redis_lost_at: float | None = None

    # -- dispatch --------------------------------------------------------------------------
    def dispatched(self, worker: str) -> None:
        self.metrics.of(worker).dispatched.inc()

    def call_ended(self, worker: str, duration_s: float) -> None:
        self.metrics.of(worker).dispatch_duration.observe(duration_s)

    def dispatch_lag(self, worker: str, lag_s: float) -> None:
        """A job was sent ``lag_s`` after it was due (its runAt, or when a retry was due)."""
        self.metrics.of(worker).dispatch_lag.observe(max(0.0, lag_s))

    @property
    def logs_retries(self) -> bool:
        """Whether a retry's line is written (so its next run is worth reading)."""
        return log.isEnabledFor(logging.INFO)

    def attempt_ended(self, worker: str, job_id: str, attempt: int, outcome: str, *, error: str = "",
                      status: int | None = None, next_run_at_ms: int | None = None,
                      paused_until_ms: int | None = None, throttle_key: str = "") -> None:
        """An attempt was settled (or reaped): ``outcome`` is settle's word. A retry with
        ``paused_until_ms`` was back-pressure (the key, or the worker when ``throttle_key`` is
        "", paused until then); otherwise a failure, retried at ``next_run_at_ms``. The call's
        duration is not here: the caller reports it as the answer comes (``call_ended``)."""
        m = self.metrics.of(worker)
        if outcome == "succeeded":
            m.succeeded.inc()
        elif outcome == "retrying" and paused_until_ms is not None:
            m.throttled.inc()
            self._paused(worker, job_id, throttle_key, paused_until_ms, status, error)
        elif outcome == "retrying":
            m.failed.inc()
            m.retried.inc()
            next_run = iso_from_ms(next_run_at_ms)
            event_line(log, logging.INFO, "attempt_retried",
                       f"{job_id}: attempt {attempt} failed ({error or 'no error given'}); retried "
                       f"{'at ' + next_run if next_run else 'after its backoff'}",
                       worker=worker, job=job_id, attempt=attempt, error=error, status=status, next_run_at=next_run)
        elif outcome == "dead":
            m.failed.inc()
            m.dead.inc()
            event_line(log, logging.WARNING, "job_dead",
                       f"{job_id}: dead after {attempt} attempt{'s' if attempt != 1 else ''}; last error: "
                       f"{error or 'none given'}",
                       worker=worker, job=job_id, attempts=attempt, error=error, status=status)

    def _paused(self, worker: str, job_id: str, throttle_key: str, until_ms: int, status: int | None,
                error: str) -> None:
        """A back-pressure pause: logged when it reaches past the one last logged for the key
        (many calls of one key answer 429 together: one line)."""
        key = (worker, throttle_key)
        if until_ms < self._paused_until_ms.get(key, 0) + PAUSE_LOG_STEP_MS:
            return
        if len(self._paused_until_ms) >= PAUSES_KEPT:
            now_ms = time.time() * 1000
            self._paused_until_ms = {k: v for k, v in self._paused_until_ms.items() if v > now_ms}
        self._paused_until_ms[key] = until_ms
        until = iso_from_ms(until_ms)
        what = f"throttle key {throttle_key!r} of {worker}" if throttle_key else f"worker {worker} (all its jobs)"
        event_line(log, logging.INFO if throttle_key else logging.WARNING, "paused",
                   f"{what} paused until {until} by the worker's Retry-After (job {job_id}: {error or 'no error'})",
                   worker=worker, key=throttle_key, until=until, job=job_id, status=status, error=error)

    def leases_reaped(self, worker: str, reaped: Reaped) -> None:
        """The poller failed attempts whose lease ran out: each is retried, or dead when it was
        the job's last attempt, and is logged and counted as any failed attempt is."""
        self.metrics.of(worker).reaped.inc(len(reaped.ended))
        for ended in reaped.ended:
            self.attempt_ended(worker, ended.job_id, ended.attempt, ended.outcome, error="timed out")

    def dead_letter_failed(self, worker: str, job_id: str, url: str, attempts: int, error: str) -> None:
        """The ``on_dead`` callback of a dead job was tried ``attempts`` times and given up."""
        event_line(log, logging.WARNING, "dead_letter_failed",
                   f"{job_id}: on_dead callback to {url} given up after {attempts} attempts; last error: "
                   f"{error or 'none given'}", worker=worker, job=job_id, url=url, attempts=attempts, error=error)

    # -- Redis -----------------------------------------------------------------------------
    def redis_changed(self, reachable: bool) -> None:
        """The engine's outage clock: script calls stopped or started reaching Redis."""
        if reachable:
            self.redis_back()
        else:
            self.redis_lost()

    def redis_lost(self) -> None:
        if self._redis_lost_at is not None:
            return
        self._redis_lost_at = time.monotonic()
        self.metrics.redis_up.set(0)
        event_line(log, logging.WARNING, "redis_lost",
                   f"redis lost: calls to {self.redis_name} fail; the API answers 503 and dispatch waits "
                   "until it is back", redis=self.redis_name)

    def redis_back(self) -> None:
        if self._redis_lost_at is None:
            return
        down_s = round(time.monotonic() - self._redis_lost_at, 3)
        self._redis_lost_at = None
        self.metrics.redis_up.set(1)
        event_line(log, logging.INFO, "redis_back", f"redis back: {self.redis_name} answers again after {down_s:g} s",
                   redis=self.redis_name, down_s=down_s)

    @property
    def redis_name(self) -> str:
        from .coordinator import redacted_url  # coordinator imports this module

        return redacted_url(self.config.redis_url) if self.config.redis_url else "the embedded store"

    # -- operators -------------------------------------------------------------------------
    def limits_changed(self, worker: str, before: Limits, after: Limits, by: str | None,
                       client: str | None = None) -> None:
        """A live limit changed through the API; ``by`` is the API token's name ("" for an
        unnamed token, None when the API is open)."""
        changes = limit_changes(before, after)
        who = f"token {by!r}" if by else ("an unnamed API token" if by == "" else "the open API (no api_tokens)")
        said = ", ".join(f"{name} {number_or_flag(old)} -> {number_or_flag(new)}"
                         for name, (old, new) in changes.items()) or "nothing changed"
        event_line(log, logging.INFO, "limits_changed",
                   f"{worker}: live limits changed by {who}{' from ' + client if client else ''}: {said}",
                   worker=worker, changes=changes, by=by, client=client)

    def started(self, listen: str, embedded: bool, limits: Mapping[str, Limits],
                masters: Mapping[str, list[str]] | None = None) -> None:
        """The start-up summary: where it serves, the store (on a cluster: every master, with
        the workers whose slot it owns), public_url, each worker's limits."""
        from . import __version__

        store = "embedded store (jobs kept in memory only)" if embedded else f"redis {self.redis_name}"
        if masters:
            placed = "; ".join(f"{name}: {', '.join(workers) or 'no workers'}" for name, workers in masters.items())
            store = f"redis cluster {self.redis_name}, {len(masters)} masters ({placed})"
        workers = {name: {"url": self.config.workers[name].url, **limits[name].to_json()} for name in limits}
        worker_text = "; ".join(f"{name} ({limits_text(limits[name])})" for name in limits) or "none"
        event_line(log, logging.INFO, "started",
                   f"redisq {__version__} serving on {listen} ({store}; receipts to {self.config.base_url}; "
                   f"{len(limits)} worker{'s' if len(limits) != 1 else ''}: {worker_text})",
                   version=__version__, listen=listen, store="embedded" if embedded else "redis",
                   redis=None if embedded else self.redis_name, public_url=self.config.base_url, workers=workers,
                   **({"masters": dict(masters)} if masters else {}))


def number_or_flag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return number(value) if isinstance(value, (int, float)) or value is None else str(value)
