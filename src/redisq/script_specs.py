"""One spec per script: the KEYS and ARGV it is given, in order, and what it answers.

The Lua scripts read their KEYS and ARGV by position at their top (``lua/*.lua``); the
engine builds them in the same order (``engine/``). The spec is the one place where that
order is written down for both sides: every call through the engine's choke point
(``WorkerBase.run``) is checked against it, and ``tests/test_script_specs.py`` checks each
spec against the positions its script reads. Key names are ``WorkerKeys`` attributes
(``job``, ``schedule``, ... take the call's suffix), ``LimitKeys`` attributes (a shared
limit's), or ``keys.GLOBAL_KEYS``; the keys a script finds by prefix
(a job hash, a throttle key's queue and bucket) are not in KEYS but built from the
``*_prefix`` ARGV.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_KEYS = ("throttle_keys", "seq", "stats", "limits", "events")  # WorkerKeys.queue_keys
QUEUE_ARGS = ("queue_prefix", "key_bucket_prefix", "state_prefix", "history_prefix")  # WorkerKeys.queue_args
ATTEMPT_KEYS = (*QUEUE_KEYS, "running", "bucket", "buckets")
SHARED_LIMIT_KEYS = ("limits", "bucket", "running", "paused_keys")  # LimitKeys.claim_keys
SHARED_LIMIT_ARGS = ("limit", "key_bucket_prefix", "turns_prefix")  # LimitKeys.claim_args
RETRY_POLICY_ARGS = (*QUEUE_ARGS, "job_prefix", "backoff_initial_ms", "backoff_factor", "backoff_max_ms",
                     "jitter", "random_seed")


class ScriptCallError(ValueError):
    """The engine built a script call that does not match the script's spec (a bug)."""


@dataclass(frozen=True)
class ScriptSpec:
    name: str
    keys: tuple[str, ...]  # the fixed KEYS, in order
    args: tuple[str, ...]  # the fixed ARGV, in order
    answers: str
    item_keys: tuple[str, ...] = ()  # KEYS per item after the fixed ones
    item_args: tuple[str, ...] = ()  # ARGV per item after the fixed ones
    items_vary: bool = False  # items of several shapes (tick): only the fixed part is checked
    # Whether the choke point may send the call again when its answer was lost (a dropped
    # connection): a repeat changes nothing more and answers as the first did. Claim keeps
    # its answer under its "reply" key for a repeat with the same tag; the others are
    # repeatable as they are (settle answers a repeated receipt 'duplicate'), except those
    # marked False, whose callers are told that the call may or may not have run.
    repeatable: bool = True

    def check(self, keys: int, args: int) -> None:
        """Raise ScriptCallError unless ``keys`` KEYS and ``args`` ARGV fit this spec."""
        extra_keys, extra_args = keys - len(self.keys), args - len(self.args)
        if extra_keys < 0 or extra_args < 0:
            raise ScriptCallError(f"{self.name}: {keys} KEYS and {args} ARGV, fewer than its "
                                  f"{len(self.keys)} KEYS and {len(self.args)} ARGV")
        if self.items_vary:
            return
        items = _items(self.name, "KEYS", extra_keys, len(self.item_keys))
        arg_items = _items(self.name, "ARGV", extra_args, len(self.item_args))
        if self.item_keys and self.item_args and items != arg_items:
            raise ScriptCallError(f"{self.name}: {items} items of KEYS but {arg_items} of ARGV")


def _items(name: str, what: str, extra: int, per_item: int) -> int:
    if per_item == 0:
        if extra:
            raise ScriptCallError(f"{name}: {extra} {what} more than it takes")
        return 0
    if extra % per_item:
        raise ScriptCallError(f"{name}: {extra} {what} after the fixed ones, not a whole number of items of {per_item}")
    return extra // per_item


