"""``redisq demo``: a self-contained tour on the embedded store.

One process runs the coordinator (API + dispatcher) and an example worker, each on a free
local port, enqueues an immediate, a delayed, a failing-then-retried job and a throttled
burst over real HTTP, prints each job's lifecycle as it happens, and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from .api import create_app
from .config import Backoff, Config, WorkerConfig
from .coordinator import Coordinator

DEMO_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_worker_app() -> Starlette:
    """The example worker: greets, fails its first two attempts on purpose, or just works."""

    async def greet(request: Request) -> JSONResponse:
        job = await request.json()
        return JSONResponse({"greeting": f"hello, {job['args'].get('name', 'world')}"})

    async def flaky(request: Request) -> JSONResponse:
        job = await request.json()
        if job["attempt"] < 3:
            return JSONResponse({"error": f"failing attempt {job['attempt']} on purpose"}, status_code=500)
        return JSONResponse({"ok": True, "attempt": job["attempt"]})

    async def throttled(request: Request) -> JSONResponse:
        job = await request.json()
        return JSONResponse({"n": job["args"]["n"]})

    return Starlette(routes=[
        Route("/greet", greet, methods=["POST"]),
        Route("/flaky", flaky, methods=["POST"]),
        Route("/throttled", throttled, methods=["POST"]),
    ])


def demo_config(api_port: int, worker_port: int) -> Config:
    base = f"http://127.0.0.1:{worker_port}"
    return Config(
        public_url=f"http://127.0.0.1:{api_port}",
        port=api_port,
        shutdown_grace_s=2.0,
        workers={
            "greet": WorkerConfig("greet", f"{base}/greet", timeout_s=10),
            "flaky": WorkerConfig("flaky", f"{base}/flaky", timeout_s=10,
                                  backoff=Backoff(initial_s=0.5, factor=2.0, jitter=False)),
            "throttled": WorkerConfig("throttled", f"{base}/throttled", rate=4.0, burst=2, timeout_s=10),
        },
    )


async def _start(app: ASGIApp, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


async def demo_main() -> int:
    api_port, worker_port = _free_port(), _free_port()
    config = demo_config(api_port, worker_port)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"  +{time.monotonic() - started:6.2f}s  {text}", flush=True)

    def observer(event: str, job_id: str, attempt: int, detail: str) -> None:
        say(f"{job_id:<22} attempt {attempt}  {event}: {detail}")

    print("redisq demo: coordinator and example worker in one process, embedded store")
    print(f"  API on http://127.0.0.1:{api_port}, example worker on http://127.0.0.1:{worker_port}\n")
    worker_server, worker_task = await _start(example_worker_app(), worker_port)
    coordinator = Coordinator(config, observer=observer)
    api_server, api_task = await _start(create_app(coordinator), api_port)
    ids: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=config.base_url) as client:
            async def post(path: str, body: dict[str, Any]) -> Any:
                resp = await client.post(path, json=body)
                resp.raise_for_status()
                return resp.json()

            job = await post("/job", {"worker": "greet", "id": "now", "args": {"name": "Ada"}})
            say(f"enqueued {job['id']} (immediate)")
            ids.append(job["id"])
            job = await post("/job", {"worker": "greet", "id": "later", "args": {"name": "Grace"}, "delay": 2})
            say(f"enqueued {job['id']} (delayed 2 s, runAt {job['runAt']})")
            ids.append(job["id"])
            job = await post("/job", {"worker": "flaky", "id": "flaky", "args": {}})
            say(f"enqueued {job['id']} (fails twice, retried with backoff 0.5 s, 1 s)")
            ids.append(job["id"])
            burst = [{"worker": "throttled", "id": f"burst-{n}", "args": {"n": n}} for n in range(8)]
            batch = await post("/jobs", {"jobs": burst})
            say(f"enqueued {batch['created']} throttled jobs (rate 4/s, burst 2)")
            ids += [j["id"] for j in batch["jobs"]]

            deadline = time.monotonic() + DEMO_TIMEOUT_S
            states: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                states = {i: (await client.get(f"/job/{i}")).json() for i in ids}
                if all(s["state"] in ("succeeded", "dead", "cancelled") for s in states.values()):
                    break
                await asyncio.sleep(0.1)
        print("\nfinal states:")
        for job_id, state in states.items():
            print(f"  {job_id:<22} {state['state']:<10} attempts={state['attempts']}  "
                  f"result={json.dumps(state['result'])}")
        done = all(s["state"] == "succeeded" for s in states.values())
        print("\nall jobs succeeded" if done else "\nsome jobs did not finish in time")
        return 0 if done else 1
    finally:
        api_server.should_exit = True
        worker_server.should_exit = True
        await asyncio.gather(api_task, worker_task, return_exceptions=True)


def run_demo(loop: str = "asyncio") -> int:
    logging.basicConfig(level=logging.WARNING, format="  (%(name)s) %(message)s")
    if loop == "uvloop":
        import uvloop

        return uvloop.run(demo_main())
    return asyncio.run(demo_main())
