"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), built from the code that
validates requests, not written beside it.

One table, ``OPERATIONS``: each route's method, path, summary, query parameters, request
body and answers. The request schemas come from the validators' own tables and rules:
``model.ENQUEUE_FIELDS`` and its ``NumberRule``s, ``cron.SCHEDULE_FIELDS``,
``limits.PATCH_RULES``, ``receipts.RECEIPT_FIELDS``; ``fields_schema`` refuses a table with a
field that has no schema here (or a schema for a field the table does not have), so a field
added to a validator cannot go undocumented. Which routes need an API token is asked of
``security.is_open_route``, the check ``ApiTokenMiddleware`` makes.

Answers every operation shares are added by ``operation_json``, not repeated in the
table: 400 and 413 for a route that reads a body, 503 for one that reads Redis, 401 for one
that needs a token. Every error body is ``Error`` (``errors.RedisqError.to_json``).

The document holds the operations whose route the app has. ``PLANNED`` names the entries
written ahead of their routes (issue 11's contract): tests/test_openapi.py fails for a route
without an entry, for an entry without a route unless it is planned, and for a planned
entry whose route exists (take it out of ``PLANNED`` then; the schemathesis run checks the
route against its entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..cron import CRON_FORMS, DEFAULT_TIMEZONE, MAX_SCHEDULE_SUFFIX, SCHEDULE_FIELDS
from ..inputs import TIMEOUT_S
from ..keys import CALLER_SUFFIX_RE, THROTTLE_KEY_MAX_CHARS, WORKER_NAME_RE
from ..limits import PATCH_FIELDS, PATCH_RULES, SHARED_PATCH_FIELDS
from ..model import COST, DELAY_S, ENQUEUE_FIELDS, MAX_ATTEMPTS, MAX_UNIX_S, JobState
from ..security import is_open_route
from .http import coordinator_of
from .jobs import MAX_BATCH
from .receipts import RECEIPT_FIELDS, REPORTED, RETRY_AFTER_S

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
# -- schema pieces -----------------------------------------------------------------------------

ANY: Schema = {"description": "Any JSON value"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
COUNT: Schema = {"type": "integer", "minimum": 0}
TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC with milliseconds"}
STATES = [state.value for state in JobState]
FINISHED_STATES = [state.value for state in JobState if state.finished]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def or_null(schema: Schema) -> Schema:
    """``schema`` or ``null``: a field whose validator takes null as absent."""
    if "type" in schema and "$ref" not in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds, "null"]} if "null" not in kinds else schema
    return {"anyOf": [schema, {"type": "null"}]}


def noted(schema: Schema, note: str) -> Schema:
    """``schema`` with ``note`` after its description."""
    return {**schema, "description": f"{schema['description']}{note}"}


def json_pattern(regex: re.Pattern[str]) -> str:
    """A Python regex as JSON Schema (ECMA-262) writes it: its end anchor ``\\Z`` as ``$``."""
    if not regex.pattern.endswith("\\Z"):
        raise ValueError(f"expected a pattern anchored with \\Z: {regex.pattern!r}")
    return regex.pattern[:-2] + "$"


def fields_schema(names: Sequence[str], schemas: Mapping[str, Schema], required: Iterable[str] = (),
                  **extra: Any) -> Schema:
    """An object of exactly the fields ``names`` (a validator's table), each with its schema;
    no other field is admitted. A field of ``names`` without a schema (or the reverse) is a
    ValueError: the document is never built without it."""
    if set(names) != set(schemas):
        missing, stray = sorted(set(names) - set(schemas)), sorted(set(schemas) - set(names))
        raise ValueError(f"fields without a schema: {missing}; schemas without a field: {stray}")
    return {"type": "object", "properties": {name: schemas[name] for name in names},
            "required": list(required), "additionalProperties": False, **extra}


# On a Redis Cluster: each master's address -> "up", or "down: <why>".
MASTERS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}


def answer_schema(properties: Mapping[str, Schema], optional: Iterable[str] = ()) -> Schema:
    """An object the API answers: every property present unless ``optional``, nothing else."""
    left_out = set(optional)
    return {"type": "object", "properties": dict(properties),
            "required": [name for name in properties if name not in left_out], "additionalProperties": False}