SPECS: dict[str, ScriptSpec] = {spec.name: spec for spec in (
    ScriptSpec("enqueue", QUEUE_KEYS, QUEUE_ARGS, item_keys=("job",),
               repeatable=False,  # a repeat would answer 'exists' (200) for the jobs it created
               item_args=("suffix", "args", "run_at_ms", "delay_ms", "max_attempts", "timeout_ms", "throttle_key",
                          "cost"),
               answers="{now_ms, wake, per job: its run_at_ms (new) or its hash (existing)}; "
                       "or {'cost', item, bucket, size} when a cost is above a burst"),
    ScriptSpec("claim",  # reply: this call's; then the loop's previous call's (answered: deleted)
               (*QUEUE_KEYS, "running", "bucket", "dispatched", "buckets", "reply", "reply"),
               (*QUEUE_ARGS, "job_prefix", "most", "reply_ttl_ms", "claimer", "worker"),
               item_keys=SHARED_LIMIT_KEYS, item_args=SHARED_LIMIT_ARGS,  # per shared limit the worker names
               answers="{wait_ms, capped, rated, total_slack_ms, shared_total_slacks, per job: suffix, attempt, "
                       "timeout_ms, args, seq, throttle_key, cost, key_slack_ms, run_at_ms, shared_key_slacks}"),
    ScriptSpec("settle", ATTEMPT_KEYS, RETRY_POLICY_ARGS, item_keys=("job",),
               item_args=("suffix", "attempt", "outcome", "error", "result", "retry_after_ms", "digest", "seq",
                          "status"),
               answers="one word per receipt: succeeded | retrying | dead | returned | duplicate | stale | "
                       "cancelled | missing"),
    ScriptSpec("reap", ATTEMPT_KEYS, (*RETRY_POLICY_ARGS, "most", "not_after_ms"),
               answers="{reaped, wait_ms, per attempt ended: suffix, attempt, retrying | dead}"),
    ScriptSpec("hold_back", (*QUEUE_KEYS, "bucket"), (*QUEUE_ARGS, "reports"),
               item_keys=SHARED_LIMIT_KEYS, item_args=SHARED_LIMIT_ARGS,  # per shared limit the worker names
               answers="buckets held back"),
    ScriptSpec("cancel", (*QUEUE_KEYS, "running", "job"), (*QUEUE_ARGS, "suffix"),
               repeatable=False,  # a repeat would answer 'finished' (409) for the job it cancelled
               answers="{'cancelled' | 'finished' | 'missing', the job's hash}"),
    ScriptSpec("purge", ("finished", "stats", "buckets", "limits"),
               ("job_prefix", "most", "key_bucket_prefix", "state_prefix", "history_prefix",
                "succeeded_retention_ms", "dead_retention_ms", "cancelled_retention_ms"),
               answers="{purged, more}"),
    # retry and delete: mode 'ids' is followed by job suffixes, mode 'index' by how many to
    # take from the index of the first state named (the items vary: only the fixed part is checked)
    ScriptSpec("retry", (*QUEUE_KEYS, "finished", "operation"),
               (*QUEUE_ARGS, "job_prefix", "states", "run_at_ms", "delay_ms", "args", "operation_id", "mode"),
               items_vary=True, repeatable=False,  # a repeat would answer 'scheduled' for the jobs it retried
               answers="{now_ms, wake, per job: suffix, retried | missing | its state}"),
    ScriptSpec("delete", (*QUEUE_KEYS, "finished", "operation"),
               (*QUEUE_ARGS, "job_prefix", "states", "operation_id", "mode"),
               items_vary=True, repeatable=False,  # a repeat would answer 'missing' for the jobs it deleted
               answers="{now_ms, 0, per job: suffix, deleted | missing | its state}"),
    ScriptSpec("list", ("state_index", "stats", "running"),
               ("job_prefix", "order", "most", "cursor_member", "cursor_score"), item_args=("field",),
               answers="{queued, retrying, succeeded, dead, cancelled, running, more, per job: suffix, score, "
                       "the fields' values}"),
    ScriptSpec("list_scheduled", ("queue", "state_index", "stats", "running"),
               ("job_prefix", "with_index", "most", "budget", "cursor_source", "cursor_member", "cursor_score"),
               item_args=("field",),
               answers="{queued, retrying, succeeded, dead, cancelled, running, more, next cursor: source, "
                       "member, score, per job: suffix, score, the fields' values}"),
    ScriptSpec("heartbeat", ("running", "job"), ("suffix", "attempt", "seq"),
               answers="{'extended', lease_deadline_ms} | {'missing' | 'stale' | 'finished', detail}"),
    ScriptSpec("migrate_fields", (), (), item_keys=("job",),
               answers="how many of the job hashes it renamed (an earlier layout's long field names)"),
    ScriptSpec("lease", ("running", "job"), ("suffix", "attempt", "seq"),
               answers="ms the running attempt's lease has left; 0 = ended, or not that attempt"),
    ScriptSpec("set_limits", ("limits", "throttle_keys"), ("mode",), item_args=("field", "value"),
               answers="the limits hash after the change"),
    ScriptSpec("report_cost", ("job", "limits", "bucket", "buckets"),
               ("attempt", "actual_cost", "available", "bucket_size", "retry_after_ms", "scope",
                "key_bucket_prefix"),
               item_keys=SHARED_LIMIT_KEYS, item_args=SHARED_LIMIT_ARGS,  # per shared limit the worker names
               answers="'applied' | 'duplicate' | 'stale'"),
    ScriptSpec("limit_state", ("limits", "bucket", "running", "paused_keys", "key_bucket"), ("most",),
               answers="{now_ms, limits, key tokens, total tokens, in flight, paused keys}"),
    ScriptSpec("pause_limit_key", ("paused_keys",), ("throttle_key", "mode"), item_keys=("throttle_keys",),
               answers="1 when it changed anything"),
    ScriptSpec("worker_state", (*QUEUE_KEYS, "running", "bucket", "key_bucket", "dispatched"), QUEUE_ARGS,
               answers="{now_ms, limits, stats, running, keys waiting, tokens, total tokens, back-pressure ms, "
                       "dispatched last minute, bucket_s, dispatched per bucket_s (oldest first)}"),
    ScriptSpec("throttle_keys", ("throttle_keys", "limits"),
               ("queue_prefix", "key_bucket_prefix", "state_prefix", "job_prefix", "most"),
               item_keys=SHARED_LIMIT_KEYS, item_args=SHARED_LIMIT_ARGS,  # per shared limit the worker names
               answers="{now_ms, keys waiting, per key: key, ready_ms, waiting, running, tokens, paused_ms, "
                       "per shared limit: tokens, paused, paused_ms}"),
    ScriptSpec("coordinator_alive", ("coordinators",), ("description", "alive_or_gone", "alive_ms"),
               answers="coordinators alive"),
    ScriptSpec("coordinators", ("coordinators",), (), answers="{now_ms, per coordinator: description, until_ms}"),
    ScriptSpec("schedule_save", ("schedules", "schedule_ids", "schedule"),
               ("suffix", "cron", "timezone", "args", "max_attempts", "timeout_ms", "catch_up", "next_fire_ms",
                "throttle_key", "cost"), answers="{created}"),
    ScriptSpec("schedule_pause", ("schedules", "schedule"), ("suffix", "pause_or_resume", "next_fire_ms"),
               answers="{'paused' | 'resumed' | 'missing'}"),
    ScriptSpec("schedule_delete", ("schedules", "schedule_ids", "schedule", "schedule_jobs"), ("suffix",),
               answers="1 when it existed"),
    ScriptSpec("schedules_due", ("schedules",), ("schedule_prefix", "most", "horizon_ms"),
               answers="{now_ms, earliest_ms, due_ms, per schedule: suffix, next_fire_ms, revision, cron, timezone, "
                       "catch_up}"),
    ScriptSpec("tick", (*QUEUE_KEYS, "schedules"),
               (*QUEUE_ARGS, "not_before_ms", "max_attempts", "timeout_ms", "count"),
               items_vary=True,
               answers="{now_ms, wake | 'early', per schedule: jobs created (or -1: refused)}"),
)}
