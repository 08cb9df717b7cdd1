"""The key layout: the one place that names Redis keys.

Every key of a worker shares the hash tag ``{<worker>}``, so each Lua script touches a
single hash slot and the same scripts run on one Redis and on Redis Cluster::

    redisq:{shopify}:keys             zset  throttle key -> ms when it can next be served
    redisq:{shopify}:queue:<key>      zset  queue member -> run_at_ms (scheduled + retrying)
    redisq:{shopify}:kbucket:<key>    hash  tokens, updated_ms, paused_until_ms (one key's bucket)
    redisq:{shopify}:running          zset  job suffix -> lease_deadline_ms
    redisq:{shopify}:finished         zset  job suffix -> purge_at_ms: an earlier version's; purge
                                            empties it, nothing adds to it (a finished job is
                                            purged by its state index: finished_ms + retention)
    redisq:{shopify}:buckets          zset  throttle key -> ms its bucket is full (purge deletes it then)
    redisq:{shopify}:bucket           hash  tokens, updated_ms, paused_until_ms (worker-wide)
    redisq:{shopify}:limits           hash  the live limits (rate, burst, ...; see limits.py)
    redisq:{shopify}:stats            hash  counters: scheduled, retrying, succeeded, dead, cancelled,
                                            throttled (answers that pushed back: 429, ...)
    redisq:{shopify}:dispatched       hash  second % 300 -> "<unix second>:<jobs claimed>"
                                            (the last 5 minutes, DISPATCHED_RING_S in common.lua)
    redisq:{shopify}:seq              int   enqueue counter (orders jobs due at the same ms)
    redisq:{shopify}:reply:<tag>      str   a claim's answer, kept until the loop's next claim
                                            (60 s at most) so that a repeat of the claim returns it
    redisq:{shopify}:job:<suffix>     hash  one job (its fields: job_fields.py)
    redisq:{shopify}:layout           str   "2" once every job hash of the worker has the short
                                            field names (migrate.py)
    redisq:{shopify}:history:<suffix> list  its last 25 attempts, oldest first (JSON texts)
    redisq:{shopify}:state:<state>    zset  the listing index of a state: job suffix -> run_at_ms
                                            (scheduled, retrying) or finished_ms (succeeded, dead,
                                            cancelled); running jobs are listed from ``running``;
                                            scheduled holds only the jobs with a throttle key (the
                                            others are listed from ``queue:``)
    redisq:{shopify}:state:<state>:<key>  zset  the same for one throttle key's jobs (running:
                                            suffix -> the attempt's start ms); none for scheduled
                                            (the key's queue is its listing)
    redisq:{shopify}:events           stream  every state change (job, state, attempt), about
                                            the last 10,000 kept (GET /events)
    redisq:{shopify}:operation:<id>   hash  a bulk retry's or delete's progress (an hour)
    redisq:{shopify}:schedules        zset  schedule suffix -> next_fire_ms (schedules not paused)
    redisq:{shopify}:schedule-ids     set   every schedule suffix of the worker, paused or not
    redisq:{shopify}:schedule:<suffix>       hash  one cron schedule's spec and state
    redisq:{shopify}:schedule-jobs:<suffix>  list  its latest tick jobs' suffixes, newest first
    redisq:{shopify}:wake             sharded pub/sub channel of the worker's wake-ups, on a
                                            Redis Cluster (one Redis: ``redisq:wake``, all workers)
    redisq:{shopify}:slot-probe:1, :2        never exist: the first two KEYS of every script
                                            call, so that Redis Cluster refuses a script
                                            (TRYAGAIN) while the worker's slot is moving
                                            (lua/includes/slot.lua)

A worker that names shared limits (``limits = ["shopify"]``) lives in its limits' slot
instead: its keys are ``redisq:{shopify}/worker/<worker>:...`` (``/`` is in no name, so no
worker's key can be another's), beside the limit's own keys::

    redisq:{shopify}/limit/shopify:limits          hash  the limit's live fields (rate, burst,
                                                   concurrency, total_rate, total_burst, paused)
    redisq:{shopify}/limit/shopify:kbucket:<key>   hash  tokens, updated_ms (one key's bucket,
                                                   expiring once it would be full again)
    redisq:{shopify}/limit/shopify:bucket          hash  tokens, updated_ms (over all keys)
    redisq:{shopify}/limit/shopify:running         zset  job key -> attempt, the attempts in flight
                                                   under it (claim drops those that ended)
    redisq:{shopify}/limit/shopify:paused-keys     hash  throttle key -> 1 (paused by an operator)
    redisq:{shopify}/limit/shopify:turns:<key>     zset  worker -> ms it began to wait for the key's
                                                   tokens: whose turn it is
    redisq:{shopify}/limit/shopify:kbucket:<key>:reported  zset  '<mark>:<cost>' -> mark, the key's
                                                   latest reported calls (lua/report_cost.lua)

Not of one worker (a key of its own, in no script with a worker's keys)::

    redisq:coordinators               zset  a coordinator's description (JSON: id, host, pid,
                                            startedAt, version) -> ms (Redis's clock) after
                                            which it counts as gone unless it says so again

A job without a ``throttleKey`` belongs to the key ``""``: its queue is
``redisq:{shopify}:queue:`` and its bucket ``redisq:{shopify}:kbucket:``.

Scripts get the keys they know of in KEYS; the keys that claim, settle, reap, cancel and
purge find through a zset or a job's fields (job hashes, a throttle key's queue and bucket)
are built from the prefixes in ARGV (``job_prefix``, ``queue_prefix``,
``key_bucket_prefix``), which share the worker's slot.

A job id is ``<worker>:<suffix>``, so the id alone leads to its keys; so is a schedule id,
and the job a schedule's tick creates is ``<worker>:<schedule suffix>@<tick unix ms>``: a
caller's id cannot hold ``@`` (``CALLER_SUFFIX_RE``), so no caller can take a tick's job.  A
queue member is the job's 12-hex-digit enqueue sequence followed by its suffix: jobs due
at the same millisecond leave in the order they were enqueued.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "redisq"
WAKE_CHANNEL = f"{PREFIX}:wake"
SHARED_SECRET_KEY = f"{PREFIX}:secret"
# The consumer group on each event stream of a worker with ``on_dead``: its coordinators
# share the deaths to call back, each entry to one of them (dead_letters.py).
DEAD_LETTER_GROUP = f"{PREFIX}:on-dead"
COORDINATORS_KEY = f"{PREFIX}:coordinators"
# Keys of no worker, as the scripts' specs name them (script_specs.py).
GLOBAL_KEYS = {"coordinators": COORDINATORS_KEY}

WORKER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
TICK_MARK = "@"  # between a schedule's suffix and the tick's time, in the suffix of a tick's job
CALLER_SUFFIX_RE = re.compile(r"^[A-Za-z0-9._~:-]{1,200}\Z")  # an id a caller gives (a job's, a schedule's)
JOB_SUFFIX_RE = re.compile(r"^[A-Za-z0-9._~:@-]{1,200}\Z")  # any job's: a caller's, or a tick's
THROTTLE_KEY_MAX_CHARS = 200
QUEUE_SEQ_DIGITS = 12


@dataclass(frozen=True)
class WorkerKeys:
    """All keys of one worker."""

    worker: str
    slot: str | None = None  # the hash tag of the limits it names; None = its own name

    @property
    def tag(self) -> str:
        if self.slot is None:
            return f"{PREFIX}:{{{self.worker}}}"
        return f"{PREFIX}:{{{self.slot}}}/worker/{self.worker}"

    @property
    def throttle_keys(self) -> str:
        return f"{self.tag}:keys"

    @property
    def queue_prefix(self) -> str:
        return f"{self.tag}:queue:"

    def queue(self, throttle_key: str = "") -> str:
        return self.queue_prefix + throttle_key

    @property
    def scheduled(self) -> str:
        """The queue of the jobs that have no throttle key."""
        return self.queue("")

    @property
    def key_bucket_prefix(self) -> str:
        return f"{self.tag}:kbucket:"

    def key_bucket(self, throttle_key: str = "") -> str:
        return self.key_bucket_prefix + throttle_key

    @property
    def running(self) -> str:
        return f"{self.tag}:running"

    @property
    def finished(self) -> str:
        return f"{self.tag}:finished"

    @property
    def layout(self) -> str:
        return f"{self.tag}:layout"

    @property
    def bucket(self) -> str:
        return f"{self.tag}:bucket"

    @property
    def buckets(self) -> str:
        return f"{self.tag}:buckets"

    @property
    def limits(self) -> str:
        return f"{self.tag}:limits"

    @property
    def stats(self) -> str:
        return f"{self.tag}:stats"

    @property
    def dispatched(self) -> str:
        return f"{self.tag}:dispatched"

    @property
    def seq(self) -> str:
        return f"{self.tag}:seq"

    def reply(self, call_tag: str) -> str:
        """Where a tagged claim keeps its answer for its repeats."""
        return f"{self.tag}:reply:{call_tag}"

    @property
    def job_prefix(self) -> str:
        """Scripts that find job suffixes in a zset build job keys from this prefix."""
        return f"{self.tag}:job:"

    def job(self, suffix: str) -> str:
        return self.job_prefix + suffix

    @property
    def history_prefix(self) -> str:
        """Scripts that end attempts build a job's history key from this prefix."""
        return f"{self.tag}:history:"

    def history(self, suffix: str) -> str:
        return self.history_prefix + suffix

    @property
    def state_prefix(self) -> str:
        """Scripts build the listing indexes from this prefix (``state_index``)."""
        return f"{self.tag}:state:"

    def state_index(self, state: str, throttle_key: str = "") -> str:
        """The index of the worker's jobs in ``state`` (of one throttle key's, when given);
        running jobs of the whole worker are listed from ``running`` instead."""
        if not throttle_key:
            return self.state_prefix + state
        return f"{self.state_prefix}{state}:{throttle_key}"

    @property
    def events(self) -> str:
        return f"{self.tag}:events"

    def operation(self, operation_suffix: str) -> str:
        return f"{self.tag}:operation:{operation_suffix}"

    @property
    def schedules(self) -> str:
        return f"{self.tag}:schedules"

    @property
    def schedule_ids(self) -> str:
        return f"{self.tag}:schedule-ids"

    @property
    def schedule_prefix(self) -> str:
        """Scripts that find schedule suffixes in a zset build schedule keys from this prefix."""
        return f"{self.tag}:schedule:"

    def schedule(self, suffix: str) -> str:
        return self.schedule_prefix + suffix

    def schedule_jobs(self, suffix: str) -> str:
        return f"{self.tag}:schedule-jobs:{suffix}"

    @property
    def wake_channel(self) -> str:
        """The worker's sharded channel on a cluster (SPUBLISH): it stays on the worker's master."""
        return f"{self.tag}:wake"

    @property
    def migration_probes(self) -> list[str]:
        """Two keys that never exist, named first in every script call of the worker: a
        call naming a key that is missing from a slot being migrated is refused whole
        (TRYAGAIN) by either node, so no script runs half while the slot moves."""
        return [f"{self.tag}:slot-probe:1", f"{self.tag}:slot-probe:2"]

    @property
    def queue_keys(self) -> list[str]:
        """The first KEYS of the scripts that read or change a worker's queue, in the order
        they give them to ``new_queue`` (lua/includes/jobs.lua)."""
        return [self.throttle_keys, self.seq, self.stats, self.limits, self.events]

    @property
    def queue_args(self) -> list[str]:
        """The ARGV entries that go with ``queue_keys``, in order."""
        return [self.queue_prefix, self.key_bucket_prefix, self.state_prefix, self.history_prefix]


