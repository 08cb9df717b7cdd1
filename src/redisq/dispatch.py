"""The dispatcher: claims due jobs and calls their worker URLs.

Per worker, one claim loop: it claims as many due jobs as the worker's limits and this
process's free in-flight slots allow, starts one HTTP call per job, and then sleeps until
the next thing can happen: the time the claim script says the next job or token is due, a
wake-up (``wakeups.py``: jobs due here or on another coordinator, a slot freed, a retry
due). Responses are turned into receipts and settled in batches by one flusher per worker,
so Redis sees a few calls per batch of jobs, not a few per job.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from collections import defaultdict
from typing import Any, Callable

from .config import Config, WorkerConfig
from .loops import MAX_IDLE_S, OutageBackoff
from .security import receipt_token, signed_headers
from .store import Claim, ClaimedJob, HoldBack, Receipt, Store
from .transport import NotSentError, Response, SendWindow, Transport, TransportError
from .wakeups import Event, Listener, Wakeups

log = logging.getLogger("redisq.dispatch")

SETTLE_BATCH = 500
ERROR_BODY_CHARS = 300
RESULT_MAX_BYTES = 16 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_RETRY_AFTER_S = 86400.0
HOLD_BACK_MIN_MS = 1  # a throttled job written at least this late after its claim holds its key back

# observer(event, job_id, attempt, detail): "dispatched", "accepted" (202), "settled"
# ("settled" with "returned (...)" for a throttled job that was not sent within send_window)
Observer = Callable[[str, str, int, str], None]


def retry_after_ms(value: str | None) -> int:
    """``Retry-After`` (seconds, or an HTTP date) in ms, at most a day; -1 when absent or unreadable."""
    if not value:
        return -1
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return -1
    if not math.isfinite(seconds):
        return -1
    return int(min(max(0.0, seconds), MAX_RETRY_AFTER_S) * 1000)


def _error_text(resp: Response) -> str:
    snippet = resp.body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    return f"HTTP {resp.status}" + (f": {snippet}" if snippet else "")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def receipt_from_response(job: ClaimedJob, resp: Response) -> Receipt | None:
    """The worker's HTTP response as a receipt; None for 202 (the receipt comes later).

    2xx = success (a small JSON body is kept as the result); 429 and 503 = failure, and with
    Retry-After back-pressure (settle pauses the key and does not count the attempt); 401 =
    failure, retried (the worker refused the request's signature: a key mismatch, fixed by
    configuration, must not kill the job); other 4xx = permanent failure; anything else =
    failure."""
    status = resp.status
    if status == 202:
        return None

    def receipt(outcome: str, **fields: Any) -> Receipt:
        return Receipt(job.suffix, job.attempt, outcome, seq=job.seq, **fields)

    if 200 <= status < 300:
        result = ""
        if resp.body and not resp.truncated and len(resp.body) <= RESULT_MAX_BYTES:
            try:
                text = resp.body.decode("utf-8")
                json.loads(text, parse_constant=_reject_constant)
                result = text
            except (ValueError, RecursionError):  # not UTF-8 JSON (or NaN/Infinity): not kept
                result = ""
        return receipt("success", result_json=result)
    if status in (429, 503):
        return receipt("failure", error=_error_text(resp), retry_after_ms=retry_after_ms(resp.headers.get("retry-after")))
    if status == 401:  # the worker refused our signature: a key mismatch an operator fixes, so retried
        return receipt("failure", error=_error_text(resp))
    if 400 <= status < 500:
        return receipt("permanent", error=_error_text(resp))
    return receipt("failure", error=_error_text(resp))


class ClaimLateness:
    """How late one claim's throttled jobs are written, and what to tell Redis about it.

    Lateness is measured from just before the claim was sent to Redis, so it is never less
    than the real delay after the claim on the Redis clock. A bucket that was short of full
    at the claim loses nothing to a lateness below that slack (a key served at its pace);
    beyond it, each report carries the slack, the cost the claim drew and the lateness
    reported before, so Redis takes back only the rest (``lua/hold_back.lua``)."""

    def __init__(self, claim: Claim, started: float):
        self.started = started
        self.total_slack_ms = claim.total_slack_ms
        self.key_slack_ms: dict[str, float] = {}
        self.key_costs: dict[str, float] = defaultdict(float)
        for job in claim.jobs:
            if job.key_slack_ms is not None:
                self.key_slack_ms[job.throttle_key] = job.key_slack_ms
                self.key_costs[job.throttle_key] += job.cost
        self.total_cost = sum(job.cost for job in claim.jobs)
        self.reported_ms: dict[tuple[str, str], int] = {}

    def written(self, job: ClaimedJob, at: float) -> list[HoldBack]:
        late_ms = math.ceil((at - self.started) * 1000)
        reports = []
        if job.throttle_key in self.key_slack_ms:
            reports.append(self._report("key", job.throttle_key, self.key_slack_ms[job.throttle_key],
                                        self.key_costs[job.throttle_key], late_ms))
        if self.total_slack_ms is not None:
            reports.append(self._report("worker", "", self.total_slack_ms, self.total_cost, late_ms))
        return [r for r in reports if r is not None]

    def _report(self, bucket: str, throttle_key: str, slack_ms: float, cost: float, late_ms: int) -> HoldBack | None:
        reported_ms = self.reported_ms.get((bucket, throttle_key), 0)
        if late_ms <= slack_ms or late_ms < reported_ms + HOLD_BACK_MIN_MS:
            return None
        self.reported_ms[(bucket, throttle_key)] = late_ms
        return HoldBack(bucket, throttle_key, slack_ms, cost, max(reported_ms, math.floor(slack_ms)), late_ms)


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


class Dispatcher:
    def __init__(self, store: Store, config: Config, transport: Transport, secret: bytes,
                 observer: Observer | None = None, on_lease: Listener | None = None,
                 signing_key: bytes | None = None, wakeups: Wakeups | None = None):
        self.store = store
        self.config = config
        self.transport = transport
        self.secret = secret
        self.signing_key = secret if signing_key is None else signing_key  # signs X-Redisq-Signature
        self.observer = observer
        self.wakeups = Wakeups(store.redis) if wakeups is None else wakeups
        self.wakeups.subscribe((Event.JOBS_DUE, Event.SLOT_FREED, Event.RETRY_DUE), self.wake)
        if on_lease is not None:  # (worker, shortest timeout_ms) after a claim, for the poller
            self.wakeups.subscribe(Event.LEASE_STARTED, on_lease)
        self.in_flight = 0
        self._slot_free = asyncio.Event()
        self._wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in config.workers}
        self._settle_ready: dict[str, asyncio.Event] = {name: asyncio.Event() for name in config.workers}
        self._settle_buffer: dict[str, list[Receipt]] = defaultdict(list)
        self._hold_backs: dict[str, list[HoldBack]] = defaultdict(list)  # reports not yet sent
        # Whether the worker's live limits cap its concurrency (the last claim says): a
        # settle then frees a slot that claim loops here and elsewhere may be waiting for.
        self._capped: dict[str, bool] = {name: w.concurrency is not None for name, w in config.workers.items()}
        self._calls: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._flushers: list[asyncio.Task[None]] = []
        self._stopping = False  # no more claims
        self._closing = False  # no more settling by the flushers (stop() settles the rest)
        self._receipt_url_json_prefix = json.dumps(f"{config.base_url}/job/")[:-1]  # without the closing quote
        self._unsent_warning = UnsentWarning(config.send_window_s)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        for worker in self.config.workers.values():
            self._loops.append(asyncio.create_task(self._claim_loop(worker), name=f"claim:{worker.name}"))
            self._flushers.append(asyncio.create_task(self._flush_loop(worker), name=f"settle:{worker.name}"))
        await self.wakeups.start()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let in-flight calls finish within ``grace_s``, settle what they
        answered. Calls still running after that are abandoned: their leases expire and
        the jobs are retried."""
        self._stopping = True
        for event in self._wake.values():
            event.set()
        self._slot_free.set()
        for task in self._loops:
            task.cancel()
        if self._loops:
            await asyncio.wait(self._loops, timeout=MAX_IDLE_S + 1)
        await self.wakeups.stop()
        if self._calls:
            log.info("waiting up to %.1f s for %d in-flight dispatches", grace_s, len(self._calls))
            _, pending = await asyncio.wait(set(self._calls), timeout=grace_s)
            if pending:
                log.warning("%d dispatches did not finish within the grace period; their leases will expire and they will be retried", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        # The flushers end by the flag, not by cancel: on Python 3.11 a cancel that lands
        # inside a redis-py call can be swallowed, and a loop waiting for it would never end.
        self._closing = True
        for event in self._settle_ready.values():
            event.set()
        if self._flushers:
            _, pending = await asyncio.wait(self._flushers, timeout=max(1.0, grace_s))
            for task in pending:
                task.cancel()
        for name, buffer in self._settle_buffer.items():
            if buffer:
                try:
                    await asyncio.wait_for(self._flush_all(self.config.workers[name]), timeout=max(1.0, grace_s))
                except Exception as e:  # timed out, or Redis still failing
                    log.warning("could not settle %d receipts of %s at shutdown (%s); their leases will "
                                "expire and the jobs will be retried", len(buffer), name, e)
        await self.transport.close()

    def wake(self, worker: str) -> None:
        event = self._wake.get(worker)
        if event is not None:
            event.set()

    # -- claiming --------------------------------------------------------------------------
    async def _claim_loop(self, worker: WorkerConfig) -> None:
        wake = self._wake[worker.name]
        backoff = OutageBackoff(f"dispatcher ({worker.name})")
        batch = self.config.claim_batch
        while not self._stopping:
            free = self.config.max_in_flight - self.in_flight
            if free <= 0:
                self._slot_free.clear()
                if not self._stopping:
                    await self._slot_free.wait()
                continue
            # Reserve the slots first, so that other workers' loops cannot take them while
            # this claim runs; and clear the wake-up first, so one that comes meanwhile counts.
            reserved = min(batch, free)
            self.in_flight += reserved
            wake.clear()
            # Before the claim runs on the Redis clock: a send measured from here is never
            # later after the claim than it seems.
            claim_started = time.monotonic()
            try:
                claim = await self.store.claim(worker, reserved)
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: back off, never end the loop
                self._release(reserved)
                await backoff.failed(e)
                continue
            self._release(reserved - len(claim.jobs))
            self._capped[worker.name] = claim.capped
            lateness = ClaimLateness(claim, claim_started) if claim.rated and claim.jobs else None
            for job in claim.jobs:
                self._start_call(worker, job, self._send_window(worker, job, lateness))
            if claim.jobs:
                self.wakeups.publish(Event.LEASE_STARTED, worker.name, min(job.timeout_ms for job in claim.jobs))
            if claim.wait_ms == 0:
                await asyncio.sleep(0)
                continue
            if self._stopping:  # stop() may have come while the claim ran
                break
            timeout_s = MAX_IDLE_S if claim.wait_ms < 0 else min(MAX_IDLE_S, claim.wait_ms / 1000)
            try:
                await asyncio.wait_for(wake.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass

    def _release(self, slots: int) -> None:
        if slots:
            self.in_flight -= slots
            self._slot_free.set()

    # -- calling workers ---------------------------------------------------------------------
    def _send_window(self, worker: WorkerConfig, job: ClaimedJob, lateness: "ClaimLateness | None") -> SendWindow | None:
        """A throttled job must be written within send_window of its claim, else it is
        returned unsent; written late, it holds its buckets back (``ClaimLateness``)."""
        if lateness is None:
            return None

        def written(at: float) -> None:
            reports = lateness.written(job, at)
            if reports:
                self._hold_backs[worker.name].extend(reports)
                self._settle_ready[worker.name].set()

        return SendWindow(lateness.started + self.config.send_window_s, written)

    def _start_call(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None = None) -> None:
        """Start one call; its in-flight slot was reserved before the claim."""
        task = asyncio.create_task(self._call(worker, job, window))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def dispatch_body(self, job: ClaimedJob) -> bytes:
        # Worker names and job ids are drawn from [A-Za-z0-9._~:-] (keys.py), so they need no
        # JSON escaping; args are already JSON text.
        job_id = job.id
        return (
            f'{{"jobId":"{job_id}","worker":"{job.worker}","attempt":{job.attempt},"args":{job.args_json},'
            f'"receiptUrl":{self._receipt_url_json_prefix}{job_id}/receipt","receiptToken":'
            f'"{receipt_token(self.secret, job_id, job.attempt, job.seq)}"}}'
        ).encode()

    def request_headers(self, body: bytes) -> dict[str, str]:
        """Content type and the signature headers (``security.signed_headers``)."""
        return {**JSON_HEADERS, **signed_headers(self.signing_key, body)}

    async def _call(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None = None) -> None:
        receipt: Receipt | None
        try:
            if self.observer:
                self.observer("dispatched", job.id, job.attempt, worker.url)
            try:
                body = self.dispatch_body(job)
                resp = await self.transport.post(worker.url, body, self.request_headers(body), job.timeout_ms / 1000,
                                                 window=window)
                receipt = receipt_from_response(job, resp)
            except NotSentError as e:
                receipt = Receipt(job.suffix, job.attempt, "unsent", error=str(e), seq=job.seq)
            except TransportError as e:
                receipt = Receipt(job.suffix, job.attempt, "failure", error=str(e), seq=job.seq)
            except Exception as e:  # never lose the attempt to a bug: it fails and is retried
                log.exception("dispatching %s failed unexpectedly", job.id)
                receipt = Receipt(job.suffix, job.attempt, "failure", error=f"dispatch error: {type(e).__name__}: {e}",
                                  seq=job.seq)
        finally:
            self._release(1)
        if receipt is None:
            if self.observer:
                self.observer("accepted", job.id, job.attempt, "202: waiting for the worker's receipt")
            return
        self._settle_buffer[worker.name].append(receipt)
        self._settle_ready[worker.name].set()

    # -- settling ------------------------------------------------------------------------------
    async def _flush_loop(self, worker: WorkerConfig) -> None:
        ready = self._settle_ready[worker.name]
        backoff = OutageBackoff(f"settler ({worker.name})")
        while not self._closing:
            await ready.wait()
            ready.clear()
            try:
                await self._flush_all(worker)
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: keep the receipts, back off
                if self._closing:
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
        buffer = self._settle_buffer[worker.name]
        while buffer:
            batch = buffer[:SETTLE_BATCH]
            del buffer[:len(batch)]
            try:
                words = await self.store.settle(worker, batch)
            except BaseException:
                buffer[0:0] = batch  # settled again later: a repeat is answered 'duplicate'
                raise
            self._settled(worker, batch, words)

    def _settled(self, worker: WorkerConfig, batch: list[Receipt], words: list[str]) -> None:
        self.after_settle(worker.name, words)
        stale = words.count("stale")
        if stale:
            log.info("%s: %d responses answered attempts that had already ended (lease expired or job reaped)", worker.name, stale)
        returned = words.count("returned")
        if returned:
            self._unsent_warning.note(worker.name, returned)
        if self.observer:
            for receipt, word in zip(batch, words):
                self.observer("settled", f"{worker.name}:{receipt.suffix}", receipt.attempt,
                              word + (f" ({receipt.error})" if receipt.error else ""))

    def after_settle(self, worker_name: str, words: list[str]) -> None:
        """A settle may free a concurrency slot or schedule a retry sooner than the claim loop
        planned to look."""
        self.attempts_ended(worker_name, retries_due="retrying" in words or "returned" in words)

    def attempts_ended(self, worker_name: str, retries_due: bool) -> None:
        """Attempts of the worker ended (settled, cancelled, reaped): a capped worker has a
        free slot (SLOT_FREED: the claim loops here and on the other coordinators); a retry or
        a returned job may be due sooner than the claim loop planned (RETRY_DUE: here)."""
        if self._capped.get(worker_name, False):
            self.wakeups.publish(Event.SLOT_FREED, worker_name)
        elif retries_due:
            self.wakeups.publish(Event.RETRY_DUE, worker_name)
