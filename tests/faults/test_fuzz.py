"""A seeded property-based fuzzer over every route of the API: no answer is a 5xx, and
afterwards every route still answers.

Hypothesis draws requests for each route in ``redisq.api.app.routes`` (path parameters,
query, headers and bodies) from strategies full of what hostile and careless callers send:
lone surrogates, integers beyond any float (``2**1024``), ``NaN``, ``Infinity``,
``1e400``, ``1e308``, nested junk, wrong types, unknown fields, bytes that are not JSON.
Many bodies are almost right (a known worker, a valid cron, a valid receipt token) so the
junk reaches the checks past the first one. The app runs on the embedded store and on a
throwaway real Redis, against a job and a schedule made before the run.

It is seeded (``derandomize=True``: the same examples every run) and bounded: CI runs
``EXAMPLES`` per store. ``REDISQ_FUZZ_EXAMPLES=N`` runs more; ``REDISQ_FUZZ_REPORT=1``
counts the 5xx answers instead of stopping at the first, and prints the tally (with
``pytest -s``), for measuring code that still has them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisq.api.app import routes
from redisq.api.openapi import routed_operations
from redisq.config import LimitConfig
from redisq.security import receipt_token

from test_api import WORKER, Api, running_api, worker_config

EXAMPLES = int(os.environ.get("REDISQ_FUZZ_EXAMPLES", "2500"))
REPORT = os.environ.get("REDISQ_FUZZ_REPORT") == "1"
SECRET = "fuzz-secret"
KNOWN_JOB = f"{WORKER}:known"
KNOWN_SCHEDULE = f"{WORKER}:known-schedule"
LIMIT = "shopify"  # the worker names this shared limit too
SHOPIFY = LimitConfig(LIMIT, rate=2, burst=39)
# Values that JSON text carries but a Python value cannot be dumped as: spliced in as text.
RAW_NUMBERS = {"__1e400__": "1e400", "__-1e400__": "-1e400", "__NaN__": "NaN", "__2e1024__": str(2**1024),
               "__huge__": "9" * 4000}


# -- strategies ------------------------------------------------------------------------------

def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any], tenths: int = 7) -> st.SearchStrategy[Any]:
    """``usual`` ``tenths`` times in ten, else ``other`` (``one_of`` would flatten nested
    choices into equal branches, and the usual one would be drawn once in a dozen)."""
    return st.integers(0, 9).flatmap(lambda n: usual if n < tenths else other)


HOSTILE_CHARS = ["\ud800", "\udfff", "\x00", "\n", "@", ":", "{", "}", "*", "/", "%", "\u00a0", "\u202e", "é"]
texts = st.text(st.one_of(st.characters(), st.sampled_from(HOSTILE_CHARS)), max_size=30)
EXTREMES = [0, -1, 2**53, 2**63, 2**64, 2**1024, -(2**1024), 10**400, 1e-300, 1e308, -1e308, 1e9, 1e9 + 1,
            604800, 604801, 86400, 86401, *RAW_NUMBERS]
numbers = mostly(st.sampled_from(EXTREMES), st.one_of(
    st.integers(), st.integers(min_value=-(2**1100), max_value=2**1100), st.floats(allow_nan=True,
                                                                                     allow_infinity=True)), tenths=6)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
# what a field gets: mostly something of its kind, sometimes anything at all
plausible_numbers = st.one_of(st.integers(1, 50), st.floats(0.001, 100))
numeric_field = mostly(numbers, mostly(plausible_numbers, st.one_of(scalars, st.sampled_from(["5", "1e400", "nan"]))),
                       tenths=5)
CRONS = ["* * * * *", "0 9 * * *", "0 0 9 * * *", "*/5 * * * * *", "0 0 9 * * * 2027", "0 9 * *", "@daily",
         "@daily 9", "0 0 30 2 *", "61 * * * *", "H * * * *", "\ud800 * * * *", "0 9 * * * 30", "L * * * *"]
IDS = ["known", "a:b", "x" * 200, "x" * 201, "x" * 181, "known-schedule", "k@1", "", "has space", "~._-:"]
ids = mostly(st.sampled_from(IDS), texts)
worker_names = mostly(st.just(WORKER), st.one_of(st.sampled_from(["nobody", "", "SEND-EMAIL"]), scalars), tenths=8)


def optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of ``fields`` (each with its strategy), and sometimes unknown fields beside them."""
    # One or two fields mostly: the first bad field ends the checks, so a body of many
    # fields would test the first check of each route and little else.
    known = st.fixed_dictionaries({}, optional=fields)
    few = st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: fields[name] for name in names}))
    unknown = st.builds(lambda a, b: {**b, **a}, few, st.dictionaries(texts, json_values, min_size=1, max_size=2))
    return mostly(mostly(few, known, tenths=8), st.one_of(st.just({}), unknown), tenths=8)