def counts_schema(states: Sequence[str]) -> Schema:
    return answer_schema({state: COUNT for state in states})


# -- request bodies: from the validators' tables and rules --------------------------------------

WORKER_NAME: Schema = {"type": "string", "pattern": json_pattern(WORKER_NAME_RE),
                       "description": "A configured worker's name"}
CALLER_ID: Schema = {"type": "string", "pattern": json_pattern(CALLER_SUFFIX_RE),
                     "description": "The id within the worker (not @, which marks the jobs of schedule ticks); "
                                    "absent: one is made"}
RUN_AT: Schema = {"anyOf": [
    {"type": "number", "minimum": 0, "maximum": MAX_UNIX_S, "description": "Unix seconds"},
    {"type": "string", "minLength": 1, "examples": ["2026-12-01T09:00:00+01:00", "2026-12-01 10:00:00 AM"],
     "description": "ISO 8601 (UTC without an offset), '2026-12-01 10:00:00 AM' style (UTC), or unix seconds"},
    {"type": "null"}], "description": "When to run (a time in the past runs now); not with delay"}

ENQUEUE_SCHEMAS: dict[str, Schema] = {
    "worker": WORKER_NAME,
    "args": {**ANY, "description": "Passed to the worker as is (default {})"},
    "runAt": RUN_AT,
    "delay": or_null(DELAY_S.json_schema()),
    "id": or_null(CALLER_ID),
    "maxAttempts": MAX_ATTEMPTS.json_schema(),
    "timeout": or_null(TIMEOUT_S.json_schema()),
    "throttleKey": or_null({"type": "string", "minLength": 1, "maxLength": THROTTLE_KEY_MAX_CHARS,
                            "description": "Printable characters: the bucket the job draws from"}),
    "cost": noted(COST.json_schema(), "; default 1"),
}
NOT_BOTH_RUN_AT_AND_DELAY: Schema = {"not": {
    "required": ["runAt", "delay"],
    "properties": {"runAt": {"not": {"type": "null"}}, "delay": {"not": {"type": "null"}}}}}
ENQUEUE_REQUEST = fields_schema(ENQUEUE_FIELDS, ENQUEUE_SCHEMAS, required=["worker"], **NOT_BOTH_RUN_AT_AND_DELAY)

SCHEDULE_REQUEST = fields_schema(SCHEDULE_FIELDS, {
    **{name: ENQUEUE_SCHEMAS[name] for name in SCHEDULE_FIELDS if name in ENQUEUE_SCHEMAS},
    "cron": {"type": "string", "description": f"A cron expression: {CRON_FORMS}"},
    "timezone": or_null({"type": "string", "minLength": 1,
                         "description": f"An IANA name (default {DEFAULT_TIMEZONE})"}),
    "id": or_null({**CALLER_ID, "maxLength": MAX_SCHEDULE_SUFFIX,
                   "description": "The schedule's id within its worker; absent: cron- and a hash of worker, cron, "
                                  "timezone and args, so posting it again updates it"}),
    "catchUp": {**BOOLEAN, "description": "Fire every missed tick after an outage, not only the latest"},
}, required=["worker", "cron"])

BATCH_REQUEST = fields_schema(["jobs"], {"jobs": {"type": "array", "items": ref("EnqueueRequest"), "minItems": 1,
                                                  "maxItems": MAX_BATCH}}, required=["jobs"])

LIMITS_PATCH = fields_schema(PATCH_FIELDS, {name: rule.json_schema() for name, rule in PATCH_RULES.items()},
                             minProperties=1)

RECEIPT_REQUEST = fields_schema(RECEIPT_FIELDS, {
    "status": {"enum": ["success", "failure"]},
    "error": {**ANY, "description": "Kept as lastError (text as is, anything else as JSON)"},
    "result": {**ANY, "description": "Kept as the job's result when its JSON is at most 16 KiB"},
    "retry": {**BOOLEAN, "description": "false: a failure is permanent (default true)"},
    "retryAfter": or_null(noted(RETRY_AFTER_S.json_schema(), ": only with a failure that is retried")),
    "cost": or_null(noted(REPORTED.json_schema(), ": the call's actual cost, as the downstream said")),
    "available": or_null(noted(REPORTED.json_schema(), ": the downstream's own level of the key's bucket")),
    "bucketSize": or_null(noted(REPORTED.json_schema(), ": the size of the downstream's bucket that is of")),
}, required=["status"])

