"""``GET /openapi.json`` and ``GET /docs`` as a caller, a browser and a validator see them.

The document validates as OpenAPI 3.1 (``openapi-spec-validator``); it has an entry for
every route of the app and no route without one (``PLANNED`` entries aside, while their
route is not built); its request schemas are the validators' own rules, so what the schema
admits is what the API admits; every answer of an operator's and a worker's session
validates against the document; and the /docs page loads only assets of its own host.
The schemathesis run against a live coordinator is in ``test_openapi_schemathesis.py``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from redisq.api import app as app_module
from redisq.api.docs import STATIC_DIR
from redisq.api.openapi import COMPONENTS, OPERATIONS, PLANNED, fields_schema, routed_operations
from redisq.config import LimitConfig
from redisq.cron import SCHEDULE_FIELDS
from redisq.inputs import TIMEOUT_S, NumberRule
from redisq.limits import BURST, CONCURRENCY, PATCH_FIELDS, PATCH_RULES, RATE
from redisq.model import COST, DELAY_S, ENQUEUE_FIELDS, MAX_ATTEMPTS, Job, JobState
from redisq.security import receipt_token

from test_api import WORKER, Api, running_api, worker_config

Document = dict[str, Any]


async def document_of(api: Api) -> Document:
    resp = await api.client.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    document: Document = resp.json()
    return document


def schema_validator(document: Document, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema``, one of the document's, whose $refs reach its components."""
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def valid(document: Document, schema: dict[str, Any], value: Any) -> bool:
    return schema_validator(document, schema).is_valid(value)


# -- the document ------------------------------------------------------------------------------

@pytest.mark.parametrize("api_tokens", [(), ("ops-token",)])
async def test_the_document_is_valid_openapi_3_1(engine_redis, api_tokens):
    async with running_api(engine_redis, dispatch=False, api_tokens=api_tokens) as api:
        document = await document_of(api)
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_has_an_entry_and_every_entry_a_route():
    """A new route without an entry fails here; so does an entry whose route is gone, unless
    it is PLANNED; and a PLANNED route that now exists must leave PLANNED (its entry is then
    served, and the schemathesis run checks the route against it)."""
    routes = app_module.routes
    for route in routes:  # a route of another kind would be missed by routed_operations
        assert type(route).__name__ in ("Route", "Mount"), route
    routed = routed_operations(routes)
    entries = [(op.method, op.path) for op in OPERATIONS]
    assert len(entries) == len(set(entries)), "an operation has two entries"
    assert routed - set(entries) == set(), "routes without an entry in api/openapi.py OPERATIONS"
    assert set(entries) - routed - PLANNED == set(), "entries without a route (and not PLANNED)"
    assert PLANNED & routed == set(), "built: take these out of PLANNED"


