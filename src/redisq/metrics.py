"""The coordinator's Prometheus series, in a registry of its own (never the global one: a
process may hold many coordinators, as the tests do).

Per process (what this coordinator did since it started; sum them over coordinators):
``redisq_dispatched_total``, ``redisq_succeeded_total``, ``redisq_failed_total``,
``redisq_retried_total``, ``redisq_dead_total``, ``redisq_throttled_total``,
``redisq_reaped_total`` (per worker), ``redisq_dispatch_duration_seconds`` and
``redisq_dispatch_lag_seconds`` (histograms per worker), ``redisq_in_flight`` and
``redisq_redis_up``.

Global (read from Redis at each scrape, so every coordinator reports the same):
``redisq_jobs{worker, state}``, ``redisq_limit{worker, limit}``, ``redisq_paused``,
``redisq_back_pressure_seconds``, ``redisq_throttle_keys_waiting`` (per worker).

``Signals`` (signals.py) counts; ``render`` writes the text format with the global series
of the states given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .engine import WorkerState

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: serverless workers answer in 50-500 ms, a job may take up to its timeout.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)
JOB_STATES = ("scheduled", "retrying", "running", "succeeded", "dead", "cancelled")


class WorkerStates(Collector):
    """The global series, from the worker states read at the scrape (``Metrics.render``)."""

    def __init__(self) -> None:
        self.states: Sequence[WorkerState] = ()

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("redisq_jobs", "Jobs of the worker in each state, in Redis (all coordinators)",
                                 labels=["worker", "state"])
        limit = GaugeMetricFamily("redisq_limit", "The worker's live limits in Redis (absent: unlimited); "
                                  "rate and total_rate per second, timeout in seconds", labels=["worker", "limit"])
        paused = GaugeMetricFamily("redisq_paused", "1 while the worker is paused (POST /workers/NAME/pause)",
                                   labels=["worker"])
        back_pressure = GaugeMetricFamily("redisq_back_pressure_seconds",
                                          "Seconds the worker stays paused after a Retry-After", labels=["worker"])
        keys_waiting = GaugeMetricFamily("redisq_throttle_keys_waiting", "Throttle keys of the worker with jobs "
                                         "waiting", labels=["worker"])
        for s in self.states:
            counts = (s.scheduled, s.retrying, s.running, s.succeeded, s.dead, s.cancelled)
            for state, count in zip(JOB_STATES, counts, strict=True):
                jobs.add_metric([s.name, state], count)
            live = s.limits
            for name, value in (("rate", live.rate), ("burst", live.bucket_size), ("concurrency", live.concurrency),
                                ("total_rate", live.total_rate), ("total_burst", live.total_bucket_size),
                                ("timeout", live.timeout_s)):
                if value is not None:
                    limit.add_metric([s.name, name], value)
            paused.add_metric([s.name], 1 if live.paused else 0)
            back_pressure.add_metric([s.name], s.back_pressure_s)
            keys_waiting.add_metric([s.name], s.throttle_keys)
        if self.states:
            yield from (jobs, limit, paused, back_pressure, keys_waiting)


@dataclass(frozen=True)
class WorkerSeries:
    """One worker's counters and histograms, looked up once (a labels() call per job costs
    more than the count itself)."""

    dispatched: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    dead: Counter
    throttled: Counter
    reaped: Counter
    dispatch_duration: Histogram
    dispatch_lag: Histogram


class Metrics:
    """One coordinator's series. Counters and histograms are labelled by worker, each
    configured worker's from zero; ``of(worker)`` holds a worker's."""

    def __init__(self, workers: Iterable[str]):
        self.registry = CollectorRegistry()
        r = self.registry

        def per_worker(name: str, help_text: str) -> Counter:
            return Counter(name, help_text, ["worker"], registry=r)

        self.dispatched = per_worker("redisq_dispatched", "Calls written to the worker (attempts made) by this process")
        self.succeeded = per_worker("redisq_succeeded", "Jobs that succeeded, settled by this process")
        self.failed = per_worker("redisq_failed", "Attempts that failed (an error answer, none, or a timeout), "
                                 "settled by this process; each is retried or makes its job dead")
        self.retried = per_worker("redisq_retried", "Failed attempts whose job runs again after its backoff")
        self.dead = per_worker("redisq_dead", "Jobs that died (a permanent failure or out of attempts), settled by "
                               "this process")
        self.throttled = per_worker("redisq_throttled", "Answers that pushed back (429/503 with Retry-After, or a "
                                    "receipt's retryAfter): the key or worker paused, the attempt not counted")
        self.reaped = per_worker("redisq_reaped", "Attempts whose lease ran out without a receipt, reaped by this "
                                 "process (retried, or dead when it was the last)")
        self.dispatch_duration = Histogram("redisq_dispatch_duration_seconds", "The HTTP call to the worker, from "
                                           "the request to its whole answer (or the failure)", ["worker"],
                                           buckets=DURATION_BUCKETS_S, registry=r)
        self.dispatch_lag = Histogram("redisq_dispatch_lag_seconds",
                                      "When a call was written minus when its job was due", ["worker"],
                                      buckets=LAG_BUCKETS_S, registry=r)
        self.in_flight = Gauge("redisq_in_flight", "Calls to workers open now in this process", registry=r)
        self.redis_up = Gauge("redisq_redis_up", "1 while this process's calls reach Redis", registry=r)
        self.redis_up.set(1)
        self._workers: dict[str, WorkerSeries] = {}
        for worker in workers:
            self.of(worker)
        self._states = WorkerStates()
        r.register(self._states)

    def of(self, worker: str) -> WorkerSeries:
        series = self._workers.get(worker)
        if series is None:
            series = self._workers[worker] = WorkerSeries(
                dispatched=self.dispatched.labels(worker), succeeded=self.succeeded.labels(worker),
                failed=self.failed.labels(worker), retried=self.retried.labels(worker), dead=self.dead.labels(worker),
                throttled=self.throttled.labels(worker), reaped=self.reaped.labels(worker),
                dispatch_duration=self.dispatch_duration.labels(worker), dispatch_lag=self.dispatch_lag.labels(worker))
        return series

    def render(self, states: Sequence[WorkerState], in_flight: int) -> bytes:
        """The text format: this process's series, and the global ones of ``states`` (none
        when Redis could not be read)."""
        self.in_flight.set(in_flight)
        self._states.states = states
        try:
            return generate_latest(self.registry)
        finally:
            self._states.states = ()