RETRY_REQUEST = fields_schema(["args", "runAt", "delay"], {
    "args": {**ANY, "description": "New args (default: the job's)"}, "runAt": RUN_AT,
    "delay": or_null(DELAY_S.json_schema())})


def bulk_request(states: Sequence[str]) -> Schema:
    schemas = {"worker": WORKER_NAME, "state": {"enum": list(states)}, "ids": {"type": "array", "items": STRING},
               "all": {"const": True}, "limit": {"type": "integer", "minimum": 1}}
    return fields_schema(list(schemas), schemas, required=["worker", "state"],
                         oneOf=[{"required": ["ids"]}, {"required": ["all"]}])


# -- answers -----------------------------------------------------------------------------------

JOB_PROPERTIES: dict[str, Schema] = {
    "id": STRING, "worker": STRING, "state": {"enum": STATES}, "args": ANY, "runAt": TIME,
    "attempts": COUNT, "maxAttempts": {"type": "integer", "minimum": 1}, "lastError": or_null(STRING),
    "result": ANY, "createdAt": TIME, "finishedAt": or_null(TIME), "throttleKey": or_null(STRING),
    "cost": {"type": "number", "exclusiveMinimum": 0},
}
ATTEMPT = answer_schema({
    "attempt": {"type": "integer", "minimum": 1}, "startedAt": TIME, "endedAt": or_null(TIME),
    "durationMs": or_null(COUNT),
    "outcome": {"enum": ["succeeded", "failed", "timed out", "throttled", "unsent", "running"]},
    "status": or_null({"type": "integer"}), "error": or_null(STRING), "coordinator": STRING})
SHARED_LIMITS_PROPERTIES: dict[str, Schema] = {
    "rate": or_null({"type": "number"}), "burst": or_null({"type": "number"}),
    "concurrency": or_null({"type": "integer"}), "totalRate": or_null({"type": "number"}),
    "totalBurst": or_null({"type": "number"}), "paused": BOOLEAN}
SHARED_LIMIT = answer_schema({
    "name": STRING, "slot": {**STRING, "description": "The hash tag its keys and its workers' keys share"},
    "workers": {"type": "array", "items": STRING, "description": "The workers that name it"},
    "limits": answer_schema(SHARED_LIMITS_PROPERTIES),
    "running": {**COUNT, "description": "Attempts in flight under it (counted when it has a concurrency)"},
    "totalTokens": or_null({"type": "number", "description": "Left in its bucket over all keys (null: no totalRate)"}),
    "pausedKeys": {"type": "array", "items": STRING, "description": "Throttle keys paused by an operator"},
    "key": answer_schema({"key": STRING, "tokens": or_null({"type": "number"}), "paused": BOOLEAN})},
    optional=("key",))
SHARED_LIMITS_PATCH = fields_schema(SHARED_PATCH_FIELDS, {name: PATCH_RULES[name].json_schema()
                                                          for name in SHARED_PATCH_FIELDS}, minProperties=1)
PAUSE_KEY = fields_schema(["key"], {"key": {**STRING, "minLength": 1, "maxLength": 200}}, required=["key"])
LIMITS = answer_schema({
    "rate": or_null({"type": "number"}), "burst": or_null({"type": "number"}),
    "concurrency": or_null({"type": "integer"}), "totalRate": or_null({"type": "number"}),
    "totalBurst": or_null({"type": "number"}), "timeout": {"type": "number"}, "paused": BOOLEAN})