enqueue_fields: dict[str, st.SearchStrategy[Any]] = {
    "args": json_values, "runAt": st.one_of(numeric_field, st.sampled_from(
        ["2030-01-01T10:00:00Z", "9999-12-31T23:59:59-14:00", "2020-01-01 10:00:00 AM", "tomorrow"])),
    "delay": numeric_field, "id": ids, "maxAttempts": numeric_field, "timeout": numeric_field,
    "throttleKey": st.one_of(texts, scalars), "cost": numeric_field,
}
schedule_fields: dict[str, st.SearchStrategy[Any]] = {  # runAt and delay are refused with cron: rarely
    **{k: v for k, v in enqueue_fields.items() if k not in ("runAt", "delay")},
    "cron": mostly(st.sampled_from(CRONS), st.one_of(texts, scalars)),
    "timezone": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "Atlantis/Capital", "../etc/passwd", ""]), texts,
                          scalars),
    "catchUp": scalars,
}
job_body = st.builds(lambda w, rest: {"worker": w, **rest}, worker_names, optional(enqueue_fields))
schedule_body = st.builds(lambda w, c, rest: {"worker": w, "cron": c, **rest}, worker_names,
                          mostly(st.sampled_from(CRONS), texts, tenths=8), optional(schedule_fields))
patch_body = optional({name: st.one_of(numeric_field, st.none()) for name in
                       ("rate", "burst", "concurrency", "timeout", "totalRate", "totalBurst")})
receipt_body = optional({"status": mostly(st.sampled_from(["success", "failure"]), scalars),
                         "error": json_values, "result": json_values, "retry": scalars, "retryAfter": numeric_field,
                         "cost": numeric_field, "available": numeric_field, "bucketSize": numeric_field})
pause_key_body = optional({"key": st.one_of(st.sampled_from(["shop-a", "", "x" * 201]), texts, scalars)})
junk_body = st.one_of(json_values, st.just(None))
states = mostly(st.sampled_from(["scheduled", "running", "retrying", "succeeded", "dead", "cancelled"]), texts,
                tenths=8)
bulk_body = optional({"worker": worker_names, "state": states, "ids": st.one_of(st.lists(st.one_of(
    st.just("send-email:known"), texts), max_size=3), json_values), "all": scalars, "limit": numeric_field})


def raw_body_text(body: Any) -> str:
    text = json.dumps(body, ensure_ascii=True, allow_nan=True)  # a lone surrogate as \\ud800, NaN as NaN
    for marker, raw in RAW_NUMBERS.items():
        text = text.replace(f'"{marker}"', raw)
    return text


bodies = {
    ("POST", "/job"): mostly(st.one_of(job_body, schedule_body), junk_body, tenths=9),
    ("POST", "/jobs"): st.one_of(st.builds(lambda items: {"jobs": items}, st.lists(st.one_of(job_body, schedule_body,
                                                                                            junk_body), max_size=4)),
                                 optional({"jobs": json_values}), junk_body),
    ("PATCH", "/workers/{name}"): mostly(patch_body, junk_body, tenths=9),
    ("PATCH", "/limits/{name}"): mostly(patch_body, junk_body, tenths=9),
    ("POST", "/limits/{name}/pause"): mostly(pause_key_body, junk_body, tenths=8),
    ("POST", "/limits/{name}/resume"): mostly(pause_key_body, junk_body, tenths=8),
    ("POST", "/job/{id}/receipt"): mostly(receipt_body, junk_body, tenths=9),
    ("POST", "/job/{id}/retry"): mostly(optional({"args": json_values, "runAt": scalars, "delay": numeric_field}),
                                        junk_body, tenths=8),
    ("POST", "/jobs/retry"): mostly(bulk_body, junk_body, tenths=9),
    ("POST", "/jobs/delete"): mostly(bulk_body, junk_body, tenths=9),
}
content_bytes = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 5000, b"1" * 5000]))