async def test_the_document_has_every_route_and_only_those(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        document = await document_of(api)
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == routed_operations(app_module.routes)


# -- request schemas: the validators' rules ------------------------------------------------------

def body_schema(document: Document, method: str, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"][
        "schema"]
    return schema


def component(document: Document, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


async def test_each_request_schema_has_exactly_its_validators_fields(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        document = await document_of(api)
    assert list(component(document, "EnqueueRequest")["properties"]) == list(ENQUEUE_FIELDS)
    assert list(component(document, "ScheduleRequest")["properties"]) == list(SCHEDULE_FIELDS)
    assert list(component(document, "LimitsPatch")["properties"]) == list(PATCH_FIELDS)
    assert list(component(document, "Receipt")["properties"]) == ["status", "error", "result", "retry", "retryAfter",
                                                                   "cost", "available", "bucketSize"]
    for name, rule in PATCH_RULES.items():
        assert component(document, "LimitsPatch")["properties"][name] == rule.json_schema()
    jobs = body_schema(document, "POST", "/jobs")["properties"]["jobs"]
    assert (jobs["minItems"], jobs["maxItems"]) == (1, 1000)


def test_a_validator_field_without_a_schema_stops_the_document():
    with pytest.raises(ValueError, match="fields without a schema: \\['priority'\\]"):
        fields_schema([*ENQUEUE_FIELDS, "priority"], {name: {} for name in ENQUEUE_FIELDS})
    with pytest.raises(ValueError, match="schemas without a field: \\['cron'\\]"):
        fields_schema(ENQUEUE_FIELDS, {**{name: {} for name in ENQUEUE_FIELDS}, "cron": {}})


RULES = {"timeout": TIMEOUT_S, "delay": DELAY_S, "maxAttempts": MAX_ATTEMPTS, "cost": COST, "rate": RATE,
         "burst": BURST, "concurrency": CONCURRENCY}


def probes(rule: NumberRule) -> list[Any]:
    """The values where a rule and its schema could disagree: at and past each bound,
    fractions, the wrong types, null."""
    low, high = rule.low, rule.high
    return [low, low - 1, low + 0.5, low + 1, high, high - 0.5, high + 0.5, high + 1, int(high) * 10, -1, 0, 0.5,
            1, 2, 1e-9, "1", True, False, None, [], {}]


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_number_rules_schema_admits_what_the_rule_admits(name):
    rule = RULES[name]
    validator = jsonschema.Draft202012Validator(rule.json_schema())
    for value in probes(rule):
        admitted = (value is None and rule.nullable) or rule.admits(value)
        # JSON Schema counts 2.0 as an integer; the rule wants a JSON integer (its description says so)
        if rule.whole and isinstance(value, float) and value.is_integer() and rule.admits(int(value)):
            admitted = True
        assert validator.is_valid(value) == admitted, (name, value)


async def test_the_enqueue_schema_admits_what_post_job_accepts_and_refuses_what_it_refuses(engine_redis):
    bodies = [
        ({"worker": WORKER}, True),
        ({"worker": WORKER, "args": [1], "delay": 5, "id": "a.b~c:d-e_f", "maxAttempts": 3, "timeout": 0.5,
          "throttleKey": "shop-1", "cost": 2}, True),
        ({"worker": WORKER, "runAt": "2030-01-01T00:00:00Z", "delay": None}, True),
        ({"worker": WORKER, "runAt": 1_900_000_000}, True),
        ({"worker": WORKER, "runAt": 1_900_000_000, "delay": 1}, False),
        ({"worker": WORKER, "id": "tick@1"}, False),
        ({"worker": WORKER, "id": "x" * 201}, False),
        ({"worker": WORKER, "maxAttempts": 0}, False),
        ({"worker": WORKER, "cost": 0}, False),
        ({"worker": WORKER, "timeout": 604801}, False),
        ({"worker": WORKER, "throttleKey": ""}, False),
        ({"worker": WORKER, "priority": 1}, False),
        ({"args": {}}, False),
    ]
    async with running_api(engine_redis, dispatch=False) as api:
        document = await document_of(api)
        schema = component(document, "EnqueueRequest")
        for body, accepted in bodies:
            resp = await api.client.post("/job", json=body)
            assert (resp.status_code == 201) == accepted, (body, resp.text)
            assert valid(document, schema, body) == accepted, body


# -- security ----------------------------------------------------------------------------------

def sample(path: str) -> str:
    return re.sub(r"\{\w+\}", "x", path)


async def test_with_api_tokens_the_document_says_which_routes_need_one_and_they_do(engine_redis):
    async with running_api(engine_redis, dispatch=False, api_tokens=("ops-token",)) as api:
        document = await document_of(api)  # open: no token sent
        assert document["security"] == [{"apiToken": []}]
        assert document["components"]["securitySchemes"]["apiToken"] == {
            "type": "http", "scheme": "bearer", "description": "One of the coordinator's api_tokens"}
        for path, item in document["paths"].items():
            for method, operation in item.items():
                resp = await api.client.request(method.upper(), sample(path))
                if "security" in operation:  # open to callers without an API token
                    assert resp.status_code != 401 or operation["security"] == [{"receiptToken": []}], (method, path)
                    assert "401" not in operation["responses"] or operation["security"], (method, path)
                else:
                    assert resp.status_code == 401, (method, path, resp.text)
                    assert "401" in operation["responses"], (method, path)
        paths = document["paths"]
        assert paths["/health"]["get"]["security"] == []
        assert paths["/docs"]["get"]["security"] == []
        assert paths["/job/{id}/receipt"]["post"]["security"] == [{"receiptToken": []}]


async def test_without_api_tokens_the_document_asks_for_none(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        document = await document_of(api)
    assert "security" not in document
    assert "apiToken" not in document["components"]["securitySchemes"]
    assert all("401" not in op["responses"] for path, item in document["paths"].items() for op in item.values()
               if "receipt" not in path and "heartbeat" not in path)


# -- every answer of a session validates against the document -------------------------------------

class Checker:
    """Checks each answer against its operation in the document: its status is listed, its
    content type is the one listed, its body validates."""

    def __init__(self, document: Document):
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, path: str, resp: httpx.Response, status: int) -> Any:
        assert resp.status_code == status, (method, path, resp.text)
        responses = self.document["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, which the document does not list"
        if "content" not in responses[str(status)]:  # an answer without a body (GET /'s redirect)
            assert not resp.content, (method, path, resp.text)
            self.seen.add((method, path, status))
            return None
        content = responses[str(status)]["content"]
        (media_type, listed), = content.items()
        assert resp.headers["content-type"].split(";")[0] == media_type
        if media_type == "application/json":
            errors = [e.message for e in schema_validator(self.document, listed["schema"]).iter_errors(resp.json())]
            assert not errors, (method, path, status, resp.json(), errors)
        self.seen.add((method, path, status))
        return resp.json() if media_type == "application/json" else resp.text


async def test_every_answer_of_an_operators_and_a_workers_session_validates_against_the_document(engine_redis):
    shopify = LimitConfig("shopify", rate=2, burst=39)  # the worker names a shared limit too
    async with running_api(engine_redis, worker=worker_config(rate=5, burst=10, limits=("shopify",), slot="shopify",
                                                              shared_limits=(shopify,)),
                           limits={"shopify": shopify}) as api:
        check = Checker(await document_of(api))
        c = api.client
        job = check("POST", "/job", await c.post("/job", json={"worker": WORKER, "id": "one", "args": {"n": 1}}), 201)
        check("POST", "/job", await c.post("/job", json={"worker": WORKER, "id": "one"}), 200)
        check("POST", "/job", await c.post("/job", json={"worker": WORKER, "delay": -1}), 422)
        check("POST", "/job", await c.post("/job", content=b"{"), 400)
        check("POST", "/job", await c.post("/job", content=b"[" + b" " * 300_000 + b"]"), 413)
        check("POST", "/jobs", await c.post("/jobs", json={"jobs": [{"worker": WORKER, "id": "b1", "delay": 60},
                                                                  {"worker": WORKER, "id": "b2", "delay": 60}]}), 201)
        check("POST", "/jobs", await c.post("/jobs", json={"jobs": [{"worker": WORKER, "id": "b1"}]}), 200)
        check("POST", "/jobs", await c.post("/jobs", json={"jobs": [{"worker": "nobody"}]}), 422)
        check("GET", "/job/{id}", await c.get(f"/job/{WORKER}:b1"), 200)
        check("GET", "/job/{id}", await c.get(f"/job/{WORKER}:none"), 404)
        check("DELETE", "/job/{id}", await c.delete(f"/job/{WORKER}:b1"), 200)
        check("DELETE", "/job/{id}", await c.delete(f"/job/{WORKER}:b1"), 409)
        check("DELETE", "/job/{id}", await c.delete("/job/nobody:x"), 404)

        call = await api.call_for(job["id"])  # the worker's side: heartbeat and receipt
        token = call["receiptToken"]
        bearer = {"Authorization": f"Bearer {token}"}
        receipt_path, heartbeat_path = f"/job/{job['id']}/receipt", f"/job/{job['id']}/heartbeat"
        check("POST", "/job/{id}/heartbeat", await c.post(heartbeat_path, headers=bearer), 200)
        check("POST", "/job/{id}/heartbeat", await c.post(heartbeat_path), 401)
        check("POST", "/job/{id}/receipt", await c.post(receipt_path, json={"status": "done"}, headers=bearer), 422)
        accepted = check("POST", "/job/{id}/receipt", await c.post(receipt_path, headers=bearer, json={
            "status": "success", "result": {"sent": True}}), 200)
        assert accepted == {"accepted": True, "duplicate": False, "state": "succeeded"}
        check("POST", "/job/{id}/receipt", await c.post(receipt_path, headers=bearer, json={
            "status": "success", "result": {"sent": True}}), 200)
        check("POST", "/job/{id}/heartbeat", await c.post(heartbeat_path, headers=bearer), 409)
        other = receipt_token(api.coordinator.secret, f"{WORKER}:none", 1, 0)
        check("POST", "/job/{id}/receipt", await c.post(f"/job/{WORKER}:none/receipt", json={"status": "success"},
                                                        headers={"Authorization": f"Bearer {other}"}), 404)
        finished = check("GET", "/job/{id}", await c.get(f"/job/{job['id']}"), 200)
        assert finished["state"] == "succeeded" and finished["result"] == {"sent": True}

        schedule_body = {"worker": WORKER, "id": "digest", "cron": "0 9 * * *", "timezone": "Europe/Berlin"}
        check("POST", "/job", await c.post("/job", json=schedule_body), 201)
        check("POST", "/job", await c.post("/job", json={**schedule_body, "args": {"list": "daily"}}), 200)
        check("POST", "/job", await c.post("/job", json={**schedule_body, "cron": "0 9 * *"}), 422)
        check("GET", "/schedules", await c.get("/schedules"), 200)
        check("GET", "/schedules", await c.get("/schedules", params={"worker": "nobody"}), 422)
        sid = f"{WORKER}:digest"
        check("GET", "/schedule/{id}", await c.get(f"/schedule/{sid}"), 200)
        check("POST", "/schedule/{id}/pause", await c.post(f"/schedule/{sid}/pause"), 200)
        check("POST", "/schedule/{id}/resume", await c.post(f"/schedule/{sid}/resume"), 200)
        check("DELETE", "/schedule/{id}", await c.delete(f"/schedule/{sid}"), 200)
        for method, path in (("GET", "/schedule/{id}"), ("DELETE", "/schedule/{id}"),
                             ("POST", "/schedule/{id}/pause"), ("POST", "/schedule/{id}/resume")):
            check(method, path, await c.request(method, path.replace("{id}", sid)), 404)

        check("GET", "/workers", await c.get("/workers"), 200)
        check("GET", "/workers/{name}", await c.get(f"/workers/{WORKER}"), 200)
        check("GET", "/workers/{name}", await c.get("/workers/nobody"), 404)
        check("PATCH", "/workers/{name}", await c.patch(f"/workers/{WORKER}", json={"rate": None}), 200)
        check("PATCH", "/workers/{name}", await c.patch(f"/workers/{WORKER}", json={"concurrency": 2.5}), 422)
        check("PATCH", "/workers/{name}", await c.patch(f"/workers/{WORKER}", content=b"nope"), 400)
        check("PATCH", "/workers/{name}", await c.patch("/workers/nobody", json={"rate": 1}), 404)
        for action in ("pause", "resume"):
            check("POST", f"/workers/{{name}}/{action}", await c.post(f"/workers/{WORKER}/{action}"), 200)
            check("POST", f"/workers/{{name}}/{action}", await c.post(f"/workers/nobody/{action}"), 404)
        check("GET", "/limits", await c.get("/limits"), 200)
        check("GET", "/limits/{name}", await c.get("/limits/shopify", params={"key": "shop-1"}), 200)
        check("GET", "/limits/{name}", await c.get("/limits/nobody"), 404)
        check("GET", "/limits/{name}", await c.get("/limits/shopify", params={"key": ""}), 422)
        check("PATCH", "/limits/{name}", await c.patch("/limits/shopify", json={"rate": 4}), 200)
        check("PATCH", "/limits/{name}", await c.patch("/limits/shopify", json={"timeout": 4}), 422)
        check("PATCH", "/limits/{name}", await c.patch("/limits/shopify", content=b"nope"), 400)
        check("PATCH", "/limits/{name}", await c.patch("/limits/nobody", json={"rate": 1}), 404)
        for action in ("pause", "resume"):
            check("POST", f"/limits/{{name}}/{action}", await c.post(f"/limits/shopify/{action}"), 200)
            check("POST", f"/limits/{{name}}/{action}", await c.post(f"/limits/shopify/{action}",
                                                                     json={"key": "shop-1"}), 200)
            check("POST", f"/limits/{{name}}/{action}", await c.post(f"/limits/shopify/{action}",
                                                                     json={"shop": "x"}), 422)
            check("POST", f"/limits/{{name}}/{action}", await c.post(f"/limits/nobody/{action}"), 404)
        check("GET", "/health", await c.get("/health"), 200)
        check("GET", "/openapi.json", await c.get("/openapi.json"), 200)
        check("GET", "/docs", await c.get("/docs"), 200)
        check("GET", "/ui", await c.get("/ui"), 200)
        check("GET", "/", await c.get("/"), 307)

        # finding and fixing jobs (b1 was cancelled above, "one" succeeded)
        page = check("GET", "/jobs", await c.get("/jobs", params={"worker": WORKER, "state": "scheduled",
                                                                   "limit": 1}), 200)
        assert page["next"] is None and [j["id"] for j in page["jobs"]] == [f"{WORKER}:b2"]
        check("GET", "/jobs", await c.get("/jobs", params={"worker": WORKER, "state": "nope"}), 422)
        check("POST", "/job/{id}/retry", await c.post(f"/job/{WORKER}:b1/retry", json={"delay": 60}), 200)
        check("POST", "/job/{id}/retry", await c.post(f"/job/{WORKER}:b1/retry"), 409)
        check("POST", "/job/{id}/retry", await c.post(f"/job/{WORKER}:none/retry"), 404)
        check("POST", "/job/{id}/retry", await c.post(f"/job/{WORKER}:b1/retry", json={"delay": -1}), 422)
        await c.delete(f"/job/{WORKER}:b1")
        retried = check("POST", "/jobs/retry", await c.post("/jobs/retry", json={
            "worker": WORKER, "state": "cancelled", "ids": [f"{WORKER}:b1", f"{WORKER}:none"], "delay": 60}), 200)
        assert retried["retried"] == 1 and retried["skipped"] == [{"id": f"{WORKER}:none", "reason": "not found"}]
        check("POST", "/jobs/retry", await c.post("/jobs/retry", json={"worker": WORKER}), 422)
        deleted = check("POST", "/jobs/delete", await c.post("/jobs/delete", json={
            "worker": WORKER, "state": "succeeded", "all": True}), 200)
        assert deleted["deleted"] == 1
        check("GET", "/operations/{operation}", await c.get(f"/operations/{deleted['operation']}"), 200)
        check("GET", "/operations/{operation}", await c.get(f"/operations/{WORKER}:abc123"), 404)
        check("GET", "/metrics", await c.get("/metrics"), 200)
        await c.post("/job", json={"worker": WORKER, "id": "keyed", "throttleKey": "shop-1", "delay": 60})
        keys = check("GET", "/workers/{name}/keys", await c.get(f"/workers/{WORKER}/keys", params={"limit": 5}), 200)
        assert "shop-1" in [k["key"] for k in keys["keys"]]
        check("GET", "/workers/{name}/keys", await c.get("/workers/nobody/keys"), 404)
        check("GET", "/workers/{name}/keys", await c.get(f"/workers/{WORKER}/keys", params={"limit": 0}), 422)
        alive = check("GET", "/coordinators", await c.get("/coordinators"), 200)
        assert [entry["answering"] for entry in alive["coordinators"]] == [True]
        # the event stream's 422s (its 200 never ends: test_openapi_schemathesis.py reads its headers)
        check("GET", "/events", await c.get("/events", params={"worker": "nobody"}), 422)
        check("GET", "/events", await c.get("/events", headers={"Last-Event-ID": "nope"}), 422)
    # every route was answered at least once, with a status its entry lists
    assert {(method, path) for method, path, _ in check.seen} == routed_operations(app_module.routes)


def test_the_job_schema_has_every_field_a_job_answers_with():
    job = Job(id=f"{WORKER}:x", worker=WORKER, state=JobState.SCHEDULED, args_json="{}", run_at_ms=0, attempts=0,
              max_attempts=1, timeout_ms=None, created_ms=0)
    properties = next(op for op in OPERATIONS if op.path == "/job/{id}").answers[200].schema
    assert properties == {"$ref": "#/components/schemas/Job"}
    listed = job.to_json()  # a listing's job: no history
    answered = Job(**{**job.__dict__, "history": ()}).to_json()  # one job answered: with its history
    assert set(COMPONENTS["Job"]["properties"]) == set(answered) == set(listed) | {"history"}
    assert set(COMPONENTS["Job"]["required"]) == set(listed)


# -- /docs -------------------------------------------------------------------------------------

class References(HTMLParser):
    """Every URL a page makes the browser load (or link to)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster", "srcset") and value:
                self.urls.append(value)


async def test_docs_loads_only_assets_of_its_own_host_and_each_answers(engine_redis):
    """With api_tokens set, as a browser opens it: no token, every asset from the same host."""
    async with running_api(engine_redis, dispatch=False, api_tokens=("ops-token",)) as api:
        page_url = "http://redisq.test/docs"
        page = await api.client.get(page_url)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        parser = References()
        parser.feed(page.text)
        assert len(parser.urls) == 3, parser.urls  # the stylesheet, Swagger UI, our initializer
        loaded: dict[str, httpx.Response] = {}
        for url in parser.urls:
            absolute = urljoin(page_url, url)
            assert urlsplit(absolute).netloc == "redisq.test", url
            resp = await api.client.get(absolute)
            assert resp.status_code == 200, (url, resp.status_code)
            assert len(resp.content) > 0
            loaded[urlsplit(absolute).path] = resp
        css = loaded["/docs/assets/swagger-ui/swagger-ui.css"]
        assert css.headers["content-type"].startswith("text/css")
        for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.text):
            assert ref.startswith("data:") or urlsplit(urljoin(page_url, ref)).netloc in ("", "redisq.test"), ref
        initializer = loaded["/docs/assets/docs.js"].text
        assert re.findall(r"https?://", initializer) == []
        assert 'new URL("openapi.json", document.baseURI)' in initializer
        assert "validatorUrl: null" in initializer  # the only URL Swagger UI would fetch from elsewhere
        spec = await api.client.get(urljoin(page_url, "openapi.json"))
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1.")
        assert (await api.client.get("/docs/assets/nope.js")).status_code == 404
        assert (await api.client.get("/workers")).status_code == 401  # the rest still needs the token
        # an open path leads nowhere else: the files of static/ only
        assert (await api.client.get("/docs/assets/%2e%2e/openapi.py")).status_code == 404
        assert (await api.client.get("/docs/assets/%2e%2e/%2e%2e/%2e%2e/workers")).status_code == 404
        assert (await api.client.head("/docs/assets/docs.js")).status_code == 401  # open to GET only
    async with running_api(engine_redis, dispatch=False) as api:
        refused = await api.client.post("/docs/assets/docs.js")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        assert refused.json() == {"error": "method not allowed: POST /docs/assets/docs.js (allowed: GET, HEAD)"}


def test_swagger_ui_is_vendored_with_its_license_and_pinned_version():
    vendored = STATIC_DIR / "swagger-ui"
    assert {p.name for p in vendored.iterdir()} >= {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE",
                                                      "package.json"}
    assert '"version": "5.35.0"' in (vendored / "package.json").read_text()
    assert "Apache License" in (vendored / "LICENSE").read_text()


def test_the_wheel_ships_the_docs_assets(wheel_files):
    """/docs must work from an installed wheel."""
    names = wheel_files
    shipped = {f"redisq/api/static/{p.relative_to(STATIC_DIR).as_posix()}" for p in STATIC_DIR.rglob("*")
               if p.is_file()}
    assert "redisq/api/static/swagger-ui/swagger-ui-bundle.js" in shipped
    assert shipped <= names, sorted(shipped - names)