WORKER = answer_schema({
    "name": STRING, "url": STRING, "limits": ref("Limits"), "jobs": ref("Counts"),
    "throttleKeysWaiting": COUNT, "tokens": or_null({"type": "number"}), "totalTokens": or_null({"type": "number"}),
    "backPressureFor": {"type": "number", "minimum": 0}, "dispatchedLastMinute": COUNT,
    "dispatchRate": {"type": "number", "minimum": 0, "description": "Jobs per second over the last minute"},
    "recentDispatchRate": {"type": "number", "minimum": 0,
                           "description": "Jobs per second over the last whole span of dispatchHistory"},
    "dispatchHistory": answer_schema({
        "bucketSeconds": {"type": "integer", "minimum": 1},
        "dispatched": {"type": "array", "items": COUNT,
                       "description": "Jobs claimed in each span of bucketSeconds over the last 5 minutes, oldest "
                                      "first; the last ends with the last whole second"}}),
    "throttled": {**COUNT, "description": "Answers that pushed back (a 429; a 503 with Retry-After; a receipt's "
                                          "retryAfter) since the worker's first job"},
    "sharedLimits": {"type": "array", "description": "The shared limits it names ([limits.NAME]), live",
                     "items": answer_schema({"name": STRING, **SHARED_LIMITS_PROPERTIES})}})
PAUSED_FOR: Schema = {"type": "number", "minimum": 0, "description": "Seconds it stays paused after a Retry-After"}
SHARED_KEY = answer_schema({
    "tokens": or_null({"type": "number", "description": "Left in the limit's bucket of the key, at the limit's "
                                                        "rate and burst (null: the limit has no rate)"}),
    "paused": {**BOOLEAN, "description": "An operator paused the key in the limit (POST /limits/{name}/pause)"},
    "pausedFor": noted(PAUSED_FOR, " that a call of any worker naming the limit met")})
THROTTLE_KEY = answer_schema({
    "key": {**STRING, "description": "The throttle key (\"\": the jobs without one)"},
    "waiting": COUNT, "running": COUNT,
    "tokens": or_null({"type": "number", "description": "Left in the key's bucket of the worker's own limits "
                                                        "(null: the worker has no rate of its own)"}),
    "pausedFor": PAUSED_FOR,
    "readyAt": or_null({**TIME, "description": "When its next job can leave (tokens of its own and its shared "
                                               "limits' buckets, back-pressure); null: it is paused in a shared "
                                               "limit, until an operator resumes it there"}),
    "limits": {"type": "object", "additionalProperties": SHARED_KEY,
               "description": "The key's bucket in each shared limit the worker names ([limits.NAME]), by name"}})
COORDINATOR = answer_schema({
    "id": STRING, "host": STRING, "pid": {"type": "integer"}, "startedAt": TIME, "version": STRING,
    "aliveUntil": {**TIME, "description": "It counts as gone after this unless it says it is alive again"},
    "answering": {**BOOLEAN, "description": "This is the coordinator that answered"}})
SCHEDULE = answer_schema({
    "id": STRING, "worker": STRING, "cron": STRING, "timezone": STRING, "args": ANY, "catchUp": BOOLEAN,
    "maxAttempts": {"type": "integer", "minimum": 1}, "timeout": or_null({"type": "number"}),
    "throttleKey": or_null(STRING), "cost": {"type": "number"}, "paused": BOOLEAN, "nextRunAt": or_null(TIME),
    "nextRunTimes": {"type": "array", "items": TIME}, "lastFireAt": or_null(TIME),
    "lastJobs": {"type": "array", "items": answer_schema({"id": STRING, "state": {"enum": STATES}, "runAt": TIME})},
    "createdAt": TIME, "updatedAt": TIME})
ERROR = answer_schema({"error": STRING, "field": STRING, "index": COUNT}, optional=("field", "index"))
SKIPPED = {"type": "array", "items": answer_schema({"id": STRING, "reason": STRING})}


def bulk_answer(count: str) -> Schema:
    return answer_schema({"operation": STRING, "kind": {"enum": ["retry", "delete"]}, "worker": STRING,
                          "state": {"enum": STATES}, count: COUNT, "total": or_null(COUNT), "done": BOOLEAN,
                          "error": or_null(STRING), "skipped": SKIPPED}, optional=("skipped",))


COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    # a job as one is answered (with its history), or in a listing (without)
    "Job": answer_schema({**JOB_PROPERTIES, "history": {"type": "array", "items": ATTEMPT}}, optional=("history",)),
    "Counts": counts_schema(STATES), "Limits": LIMITS, "Worker": WORKER, "Schedule": SCHEDULE,
    "EnqueueRequest": ENQUEUE_REQUEST, "ScheduleRequest": SCHEDULE_REQUEST, "LimitsPatch": LIMITS_PATCH,
    "Receipt": RECEIPT_REQUEST, "SharedLimit": SHARED_LIMIT, "SharedLimitsPatch": SHARED_LIMITS_PATCH,
}