job_ids = mostly(st.just(KNOWN_JOB), st.one_of(st.sampled_from([ f"{WORKER}:nope", "nobody:x", f"{WORKER}:k@1"]),
                    st.builds(lambda t: f"{WORKER}:{t}", texts), texts), tenths=5)
schedule_ids = mostly(st.just(KNOWN_SCHEDULE), st.one_of(st.sampled_from([ f"{WORKER}:nope", "nobody:x"]),
                         st.builds(lambda t: f"{WORKER}:{t}", texts), texts), tenths=5)
PATH_PARAMS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "/job/{id}": {"id": job_ids}, "/job/{id}/receipt": {"id": job_ids}, "/job/{id}/heartbeat": {"id": job_ids},
    "/workers/{name}": {"name": mostly(st.just(WORKER), texts)},
    "/workers/{name}/pause": {"name": mostly(st.just(WORKER), texts)},
    "/workers/{name}/resume": {"name": mostly(st.just(WORKER), texts)},
    "/workers/{name}/keys": {"name": mostly(st.just(WORKER), texts)},
    **{route: {"name": mostly(st.just(LIMIT), texts)}
       for route in ("/limits/{name}", "/limits/{name}/pause", "/limits/{name}/resume")},
    "/schedule/{id}": {"id": schedule_ids}, "/schedule/{id}/pause": {"id": schedule_ids},
    "/schedule/{id}/resume": {"id": schedule_ids},
    "/job/{id}/retry": {"id": job_ids},
    "/operations/{operation}": {"operation": mostly(st.builds(lambda t: f"{WORKER}:{t}", texts), texts, tenths=5)},
}
# GET /events answers a stream that never ends, and httpx's ASGITransport reads an answer
# whole: it is left out here, and tests/test_events.py covers its parameters over real HTTP.
STREAMING = {("GET", "/events")}
ROUTES = sorted(routed_operations(routes) - STREAMING)  # the static files of /docs are no route of their own


@dataclass(frozen=True)
class Call:
    method: str
    route: str  # the route's path template, as in the routes list
    path: str
    content: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def path_text(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def calls(draw: st.DrawFn) -> Call:
    method, route = draw(mostly(st.sampled_from(sorted(bodies)), st.sampled_from(ROUTES), tenths=6))
    values = {name: draw(strategy) for name, strategy in PATH_PARAMS.get(route, {}).items()}
    path = re.sub(r"\{(\w+)\}", lambda m: path_text(values[m.group(1)]), route)
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if route in ("/job/{id}/receipt", "/job/{id}/heartbeat"):
        token_id = values["id"].encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # as the path reads
        token = draw(st.one_of(st.just(receipt_token(SECRET.encode(), token_id, 1, 0)),
                               st.just(receipt_token(SECRET.encode(), KNOWN_JOB, 1, 0)),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)))
        headers["Authorization"] = f"Bearer {token}"
    content: bytes | None = None
    strategy = bodies.get((method, route))
    if strategy is not None or draw(st.integers(0, 9)) == 0:  # now and then a body where none is read
        if strategy is None or draw(st.integers(0, 9)) == 0:
            content = draw(content_bytes)
        else:
            content = raw_body_text(draw(strategy)).encode()
    params = {"worker": draw(st.one_of(worker_names.map(str), texts))} if route == "/schedules" and draw(
        st.booleans()) else {}
    if route == "/workers/{name}/keys" and draw(st.booleans()):
        params = {"limit": draw(mostly(st.integers(-5, 2000).map(str), texts))}
    if route == "/jobs" and method == "GET":
        drawn = draw(optional({"worker": worker_names.map(str), "state": states, "throttleKey": texts,
                               "limit": mostly(st.integers(-5, 2000).map(str), texts), "cursor": texts}))
        params = {str(name): str(value) for name, value in drawn.items() if value is not None}
    return Call(method, route, path, content, headers, params)


