"""The coordinators alive (presence.py, GET /coordinators): each one is listed while it
runs, leaves the list when it stops, and one that stops saying it is alive leaves it when
its time runs out, on Redis's clock. On a real Redis and on the embedded store."""

from __future__ import annotations

import asyncio
import json

from redisq.keys import COORDINATORS_KEY

from test_api import running_api


async def test_coordinators_are_listed_while_they_run(engine_redis):
    async with running_api(engine_redis) as first:
        async with running_api(engine_redis) as second:
            for api in (first, second):
                resp = await api.client.get("/coordinators")
                assert resp.status_code == 200, resp.text
                listed = resp.json()["coordinators"]
                assert len(listed) == 2
                (answering,) = [c for c in listed if c["answering"]]
                assert answering == {**json.loads(api.coordinator.presence.description),
                                     "aliveUntil": answering["aliveUntil"], "answering": True}
                assert answering["id"] == api.coordinator.engine.coordinator_id and answering["version"]
        listed = (await first.client.get("/coordinators")).json()["coordinators"]
        assert [c["answering"] for c in listed] == [True]  # the second one said it stops


async def test_a_coordinator_that_stops_saying_it_is_alive_leaves_the_list(engine_redis):
    async with running_api(engine_redis) as api:
        presence = api.coordinator.engine.presence
        await presence.alive('{"id": "gone-quiet"}', 200)
        _, alive = await presence.list()
        assert {c.description["id"] for c in alive} == {"gone-quiet", api.coordinator.engine.coordinator_id}
        await asyncio.sleep(0.3)
        _, alive = await presence.list()
        assert [c.description["id"] for c in alive] == [api.coordinator.engine.coordinator_id]
        await presence.alive(api.coordinator.presence.description, 15_000)  # the next turn tidies up
        assert await engine_redis.zcard(COORDINATORS_KEY) == 1
