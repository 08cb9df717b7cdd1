"""The dispatcher: the claim loops, the calls and the settlers of one process, joined."""

from __future__ import annotations

import asyncio
import logging

from ..config import Config, WorkerConfig
from ..engine import ClaimedJob, Engine
from ..loops import MAX_IDLE_S
from ..signals import Signals
from ..transport import SendWindow, Transport
from ..wakeups import Event, Listener, Wakeups
from .caller import Caller, Observer
from .claimer import Claimer
from .settler import Settler

log = logging.getLogger("redisq.dispatch")


class Dispatcher:
    """Claims due jobs (``Claimer``), calls their worker URLs (``Caller``) and settles the
    answers (``Settler``); wakes up on ``Wakeups``' JOBS_DUE, SLOT_FREED and RETRY_DUE and
    publishes LEASE_STARTED (to ``on_lease`` too), SLOT_FREED and RETRY_DUE."""

    def __init__(self, store: Engine, config: Config, transport: Transport, secret: bytes,
                 observer: Observer | None = None, on_lease: Listener | None = None,
                 signing_key: bytes | None = None, wakeups: Wakeups | None = None, signals: Signals | None = None):
        self.store = store
        self.config = config
        self.transport = transport
        self.secret = secret
        self.signing_key = secret if signing_key is None else signing_key  # signs X-Redisq-Signature
        self.observer = observer
        self.wakeups = Wakeups(store.redis, slots=config.worker_slots) if wakeups is None else wakeups
        self.signals = Signals(config) if signals is None else signals  # what operators are told
        self.caller = Caller(config, transport, secret, self.signing_key, observer, store.lease_left_ms, self.signals)
        self.settler = Settler(store, config, self.after_settle, observer, self.signals)
        self.claimer = Claimer(store, config, self.wakeups, self._start_call, self.settler.hold_back)
        self.wakeups.subscribe((Event.JOBS_DUE, Event.SLOT_FREED, Event.RETRY_DUE), self.claimer.wake)
        if on_lease is not None:  # (worker, shortest timeout_ms) after a claim, for the poller
            self.wakeups.subscribe(Event.LEASE_STARTED, on_lease)
        self._calls: set[asyncio.Task[None]] = set()
        # Per worker, the others that share a concurrency cap with it ([limits.NAME]): an
        # attempt of one that ends frees a slot for them all.
        self._cap_sharers = {name: sorted({other for limit in w.shared_limits if limit.concurrency is not None
                                           for other, o in config.workers.items() if limit.name in o.limits} - {name})
                             for name, w in config.workers.items()}

    @property
    def in_flight(self) -> int:
        return self.claimer.in_flight

    @property
    def _loops(self) -> list[asyncio.Task[None]]:
        """The claim loops and the wake-up listener (a test checks that they survive)."""
        return self.claimer.tasks + self.wakeups.tasks

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.claimer.start()
        await self.settler.start()
        await self.wakeups.start()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let in-flight calls finish within ``grace_s``, settle what they
        answered. Calls still running after that are abandoned: their leases expire and
        the jobs are retried."""
        await self.claimer.stop(MAX_IDLE_S + 1)
        await self.wakeups.stop(MAX_IDLE_S + 1)
        if self._calls:
            log.info("waiting up to %.1f s for %d in-flight dispatches", grace_s, len(self._calls))
            _, pending = await asyncio.wait(set(self._calls), timeout=grace_s)
            if pending:
                log.warning("%d dispatches did not finish within the grace period; their leases will expire and "
                            "they will be retried", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        await self.settler.stop(max(1.0, grace_s))
        await self.transport.close()

    def wake(self, worker: str) -> None:
        self.claimer.wake(worker)

    # -- calling workers -------------------------------------------------------------------
    def dispatch_body(self, job: ClaimedJob) -> bytes:
        return self.caller.dispatch_body(job)

    def request_headers(self, body: bytes) -> dict[str, str]:
        """Content type and the signature headers (``security.signed_headers``)."""
        return self.caller.request_headers(body)

    def _start_call(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None = None) -> None:
        """Start one call; its in-flight slot was reserved before the claim."""
        task = asyncio.create_task(self._call(worker, job, window))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None = None) -> None:
        try:
            receipt, facts = await self.caller.call_with_facts(worker, job, window)
        finally:
            self.claimer.release(1)
        if receipt is not None:
            self.settler.add(worker.name, receipt, facts)

    # -- after settling --------------------------------------------------------------------
    def after_settle(self, worker_name: str, words: list[str]) -> None:
        """A settle may free a concurrency slot or schedule a retry sooner than the claim loop
        planned to look."""
        self.attempts_ended(worker_name, retries_due="retrying" in words or "returned" in words)

    def attempts_ended(self, worker_name: str, retries_due: bool) -> None:
        """Attempts of the worker ended (settled, cancelled, reaped): a capped worker has a
        free slot (SLOT_FREED: the claim loops here and on the other coordinators); a retry or
        a returned job may be due sooner than the claim loop planned (RETRY_DUE: here)."""
        if self.claimer.capped(worker_name):
            self.wakeups.publish(Event.SLOT_FREED, worker_name)
            for other in self._cap_sharers.get(worker_name, ()):
                self.wakeups.publish(Event.SLOT_FREED, other)
        elif retries_due:
            self.wakeups.publish(Event.RETRY_DUE, worker_name)