# -- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    description: str
    schema: Schema | None = None
    media_type: str = JSON


def error(description: str) -> Answer:
    return Answer(description, ref("Error"))


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    schema: Schema = field(default_factory=lambda: dict(STRING))
    where: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answers: Mapping[int, Answer]
    body: Schema | None = None
    body_required: bool = True
    parameters: tuple[Parameter, ...] = ()
    receipt_token: bool = False  # authorised by the job's receipt token (and open to API tokens)
    uses_redis: bool = True


JOB = Answer("The job", ref("Job"))
WORKER_ANSWER = Answer("The worker", ref("Worker"))
SCHEDULE_ANSWER = Answer("The schedule", ref("Schedule"))
UNKNOWN_JOB = error("No such job")
UNKNOWN_WORKER = error("No such worker")
UNKNOWN_SCHEDULE = error("No such schedule")
UNKNOWN_LIMIT = error("No such shared limit")
LIMIT_ANSWER = Answer("The shared limit", ref("SharedLimit"))
INVALID = error("A field is wrong: `field` names it (and `index`, in a batch); nothing is written")
PATH_PARAMETERS = {
    "id": "A job's id (`<worker>:<id>`); of a schedule, for /schedule",
    "name": "A worker's name; for /limits, a shared limit's",
    "operation": "An operation's id, from the answer of a bulk retry or delete",
}
JOB_OR_SCHEDULE = {"oneOf": [ref("Job"), ref("Schedule")]}
BULK_ANSWERS: dict[str, Mapping[int, Answer]] = {
    count: {200: Answer("All done within the request", bulk_answer(count)),
            202: Answer("Going on in the background: follow `operation` with GET /operations/{operation}",
                        bulk_answer(count)),
            422: INVALID}
    for count in ("retried", "deleted")
}

OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/job", "Enqueue a job, or save a cron schedule (a body with cron)", {
        201: Answer("Created: the job, or the schedule", JOB_OR_SCHEDULE),
        200: Answer("The job with this id existed already (as it is), or the schedule was updated in place",
                    JOB_OR_SCHEDULE),
        422: INVALID}, body={"oneOf": [ref("EnqueueRequest"), ref("ScheduleRequest")]}),
    Operation("POST", "/jobs", "Enqueue a batch of jobs", {
        201: Answer("The jobs, and how many were new",
                    answer_schema({"jobs": {"type": "array", "items": ref("Job")}, "created": COUNT})),
        200: Answer("None was new: the jobs as they are",
                    answer_schema({"jobs": {"type": "array", "items": ref("Job")}, "created": COUNT})),
        422: INVALID}, body=BATCH_REQUEST),
    Operation("GET", "/job/{id}", "Read a job", {200: Answer("The job", ref("Job")), 404: UNKNOWN_JOB}),
    Operation("DELETE", "/job/{id}", "Cancel a job that has not finished", {
        200: Answer("The cancelled job", ref("Job")), 404: UNKNOWN_JOB, 409: error("The job has finished")}),
    Operation("POST", "/job/{id}/receipt", "A worker reports an attempt's outcome", {
        200: Answer("Accepted (also an exact repeat), or changing nothing because the job was cancelled",
                    {"oneOf": [answer_schema({"accepted": {"const": True}, "duplicate": BOOLEAN,
                                              "state": {"enum": STATES}}),
                               answer_schema({"accepted": {"const": False}, "state": {"const": "cancelled"},
                                              "message": STRING})]}),
        404: UNKNOWN_JOB, 409: error("The attempt it answers is no longer the running one"), 422: INVALID},
        body=ref("Receipt"), receipt_token=True),
    Operation("POST", "/job/{id}/heartbeat", "A worker extends its running attempt's lease", {
        200: Answer("The lease ends the job's timeout from now", answer_schema(
            {"extended": {"const": True}, "attempt": {"type": "integer", "minimum": 1}, "leaseDeadline": TIME})),
        404: UNKNOWN_JOB, 409: error("That attempt is not running")}, receipt_token=True),
    Operation("GET", "/workers", "Every worker: live limits, jobs by state, tokens, dispatch rate", {
        200: Answer("The workers", answer_schema({"workers": {"type": "array", "items": ref("Worker")}}))}),
    Operation("GET", "/workers/{name}", "One worker", {200: WORKER_ANSWER, 404: UNKNOWN_WORKER}),
    Operation("PATCH", "/workers/{name}", "Change a worker's live limits (null removes one)", {
        200: Answer("The worker with its new limits", ref("Worker")), 404: UNKNOWN_WORKER, 422: INVALID},
        body=ref("LimitsPatch")),
    Operation("GET", "/workers/{name}/keys", "A worker's throttle keys with jobs waiting, each with its bucket in "
              "every shared limit the worker names: those paused first (in a shared limit, then by back-pressure, "
              "longest first), then the busiest", {
                  200: Answer("How many keys have jobs waiting, and the keys (of the 1,000 that wait longest, when "
                              "more do)", answer_schema({"keysWaiting": COUNT,
                                                         "keys": {"type": "array", "items": THROTTLE_KEY}})),
                  404: UNKNOWN_WORKER, 422: error("Bad limit or parameter")}, parameters=(
        Parameter("limit", "Keys to answer", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}),)),
    Operation("GET", "/limits", "Every shared limit ([limits.NAME]): live fields, workers, paused keys", {
        200: Answer("The shared limits", answer_schema({"limits": {"type": "array", "items": ref("SharedLimit")}}))}),
    Operation("GET", "/limits/{name}", "One shared limit (with key=K, that throttle key's bucket too)", {
        200: LIMIT_ANSWER, 404: UNKNOWN_LIMIT, 422: error("Bad key or parameter")}, parameters=(
        Parameter("key", "A throttle key whose bucket to show"),)),
    Operation("PATCH", "/limits/{name}", "Change a shared limit's live fields (null removes one) for all its workers",
              {200: LIMIT_ANSWER, 404: UNKNOWN_LIMIT, 422: INVALID}, body=ref("SharedLimitsPatch")),
    Operation("POST", "/limits/{name}/pause", "Hold the jobs of every worker naming the limit, or (a body with key) "
              "those of one throttle key", {200: LIMIT_ANSWER, 404: UNKNOWN_LIMIT, 422: INVALID},
              body=PAUSE_KEY, body_required=False),
    Operation("POST", "/limits/{name}/resume", "Release a paused limit, or (a body with key) one throttle key",
              {200: LIMIT_ANSWER, 404: UNKNOWN_LIMIT, 422: INVALID}, body=PAUSE_KEY, body_required=False),
    Operation("GET", "/coordinators", "The coordinators alive against this Redis", {
        200: Answer("The coordinators, each as it said of itself",
                    answer_schema({"coordinators": {"type": "array", "items": COORDINATOR}}))}),
    Operation("POST", "/workers/{name}/pause", "Hold a worker's dispatch", {200: WORKER_ANSWER, 404: UNKNOWN_WORKER}),
    Operation("POST", "/workers/{name}/resume", "Release a worker's dispatch", {200: WORKER_ANSWER,
                                                                                 404: UNKNOWN_WORKER}),
    Operation("GET", "/schedules", "Cron schedules, of one worker or of all", {
        200: Answer("The schedules", answer_schema({"schedules": {"type": "array", "items": ref("Schedule")}})),
        422: error("Unknown worker")}, parameters=(Parameter("worker", "Only this worker's schedules"),)),
    Operation("GET", "/schedule/{id}", "Read a schedule", {200: SCHEDULE_ANSWER, 404: UNKNOWN_SCHEDULE}),
    Operation("DELETE", "/schedule/{id}", "Delete a schedule (its jobs already created stay)", {
        200: Answer("The schedule as it was", ref("Schedule")), 404: UNKNOWN_SCHEDULE}),
    Operation("POST", "/schedule/{id}/pause", "Pause a schedule", {200: SCHEDULE_ANSWER, 404: UNKNOWN_SCHEDULE}),
    Operation("POST", "/schedule/{id}/resume", "Resume a schedule from its next fire time", {
        200: SCHEDULE_ANSWER, 404: UNKNOWN_SCHEDULE}),
    Operation("GET", "/health", "Whether the store answers (on a Redis Cluster: every master)", {
        200: Answer("Up", answer_schema({"redis": {"const": "up"}, "store": {"enum": ["redis", "embedded", "cluster"]},
                                         "masters": MASTERS}, optional=("masters",))),
        503: Answer("Down", answer_schema({"redis": {"const": "down"}, "error": STRING, "store": {"const": "cluster"},
                                           "masters": MASTERS}, optional=("store", "masters")))}, uses_redis=False),
    Operation("GET", "/openapi.json", "This document", {
        200: Answer("The OpenAPI 3.1 document", {"type": "object"})}, uses_redis=False),
    Operation("GET", "/docs", "This document, rendered for a browser (Swagger UI, shipped in the package)", {
        200: Answer("An HTML page", STRING, "text/html")}, uses_redis=False),
    Operation("GET", "/ui", "The console: workers, limits, throttle keys, jobs, dead jobs, schedules, coordinators "
              "(its files ship in the package)", {
        200: Answer("An HTML page", STRING, "text/html")}, uses_redis=False),
    Operation("GET", "/", "Redirects to the console", {
        307: Answer("To `ui`, the console")}, uses_redis=False),
    # -- finding and fixing jobs --
    Operation("GET", "/jobs", "List a worker's jobs in one state, a page at a time", {
        200: Answer("A page of jobs, the cursor of the next (null: the last), and the worker's counts", answer_schema(
            {"jobs": {"type": "array", "items": ref("Job")}, "next": or_null(STRING), "counts": ref("Counts")})),
        422: error("Bad worker, state, cursor or limit")}, parameters=(
        Parameter("worker", "The worker", WORKER_NAME, required=True),
        Parameter("state", "Newest first for finished states, soonest first for the others", {"enum": STATES},
                  required=True),
        Parameter("throttleKey", "Only the jobs of this key"),
        Parameter("limit", "Jobs per page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        Parameter("cursor", "`next` of the page before"))),
    Operation("POST", "/job/{id}/retry", "Run a dead or cancelled job again (attempts start over)", {
        200: Answer("The job, scheduled", ref("Job")), 404: UNKNOWN_JOB,
        409: error("The job is not dead or cancelled"), 422: INVALID}, body=RETRY_REQUEST, body_required=False),
    Operation("POST", "/jobs/retry", "Retry dead or cancelled jobs of a worker, by id or all",
              BULK_ANSWERS["retried"], body=bulk_request(["dead", "cancelled"])),
    Operation("POST", "/jobs/delete", "Delete finished jobs of a worker, by id or all",
              BULK_ANSWERS["deleted"], body=bulk_request(FINISHED_STATES)),
    Operation("GET", "/operations/{operation}", "The progress of a bulk retry or delete", {
        200: Answer("The operation", answer_schema({
            "operation": STRING, "kind": {"enum": ["retry", "delete"]}, "worker": STRING, "state": {"enum": STATES},
            "retried": COUNT, "deleted": COUNT, "total": or_null(COUNT), "done": BOOLEAN, "error": or_null(STRING),
            "skipped": SKIPPED}, optional=("retried", "deleted", "skipped"))),
        404: error("No such operation (they are kept for an hour)")}),
    Operation("GET", "/events", "Every job's state changes as server-sent events", {
        200: Answer("A stream that does not end: `id: <worker>/<stream id>`, `event: job`, `data: {worker, id, "
                    "state, attempt, at}` per state change, a comment line every 15 s", STRING, "text/event-stream"),
        422: error("An unknown worker or parameter, or an event id this feed did not send")}, parameters=(
        Parameter("worker", "Only this worker's events", WORKER_NAME),
        Parameter("Last-Event-ID", "Resume after this event: the id of the last one received", where="header"),
        Parameter("lastEventId", "The same, for a client that cannot set headers (the header wins)"))),
    Operation("GET", "/metrics", "Prometheus metrics", {
        200: Answer("The Prometheus text format", STRING, "text/plain")}),
)
PLANNED: frozenset[tuple[str, str]] = frozenset()


# -- the document ------------------------------------------------------------------------------

def routed_operations(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every route (HEAD, which Starlette adds to each GET, aside)."""
    return {(method, route.path) for route in routes if isinstance(route, Route)
            for method in route.methods or () if method != "HEAD"}


def sample_path(path: str) -> str:
    """``path`` with a value for each parameter, to ask ``is_open_route`` about."""
    return re.sub(r"\{\w+\}", "x", path)


def operation_json(op: Operation, api_tokens: bool) -> Schema:
    answers = dict(op.answers)
    if op.body is not None:
        answers.setdefault(400, error("The body is not JSON, or is empty"))
        answers.setdefault(413, error("The body is over max_body_bytes"))
    if op.receipt_token:
        answers.setdefault(401, error("A missing or bad receipt token"))
    elif api_tokens and not is_open_route(op.method, sample_path(op.path)):
        answers.setdefault(401, error("A missing or bad API token"))
    if op.uses_redis:
        answers.setdefault(503, error("Redis is unreachable or refuses writes (maxmemory, a failover)"))
    responses = {}
    for status, answer in sorted(answers.items()):
        response: Schema = {"description": answer.description}
        if answer.schema is not None:
            response["content"] = {answer.media_type: {"schema": answer.schema}}
        responses[str(status)] = response
    parameters = [{"name": name, "in": "path", "required": True, "description": PATH_PARAMETERS[name],
                   "schema": {"type": "string", "minLength": 1}} for name in re.findall(r"\{(\w+)\}", op.path)]
    parameters += [{"name": p.name, "in": p.where, "required": p.required, "description": p.description,
                    "schema": p.schema} for p in op.parameters]
    document: Schema = {"summary": op.summary, "operationId": operation_id(op), "tags": [tag_of(op.path)],
                        "responses": responses}
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": op.body}}}
    if op.receipt_token:
        document["security"] = [{"receiptToken": []}]
    elif api_tokens and is_open_route(op.method, sample_path(op.path)):
        document["security"] = []  # open: see security.OPEN_ROUTES
    return document


TAGS = (("receipts", re.compile(r"/(receipt|heartbeat)$")), ("jobs", re.compile(r"^/(jobs?|operations)\b")),
        ("workers", re.compile(r"^/workers\b")),
        ("limits", re.compile(r"^/limits\b")), ("schedules", re.compile(r"^/schedules?\b")))


def tag_of(path: str) -> str:
    """The group /docs shows an operation in: its resource, else ``service``."""
    return next((tag for tag, pattern in TAGS if pattern.search(path)), "service")


def operation_id(op: Operation) -> str:
    words = [word for word in re.split(r"[^A-Za-z0-9]+", op.path.replace("{", "by_")) if word]
    return "_".join([op.method.lower(), *words])


def build_document(routes: Iterable[BaseRoute], api_tokens: bool) -> Schema:
    """The OpenAPI document of the operations among ``routes``; with ``api_tokens``, every
    one but the open routes asks for a bearer API token."""
    routed = routed_operations(routes)
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        if (op.method, op.path) in routed:
            paths.setdefault(op.path, {})[op.method.lower()] = operation_json(op, api_tokens)
    schemes: Schema = {"receiptToken": {
        "type": "http", "scheme": "bearer",
        "description": "The receiptToken of the dispatch the worker received: it answers that attempt only"}}
    document: Schema = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "redisq", "version": __version__,
                 "description": "A coordinator for background jobs whose workers are HTTP endpoints. Every error "
                                "answers {error, field?, index?}; times are ISO 8601 UTC with milliseconds."},
        "paths": paths,
        "components": {"schemas": COMPONENTS, "securitySchemes": schemes},
    }
    if api_tokens:
        schemes["apiToken"] = {"type": "http", "scheme": "bearer",
                               "description": "One of the coordinator's api_tokens"}
        document["security"] = [{"apiToken": []}]
    return document


async def openapi_json(request: Request) -> JSONResponse:
    state = request.app.state
    document = getattr(state, "openapi_document", None)
    if document is None:  # built once per app, on first use: by then every route is in
        document = state.openapi_document = build_document(request.app.routes,
                                                           bool(coordinator_of(request).config.api_tokens))
    return JSONResponse(document)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
