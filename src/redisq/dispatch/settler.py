"""Settling: the receipts of finished calls and the hold-back reports of late writes wait in
a buffer per worker, and one flusher per worker sends them to Redis in batches, so Redis
sees a few calls per batch of jobs, not a few per job. At stop, what the flushers left is
settled before the process goes. Each settled answer is reported to the signals (its log
line and its counts), with the next run of a retried job read back when its line is written."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from ..config import Config, WorkerConfig
from ..engine import Engine, HoldBack, Receipt
from ..errors import RedisqError
from ..keys import job_id
from ..loops import OutageBackoff, WorkerLoops, cancelled
from ..signals import CallFacts, Signals
from .caller import Observer

log = logging.getLogger("redisq.dispatch")

SETTLE_BATCH = 500
NEXT_RUN_READS_AT_ONCE = 16  # retried jobs whose next run is read back together, for their log lines
NO_FACTS = CallFacts()

AfterSettle = Callable[[str, list[str]], None]  # (worker, settle's answers)


class UnsentWarning:
    """Logs, at most once a minute per worker, how many throttled jobs this coordinator
    could not send within send_window of their claim (they went back to their queues)."""

    INTERVAL_S = 60.0

    def __init__(self, send_window_s: float):
        self.send_window_s = send_window_s
        self._count: dict[str, int] = defaultdict(int)
        self._logged_at: dict[str, float] = {}

    def note(self, worker_name: str, returned: int) -> None:
        self._count[worker_name] += returned
        now = time.monotonic()
        if now - self._logged_at.get(worker_name, -self.INTERVAL_S) < self.INTERVAL_S:
            return
        log.warning("%s: %d throttled jobs could not be sent within send_window (%g s) of their claim and went "
                    "back to their queues with their tokens (this coordinator is short of CPU, or send_window is "
                    "too small for its bursts)", worker_name, self._count[worker_name], self.send_window_s)
        self._count[worker_name] = 0
        self._logged_at[worker_name] = now


class Settler(WorkerLoops):
    """The buffers and their flushers (one per worker, woken when something is buffered)."""

    kind = "settle"
    logger = log
    # The flushers end by the flag, not by cancel: on Python 3.11 a cancel that lands
    # inside a redis-py call can be swallowed, and a loop waiting for it would never end.
    cancel_on_stop = False

    def __init__(self, store: Engine, config: Config, after_settle: AfterSettle, observer: Observer | None = None,
                 signals: Signals | None = None):
        super().__init__(config)
        self.store = store
        self.after_settle = after_settle
        self.observer = observer
        self.signals = signals or Signals(config)
        self._receipts: dict[str, list[tuple[Receipt, CallFacts]]] = defaultdict(list)
        self._hold_backs: dict[str, list[HoldBack]] = defaultdict(list)  # reports not yet sent
        self._unsent_warning = UnsentWarning(config.send_window_s)

    def add(self, worker_name: str, receipt: Receipt, facts: CallFacts = NO_FACTS) -> None:
        self._receipts[worker_name].append((receipt, facts))
        self.wake(worker_name)

    def hold_back(self, worker_name: str, reports: list[HoldBack]) -> None:
        self._hold_backs[worker_name].extend(reports)
        self.wake(worker_name)

    async def flush(self, worker_name: str) -> None:
        """Settle what is buffered for the worker now (the poller, before it reaps)."""
        if self._receipts[worker_name] or self._hold_backs[worker_name]:
            await self._flush_all(self.config.workers[worker_name])

    async def stop(self, timeout_s: float = 1.0) -> None:
        """The flushers get ``timeout_s`` to end; then the receipts they left are settled,
        within ``timeout_s`` per worker."""
        await super().stop(timeout_s)
        for name, buffer in list(self._receipts.items()):
            if buffer:
                try:
                    await asyncio.wait_for(self._flush_all(self.config.workers[name]), timeout=timeout_s)
                except Exception as e:  # timed out, or Redis still failing
                    log.warning("could not settle %d receipts of %s at shutdown (%s); their leases will "
                                "expire and the jobs will be retried", len(buffer), name, e)

    async def _loop(self, worker: WorkerConfig) -> None:
        ready = self._wake[worker.name]
        backoff = OutageBackoff(f"settler ({worker.name})")
        while not self._stopping and not cancelled():
            await ready.wait()
            ready.clear()
            try:
                await self._flush_all(worker)
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: keep the receipts, back off
                if self._stopping:
                    return
                ready.set()
                await backoff.failed(e)

    async def _flush_all(self, worker: WorkerConfig) -> None:
        reports = self._hold_backs[worker.name]
        if reports:  # first: the key's next claim may be near
            batch = reports[:]
            reports.clear()
            try:
                await self.store.hold_back(worker, batch)
            except BaseException:
                # Sent again later: taking back twice only slows the key, never speeds it up.
                reports[0:0] = batch
                raise
        answers = self._receipts[worker.name]
        while answers:
            settling = answers[:SETTLE_BATCH]
            del answers[:len(settling)]
            receipts = [receipt for receipt, _ in settling]
            try:
                words = await self.store.settle(worker, receipts)
            except BaseException:
                answers[0:0] = settling  # settled again later: a repeat is answered 'duplicate'
                raise
            self._settled(worker, receipts, words)
            await self._report(worker, settling, words)

    async def _report(self, worker: WorkerConfig, batch: list[tuple[Receipt, CallFacts]], words: list[str]) -> None:
        """Each settled answer to the signals; a job retried after its backoff with the time
        of its next run, read back (a few at a time) when its line is written."""
        retried = [receipt.suffix for (receipt, _), word in zip(batch, words, strict=True)
                   if word == "retrying" and receipt.retry_after_ms < 0]
        next_runs = await self._next_runs(worker, retried) if retried and self.signals.logs_retries else {}
        now_ms = time.time() * 1000
        for (receipt, facts), word in zip(batch, words, strict=True):
            self.signals.attempt_ended(
                worker.name, job_id(worker.name, receipt.suffix), receipt.attempt, word, error=receipt.error,
                status=facts.status, next_run_at_ms=next_runs.get(receipt.suffix),
                paused_until_ms=round(now_ms + receipt.retry_after_ms) if receipt.retry_after_ms >= 0 else None,
                throttle_key=facts.throttle_key)

    async def _next_runs(self, worker: WorkerConfig, suffixes: list[str]) -> dict[str, int]:
        """Retried jobs' next run (unix ms); a job that cannot be read is left out."""
        runs: dict[str, int] = {}

        async def read(suffix: str) -> None:
            try:
                job = await self.store.get(job_id(worker.name, suffix))
            except RedisqError:  # purged, or Redis failing: its line says "after its backoff"
                return
            runs[suffix] = job.run_at_ms

        for start in range(0, len(suffixes), NEXT_RUN_READS_AT_ONCE):
            await asyncio.gather(*(read(s) for s in suffixes[start:start + NEXT_RUN_READS_AT_ONCE]))
        return runs

    def _settled(self, worker: WorkerConfig, batch: list[Receipt], words: list[str]) -> None:
        self.after_settle(worker.name, words)
        stale = words.count("stale")
        if stale:
            log.info("%s: %d responses answered attempts that had already ended (lease expired or job reaped)",
                     worker.name, stale)
        returned = words.count("returned")
        if returned:
            self._unsent_warning.note(worker.name, returned)
        if self.observer:
            for receipt, word in zip(batch, words, strict=True):
                self.observer("settled", f"{worker.name}:{receipt.suffix}", receipt.attempt,
                              word + (f" ({receipt.error})" if receipt.error else ""))
