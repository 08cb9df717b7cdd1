"""schemathesis over every route of a live coordinator: no 5xx, and no answer that breaks
the document (an unlisted status, another content type, a body outside its schema).

The coordinator is ``redisq serve`` on a throwaway real Redis, dispatching to a worker URL
where nothing listens (its jobs fail and are retried, as with a worker that is down).
schemathesis reads the document from the coordinator's own ``/openapi.json`` and draws
requests for each operation from it: valid ones and, as its negative mode does, invalid
ones. It is seeded (``derandomize``) and bounded: ``EXAMPLES`` per operation, about a
minute in all; ``REDISQ_SCHEMATHESIS_EXAMPLES=N`` runs more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from redisq.api.app import routes
from redisq.api.openapi import OPERATIONS, routed_operations

from redis_server import free_port
from test_cli import ServeProcess

EXAMPLES = int(os.environ.get("REDISQ_SCHEMATHESIS_EXAMPLES", "150"))
WORKER = "send-email"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live_coordinator(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redisq serve`` on the throwaway Redis; its base URL. Stopped (and waited for) after."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    folder = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    config = folder / "redisq.toml"
    config.write_text(f'port = {port}\nsecret = "schemathesis"\nredis_url = "{redis_url}"\n\n'
                      f'[workers.{WORKER}]\nurl = "http://127.0.0.1:9/nothing-listens"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISQ_")}
    serve = ServeProcess(["--config", str(config)], env, Path(folder))
    try:
        serve.wait_for_line("serving on")
        yield f"http://127.0.0.1:{port}"
    finally:
        code = serve.stop()
        assert code == 0, serve.lines
        assert not [line for line in serve.lines if "unexpected error" in line or "Traceback" in line], serve.lines


@pytest.fixture(scope="module")
def live_schema(live_coordinator: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_coordinator}/openapi.json")


def strategy_for(schema: Any, method: str, path: str) -> st.SearchStrategy[schemathesis.Case]:
    """Cases for one operation of the served document: valid ones, and where the operation
    takes input, invalid ones (schemathesis's negative mode) half the time."""
    operation = schema[path][method]
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    if not operation.body and not list(operation.iter_parameters()):
        return valid  # nothing to make invalid
    return st.one_of(valid, operation.as_strategy(GenerationMode.NEGATIVE))


KNOWN_IDS = {"/job": f"{WORKER}:known", "/schedule": f"{WORKER}:known-schedule"}


def make_known(base_url: str) -> None:
    """A job and a schedule for the aimed cases to find (again, after a run deleted them)."""
    for body in ({"worker": WORKER, "id": "known", "delay": 3600},
                 {"worker": WORKER, "id": "known-schedule", "cron": "0 9 * * *"}):
        resp = httpx.post(f"{base_url}/job", json=body, timeout=10)
        assert resp.status_code in (200, 201), resp.text


def aimed(case: schemathesis.Case) -> None:
    """The case pointed at what exists: the known job or schedule in the path, the worker in
    the body and the query, so that it gets past "no such worker" to the checks behind."""
    for name in case.path_parameters or {}:
        prefix = case.path.split("/{")[0]
        case.path_parameters[name] = WORKER if name == "name" else KNOWN_IDS.get(prefix, "x")
    bodies = case.body.get("jobs") if isinstance(case.body, dict) and isinstance(case.body.get("jobs"), list) \
        else [case.body]
    for body in bodies:
        if isinstance(body, dict) and "worker" in body:
            body["worker"] = WORKER
    if case.query and "worker" in case.query:
        case.query["worker"] = WORKER


# An event stream's answer never ends, and schemathesis reads an answer whole: such a route
# (GET /events, once it exists) is checked by test_an_event_stream_answers_as_documented.
EVENT_STREAMS = {(op.method, op.path) for op in OPERATIONS
                 if any(answer.media_type == "text/event-stream" for answer in op.answers.values())}


# schemathesis.pytest.from_fixture would parametrize by the served document, but it reads
# request.node._nodeid, which pytest 9 no longer has: parametrized here by the app's routes
# (test_the_served_document_has_every_route_the_run_covers says the document has the same).
@pytest.mark.parametrize("method, path", sorted(routed_operations(routes) - EVENT_STREAMS))
def test_no_route_answers_5xx_or_outside_its_schema(live_schema: Any, live_coordinator: str, method: str,
                                                    path: str) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(strategy_for(live_schema, method, path), st.booleans())
    def run(case: schemathesis.Case, aim: bool) -> None:
        if aim:
            aimed(case)
        case.call_and_validate(base_url=live_coordinator, checks=CHECKS, timeout=10)

    make_known(live_coordinator)
    run()


@pytest.mark.parametrize("method, path", sorted(routed_operations(routes) & EVENT_STREAMS))
def test_an_event_stream_answers_as_documented(live_schema: Any, live_coordinator: str, method: str,
                                                path: str) -> None:
    """Its status and content type as the document says, read from the headers alone."""
    responses = live_schema.raw_schema["paths"][path][method.lower()]["responses"]
    with httpx.stream(method, f"{live_coordinator}{path}", params={"worker": WORKER}, timeout=10) as resp:
        assert str(resp.status_code) in responses, resp.status_code
        (media_type,) = responses[str(resp.status_code)]["content"]
        assert resp.headers["content-type"].split(";")[0] == media_type