@dataclass(frozen=True)
class LimitKeys:
    """All keys of one shared limit (``[limits.NAME]``), in the slot ``{slot}``."""

    name: str
    slot: str

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.slot}}}/limit/{self.name}"

    @property
    def limits(self) -> str:
        return f"{self.tag}:limits"

    @property
    def key_bucket_prefix(self) -> str:
        return f"{self.tag}:kbucket:"

    def key_bucket(self, throttle_key: str = "") -> str:
        return self.key_bucket_prefix + throttle_key

    @property
    def bucket(self) -> str:
        return f"{self.tag}:bucket"

    @property
    def running(self) -> str:
        return f"{self.tag}:running"

    @property
    def paused_keys(self) -> str:
        return f"{self.tag}:paused-keys"

    @property
    def turns_prefix(self) -> str:
        return f"{self.tag}:turns:"

    @property
    def claim_keys(self) -> list[str]:
        """What claim is given per limit, in order (``read_shared_limits``, lua/includes/shared.lua)."""
        return [self.limits, self.bucket, self.running, self.paused_keys]

    @property
    def claim_args(self) -> list[str]:
        return [self.name, self.key_bucket_prefix, self.turns_prefix]


def job_id(worker: str, suffix: str) -> str:
    return f"{worker}:{suffix}"


def split_job_id(job_id_text: str) -> tuple[str, str] | None:
    """``"send-email:abc"`` -> ``("send-email", "abc")``; None when it is not a job id."""
    worker, sep, suffix = job_id_text.partition(":")
    if not sep or not WORKER_NAME_RE.match(worker) or not JOB_SUFFIX_RE.match(suffix):
        return None
    return worker, suffix


def job_key(job_id_text: str, slot: str | None = None) -> str | None:
    """The job's hash key; ``slot``: its worker's (``WorkerConfig.slot``)."""
    parts = split_job_id(job_id_text)
    if parts is None:
        return None
    return WorkerKeys(parts[0], slot).job(parts[1])


def tick_job_suffix(schedule_suffix: str, fire_ms: int) -> str:
    """The suffix of the job a schedule's tick at ``fire_ms`` creates: one tick, one job id,
    which no caller can give (``TICK_MARK`` is not in ``CALLER_SUFFIX_RE``)."""
    return f"{schedule_suffix}{TICK_MARK}{fire_ms}"
