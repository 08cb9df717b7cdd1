"""The claim loops: per worker, claim as many due jobs as the worker's limits and this
process's free in-flight slots allow, start one call per job, then sleep until the next
thing can happen (the time the claim script says the next job or token is due, or a
wake-up). Slots are reserved before each claim, so the loops of several workers together
never open more than ``max_in_flight`` calls. A throttled job must be written within
``send_window`` of its claim; written late, it holds its buckets back (``ClaimLateness``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config, WorkerConfig
from ..engine import Claim, ClaimedJob, Engine, HoldBack
from ..engine.jobs import call_tag
from ..loops import MAX_IDLE_S, OutageBackoff, WorkerLoops, cancelled, wait_at_most
from ..transport import NotSentError, SendWindow
from ..wakeups import Event, Wakeups

log = logging.getLogger("redisq.dispatch")

RATED_CLAIM_BATCH = 16  # most jobs one claim of a rate-throttled worker takes: its first writes come soon
HOLD_BACK_MIN_MS = 1  # a throttled job written at least this late after its claim holds its key back

StartCall = Callable[[WorkerConfig, ClaimedJob, SendWindow | None], None]  # its slot is reserved
HoldBackReports = Callable[[str, list[HoldBack]], None]  # (worker, reports): to be sent to Redis
BucketId = tuple[str, str, str]  # (HoldBack.bucket, its limit, its throttle key)


class ClaimLateness:
    """How late one claim's throttled jobs are written, and what to tell Redis about it.

    Lateness is measured from just before the claim was sent to Redis, so it is never less
    than the real delay after the claim on the Redis clock. A late write costs a bucket
    only the refill it would have lost to its cap while it stayed full: the lateness beyond
    the bucket's slack at the claim (how long it would have taken to fill up: a key served
    at its pace has seconds of it), and only until the first of the claim's calls on that
    bucket is written (after that the bucket is below full and refills as usual). So:
    - each bucket of a claim is reported once, at its first write, when that lateness came
      past the slack (``lua/hold_back.lua`` takes the lost refill back);
    - a first write whose lateness past the slack would exceed ``send_window`` is refused
      (the job goes back unsent with its tokens), which bounds what a hold-back that reaches
      Redis after the key's next claim can miss. Once a bucket's first call is written, the
      claim's other calls on it go whenever they can.
    The buckets are the worker's own (its key's, its worker-wide one) and those of every
    shared limit it names (the limit's bucket of the key, its bucket over all keys): a late
    write holds back the bucket that every worker naming the limit draws on."""

    def __init__(self, claim: Claim, started: float, send_window_s: float):
        self.claim = claim
        self.started = started
        self.send_window_ms = send_window_s * 1000
        # Per bucket (kind, limit, throttle key): its slack at the claim, and what the claim drew from it.
        self.slack_ms: dict[BucketId, float] = {}
        self.costs: dict[BucketId, float] = defaultdict(float)
        for job in claim.jobs:
            for bucket, slack_ms in self._slacks(claim, job):
                self.slack_ms[bucket] = slack_ms
                self.costs[bucket] += job.cost
        self.first_written: set[BucketId] = set()

    @staticmethod
    def _slacks(claim: Claim, job: ClaimedJob) -> list[tuple[BucketId, float]]:
        """Each bucket the job drew on, with its slack at the claim."""
        slacks = []
        if job.key_slack_ms is not None:
            slacks.append((("key", "", job.throttle_key), job.key_slack_ms))
        if claim.total_slack_ms is not None:
            slacks.append((("worker", "", ""), claim.total_slack_ms))
        slacks += [(("limit-key", limit, job.throttle_key), slack_ms) for limit, slack_ms in job.shared_key_slack_ms]
        slacks += [(("limit", limit, ""), slack_ms) for limit, slack_ms in claim.shared_total_slack_ms]
        return slacks

    def _buckets(self, job: ClaimedJob) -> list[BucketId]:
        return [bucket for bucket, _ in self._slacks(self.claim, job)]

    def refusal(self, job: ClaimedJob, at: float) -> str | None:
        """Why the job may not be written now; None when it may."""
        late_ms = (at - self.started) * 1000
        for bucket in self._buckets(job):
            if bucket not in self.first_written and late_ms - self.slack_ms[bucket] > self.send_window_ms:
                return (f"not sent: written {late_ms:.0f} ms after its claim, past its bucket's slack and "
                        f"send_window ({self.send_window_ms:.0f} ms)")
        return None

    def written(self, job: ClaimedJob, at: float) -> list[HoldBack]:
        late_ms = math.ceil((at - self.started) * 1000)
        reports = []
        for bucket in self._buckets(job):
            if bucket in self.first_written:
                continue
            self.first_written.add(bucket)
            slack_ms = self.slack_ms[bucket]
            if late_ms >= slack_ms + HOLD_BACK_MIN_MS:
                kind, limit, throttle_key = bucket
                reports.append(HoldBack(kind, throttle_key, slack_ms, self.costs[bucket], late_ms, limit))
        return reports


class ClaimWindow(SendWindow):
    """One throttled job's send window: ``ClaimLateness`` decides whether it may be written."""

    __slots__ = ("lateness", "job")

    def __init__(self, lateness: ClaimLateness, job: ClaimedJob, on_written: Callable[[float], None]):
        super().__init__(lateness.started + lateness.send_window_ms / 1000, on_written)
        self.lateness = lateness
        self.job = job

    def check(self) -> float:
        now = time.monotonic()
        refusal = self.lateness.refusal(self.job, now)
        if refusal is not None:
            raise NotSentError(refusal)
        return now


@dataclass(frozen=True)
class PendingClaim:
    """A claim on its way: until it is answered, it is sent again with the same tag and size,
    so that a claim that ran but whose answer was lost hands out its jobs on the repeat
    instead of leaving them leased and unsent (``lua/claim.lua``)."""

    tag: str
    most: int
    started: float  # time.monotonic() before it was first sent: its calls' lateness counts from here


class Claimer(WorkerLoops):
    """One claim loop per worker, and the in-flight slots they share."""

    kind = "claim"
    logger = log

    def __init__(self, store: Engine, config: Config, wakeups: Wakeups, start_call: StartCall,
                 hold_back: HoldBackReports):
        super().__init__(config)
        self.store = store
        self.wakeups = wakeups  # LEASE_STARTED after a claim, for the poller
        self.start_call = start_call
        self.hold_back = hold_back
        self.in_flight = 0
        self._slot_free = asyncio.Event()
        # Whether the worker's live limits cap its concurrency (the last claim says): a
        # settle then frees a slot that claim loops here and elsewhere may be waiting for.
        self._capped: dict[str, bool] = {name: w.concurrency is not None for name, w in config.workers.items()}
        # Whether the worker has a rate (the last claim says): its claims are smaller.
        self._rated: dict[str, bool] = {name: w.rate is not None or w.total_rate is not None
                                        for name, w in config.workers.items()}

    def capped(self, worker_name: str) -> bool:
        return self._capped.get(worker_name, False)

    def release(self, slots: int) -> None:
        if slots:
            self.in_flight -= slots
            self._slot_free.set()

    async def stop(self, timeout_s: float = MAX_IDLE_S + 1) -> None:
        """No more claims; a loop waiting for a free slot wakes to see it."""
        self._slot_free.set()
        await super().stop(timeout_s)

    def _claim_batch(self, worker_name: str) -> int:
        """A rate-throttled worker's claims are smaller, so that all of a claim's calls are
        written well within send_window of it."""
        if self._rated[worker_name]:
            return min(self.config.claim_batch, RATED_CLAIM_BATCH)
        return self.config.claim_batch

    async def _loop(self, worker: WorkerConfig) -> None:
        wake = self._wake[worker.name]
        # A claim whose answer was lost is repeated within a second of Redis answering
        # again, well before the poller reaps after an outage (OutageClock).
        backoff = OutageBackoff(f"dispatcher ({worker.name})", max_delay_s=1.0)
        engine = self.store.worker(worker.name)
        pending: PendingClaim | None = None  # a claim whose answer was lost: sent again as it was
        answered_tag: str | None = None  # the last claim answered, whose reply the next one deletes
        while not self._stopping and not cancelled():
            free = self.config.max_in_flight - self.in_flight
            if free < (pending.most if pending else 1):
                self._slot_free.clear()
                if not self._stopping:
                    await self._slot_free.wait()
                continue
            # Reserve the slots first, so that other workers' loops cannot take them while
            # this claim runs; and clear the wake-up first, so one that comes meanwhile counts.
            if pending is None:
                # Started before the claim runs on the Redis clock: a send measured from here
                # is never later after the claim than it seems.
                pending = PendingClaim(call_tag(), min(self._claim_batch(worker.name), free), time.monotonic())
            reserved = pending.most
            self.in_flight += reserved
            wake.clear()
            try:
                claim = await engine.claim(reserved, pending.tag, answered_tag)
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: back off, never end the loop
                self.release(reserved)
                await backoff.failed(e)
                continue  # and send the same claim again: if it ran, its repeat returns its jobs
            claim_started, answered_tag, pending = pending.started, pending.tag, None
            self.release(reserved - len(claim.jobs))
            self._capped[worker.name] = claim.capped
            self._rated[worker.name] = claim.rated
            self._start_calls(worker, claim, claim_started)
            if claim.wait_ms == 0:
                await asyncio.sleep(0)
                continue
            if self._stopping:  # stop() may have come while the claim ran
                break
            timeout_s = MAX_IDLE_S if claim.wait_ms < 0 else min(MAX_IDLE_S, claim.wait_ms / 1000)
            await wait_at_most(wake, timeout_s)

    def _start_calls(self, worker: WorkerConfig, claim: Claim, claim_started: float) -> None:
        if not claim.jobs:
            return
        lateness = ClaimLateness(claim, claim_started, self.config.send_window_s) if claim.rated else None
        for job in claim.jobs:
            self.start_call(worker, job, self._send_window(worker, job, lateness))
        self.wakeups.publish(Event.LEASE_STARTED, worker.name, min(job.timeout_ms for job in claim.jobs))

    def _send_window(self, worker: WorkerConfig, job: ClaimedJob, lateness: ClaimLateness | None) -> SendWindow | None:
        """A throttled job must be written within send_window of its claim, else it is
        returned unsent; written late, it holds its buckets back (``ClaimLateness``)."""
        if lateness is None:
            return None

        def written(at: float) -> None:
            reports = lateness.written(job, at)
            if reports:
                self.hold_back(worker.name, reports)

        return ClaimWindow(lateness, job, written)