# -- the run ---------------------------------------------------------------------------------

async def send(api: Api, call: Call) -> int:
    params = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in call.params.items()}
    resp = await api.client.request(call.method, call.path, content=call.content, headers=call.headers,
                                    params=params)
    return resp.status_code


async def prepare(api: Api) -> None:
    """A job and a schedule for the fuzzed ids to find."""
    resp = await api.client.post("/job", json={"worker": WORKER, "id": "known", "delay": 3600})
    assert resp.status_code in (200, 201), resp.text  # 200: the job is there (perhaps cancelled)
    resp = await api.client.post("/job", json={"worker": WORKER, "id": "known-schedule", "cron": "0 9 * * *"})
    assert resp.status_code in (200, 201), resp.text


async def every_route_answers(api: Api) -> None:
    """After the run: the reads answer 200, a new job and schedule can be made, and every
    route answers a plain request below 500."""
    for path in ("/health", "/workers", f"/workers/{WORKER}", "/schedules"):
        resp = await api.client.get(path)
        assert resp.status_code == 200, (path, resp.text)
    resp = await api.client.post("/job", json={"worker": WORKER, "args": {"after": "fuzz"}})
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    assert (await api.client.get(f"/job/{job_id}")).status_code == 200
    resp = await api.client.post("/job", json={"worker": WORKER, "id": "after", "cron": "0 9 * * *"})
    assert resp.status_code in (200, 201), resp.text
    plain = {"id": job_id, "name": WORKER}
    for method, route in ROUTES:
        path = route.replace("{id}", f"{WORKER}:after" if route.startswith("/schedule/") else plain["id"])
        path = path.replace("{name}", plain["name"])
        body = {"/job": {"worker": WORKER}, "/jobs": {"jobs": [{"worker": WORKER}]}}.get(route)
        if method == "PATCH":
            body = {"rate": 5}
        if route.endswith(("/receipt", "/heartbeat")):
            token = receipt_token(SECRET.encode(), job_id, 1, 0)
            resp = await api.client.post(path, json={"status": "success"}, headers={"Authorization": f"Bearer {token}"})
        else:
            resp = await api.client.request(method, path, json=body)
        assert resp.status_code < 500, (method, path, resp.text)


def report(tally: Counter[tuple[str, str, int]], failures: list[tuple[Call, int]]) -> None:
    print(f"\n{sum(tally.values())} requests, {len(failures)} answered 5xx")
    for (method, route, status), n in sorted(tally.items()):
        print(f"  {method:6} {route:24} {status}: {n}")
    for call, status in failures[:20]:
        print(f"  5xx: {status} {call}")


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_no_route_answers_5xx_and_every_route_still_answers(store, request):
    runner = asyncio.Runner()
    tally: Counter[tuple[str, str, int]] = Counter()
    failures: list[tuple[Call, int]] = []
    with runner:
        if store == "redis":
            import redis.asyncio as aioredis
            redis = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
            runner.run(redis.flushdb())
        else:
            import fakeredis
            redis = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
        context = running_api(redis, dispatch=False, worker=worker_config(rate=2.0, burst=10, limits=(LIMIT,),
                                                                          slot=LIMIT, shared_limits=(SHOPIFY,)),
                              secret=SECRET, limits={LIMIT: SHOPIFY})
        api = runner.run(context.__aenter__())
        try:
            runner.run(prepare(api))

            @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(call=calls())
            def one_call(call: Call) -> None:
                status = runner.run(send(api, call))
                tally[(call.method, call.route, status // 100 * 100)] += 1
                if call.method == "DELETE" and status == 200:
                    runner.run(prepare(api))  # the known job and schedule, for the next calls
                if status >= 500:
                    failures.append((call, status))
                    assert REPORT, f"{call.method} {call.path} answered {status}: {call}"

            one_call()
            if REPORT:
                report(tally, failures)
            runner.run(every_route_answers(api))
        finally:
            runner.run(context.__aexit__(None, None, None))
            runner.run(redis.aclose())
    assert not failures
    assert {(m, r) for m, r, _ in tally} == set(ROUTES), "every route was fuzzed"
