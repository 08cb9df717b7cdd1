"""``create_app``'s answers where no endpoint runs: a path no route has, a method a route
does not take. They are JSON like every other error (README, HTTP API), on a real Redis and
on the embedded store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from in_process import serving

from redisq.config import Config, WorkerConfig
from redisq.coordinator import Coordinator


@pytest.fixture
async def client(engine_redis) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(secret="app-test", workers={"send-email": WorkerConfig(name="send-email", url="http://w.test/")})
    async with serving(Coordinator(config, redis=engine_redis)) as client:
        yield client


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/job/x/y/z"), ("GET", "/ui/nope")])
async def test_a_path_no_route_has_answers_404_in_json(client, method, path):
    resp = await client.request(method, path)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": f"not found: {method} {path}"}


@pytest.mark.parametrize("method, path, allowed", [
    ("DELETE", "/workers", "GET, HEAD"),
    ("PUT", "/job", "POST"),
    ("DELETE", "/workers/send-email", "GET, HEAD, PATCH"),  # two routes share the path
    ("GET", "/job/send-email:1/receipt", "POST"),
])
async def test_a_method_the_path_does_not_take_answers_405_in_json_with_allow(client, method, path, allowed):
    resp = await client.request(method, path)
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["allow"] == allowed
    assert resp.json() == {"error": f"method not allowed: {method} {path} (allowed: {allowed})"}


async def test_the_routes_still_answer_as_before(client):
    assert (await client.get("/health")).status_code == 200
    assert (await client.patch("/workers/send-email", json={"rate": 3})).json()["limits"]["rate"] == 3
