"""The console (``GET /ui``) driven in headless Chromium by Playwright, against `redisq serve`
on a real Redis with a stand-in worker: dead jobs show up live, are retried from the page and
succeed; limits are edited in place (the API's 422 beside the field); with ``api_tokens`` the
page shows nothing but the token prompt until a token is given.

Screenshots of each page go to ``tests/screenshots/`` (gitignored) for a person to look at.
Chromium is Debian's (``/usr/bin/chromium``): missing, the tests fail saying how to install it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from redisq.api.ui import UI_DIR

from stand_ins import StandInWorker
from test_cli import clean_env, serving, stand_in_config  # noqa: F401 (clean_env: a fixture)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"
WAIT_MS = 30_000  # the machine is small and busy: every wait in the browser is explicit and generous
JOBS = 5
TOKEN = "console-test-token"
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the console's tests need it (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def enqueue(url: str, worker: str, n: int, headers: dict[str, str] | None = None) -> None:
    for i in range(n):
        done = httpx.post(f"{url}/job", json={"worker": worker, "id": f"welcome-{i}", "args": {"n": i}},
                          headers=headers, timeout=10)
        assert done.status_code == 201, done.text


@pytest.fixture
def fresh_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def test_dead_jobs_show_up_live_and_are_retried_from_the_page(tmp_path, clean_env, fresh_redis, page):
    with StandInWorker(404) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        assert httpx.get(url, timeout=10).headers.get("location") == "ui"  # GET / redirects (not followed)
        page.goto(url)  # / -> /ui
        row = page.locator('tr[data-worker="send-email"]')
        dead = row.locator('td[data-state="dead"]')
        expect(dead).to_have_text("0")
        expect(page.get_by_test_id("live")).to_have_text("live")
        expect(page.get_by_test_id("health")).to_contain_text("redis up")

        enqueue(url, "send-email", JOBS)
        expect(dead).to_have_text(str(JOBS))  # live: from /events, without a reload
        screenshot(page, "overview")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "overview-dark")
        page.emulate_media(color_scheme="light")

        dead.get_by_role("link").click()
        jobs = page.get_by_test_id("jobs")
        expect(jobs.locator("tbody tr")).to_have_count(JOBS)
        expect(jobs).to_contain_text("HTTP 404")
        screenshot(page, "dead-jobs")

        page.goto(f"{url}/ui#/jobs/send-email/dead?limit=2")  # pages of 2: the cursor goes on
        seen: list[str] = []
        for rows in (2, 2, 1):
            expect(jobs.locator("tbody tr")).to_have_count(rows)
            page_ids = jobs.locator("tbody tr").evaluate_all("rows => rows.map(row => row.dataset.job)")
            assert not set(page_ids) & set(seen), (page_ids, seen)
            seen += page_ids
            if len(seen) < JOBS:
                page.get_by_test_id("next-page").click()
                expect(jobs.locator(f'tr[data-job="{page_ids[0]}"]')).to_have_count(0)
        expect(page.get_by_test_id("next-page")).to_have_count(0)  # the last page
        assert sorted(seen) == sorted(f"send-email:welcome-{i}" for i in range(JOBS))
        page.goto(f"{url}/ui#/jobs/send-email/dead")
        expect(jobs.locator("tbody tr")).to_have_count(JOBS)

        jobs.get_by_role("link", name="send-email:welcome-0").click()
        expect(page.get_by_test_id("state")).to_have_text("dead")
        expect(page.get_by_test_id("args")).to_contain_text('"n": 0')
        expect(page.get_by_test_id("history").locator("tbody tr")).to_have_count(2)  # 2 attempts, both 404
        expect(page.get_by_test_id("history")).to_contain_text("404")
        finished = page.get_by_test_id("job").locator("time").nth(2)  # in the browser's zone, UTC on hover
        assert finished.get_attribute("title").endswith(" UTC")
        screenshot(page, "job")
        page.go_back()

        worker.status = 200  # the fix is deployed
        page.get_by_test_id("retry-all").click()
        expect(page.get_by_test_id("operation")).to_have_text(f"Retried {JOBS} dead jobs.")
        counts = page.get_by_test_id("counts")
        expect(counts.locator('[data-state="succeeded"]')).to_have_text(f"succeeded {JOBS}")  # live again
        expect(counts.locator('[data-state="dead"]')).to_have_text("dead 0")
        screenshot(page, "retried")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["jobs"]["succeeded"] == JOBS


def test_limits_are_edited_in_place_and_a_wrong_value_shows_the_apis_message(tmp_path, clean_env, fresh_redis, page):
    with StandInWorker(200) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        page.goto(f"{url}/ui#/worker/send-email")
        form = page.get_by_test_id("limits")
        form.locator("input[name=rate]").fill("7.5")
        form.locator("input[name=burst]").fill("15")
        form.get_by_role("button", name="Save limits").click()
        expect(page.get_by_test_id("limits-status")).to_have_text("Saved.")
        limits = httpx.get(f"{url}/workers", timeout=10).json()["workers"][0]["limits"]
        assert (limits["rate"], limits["burst"]) == (7.5, 15)

        form.locator("input[name=rate]").fill("0")
        form.get_by_role("button", name="Save limits").click()
        refused = httpx.patch(f"{url}/workers/send-email", json={"rate": 0}, timeout=10)
        assert refused.status_code == 422 and refused.json()["field"] == "rate"
        expect(form.locator('[data-error-for="rate"]')).to_have_text(refused.json()["error"])  # beside its field
        expect(page.get_by_test_id("limits-status")).to_have_text("Not saved.")
        screenshot(page, "limits-error-phone")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["limits"]["rate"] == 7.5

        page.get_by_test_id("pause").click()
        expect(page.get_by_test_id("pause")).to_have_text("Resume")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["limits"]["paused"] is True
        page.get_by_test_id("pause").click()
        expect(page.get_by_test_id("pause")).to_have_text("Pause")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["limits"]["paused"] is False


def test_with_api_tokens_the_page_shows_only_the_token_prompt_until_given_one(tmp_path, clean_env, fresh_redis, page):
    with StandInWorker(200) as worker, serving(tmp_path, clean_env,
                                               f"api_tokens = {json.dumps([TOKEN])}\n"
                                               + stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        requests: list[tuple[str, str | None]] = []
        page.on("request", lambda request: requests.append((request.url, request.headers.get("authorization"))))
        page.goto(f"{url}/ui")
        prompt = page.get_by_test_id("token-form")
        expect(prompt).to_be_visible()
        expect(page.locator("#main")).to_be_empty()
        expect(page.locator("#nav")).to_be_hidden()
        assert page.locator("[data-worker]").count() == 0
        screenshot(page, "token-prompt")

        page.get_by_label("API token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#token-error")).to_have_text("That token was refused.")
        expect(page.locator("#main")).to_be_empty()

        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator('tr[data-worker="send-email"]')).to_be_visible()
        expect(prompt).to_be_hidden()
        expect(page.get_by_test_id("live")).to_have_text("live")  # /events read with the token in a header
        enqueue(url, "send-email", 1, headers={"Authorization": f"Bearer {TOKEN}"})
        expect(page.locator('tr[data-worker="send-email"] td[data-state="succeeded"]')).to_have_text("1")
        assert not any(TOKEN in request_url for request_url, _ in requests)  # never in a URL
        signed_in = requests[[auth for _, auth in requests].index(f"Bearer {TOKEN}"):]
        api_calls = [(u, auth) for u, auth in signed_in if "/ui" not in u]
        assert any(u.endswith("/events") for u, _ in api_calls), api_calls
        assert all(auth == f"Bearer {TOKEN}" for _, auth in api_calls), api_calls  # every call, the stream too


def test_the_wheel_ships_the_console(wheel_files):
    """/ui must work from an installed wheel."""
    names = wheel_files
    shipped = {f"redisq/ui/{p.relative_to(UI_DIR).as_posix()}" for p in UI_DIR.rglob("*") if p.is_file()}
    assert {"redisq/ui/index.html", "redisq/ui/console.js", "redisq/ui/console.css"} <= shipped <= names, \
        sorted(shipped - names)


def recent_rate(page: Page, within: tuple[float, float]) -> float:
    """Wait until the page's dispatch rate (the latest whole span of its chart) is within
    ``within`` jobs/s, and return it."""
    low, high = within
    page.wait_for_function(
        "([low, high]) => { const figure = document.querySelector('[data-testid=recent-rate]');"
        " const rate = figure && Number(figure.dataset.rate); return rate >= low && rate <= high; }",
        arg=[low, high], timeout=90_000)
    return float(page.get_by_test_id("recent-rate").first.get_attribute("data-rate") or "nan")


def test_a_limit_edited_in_the_page_shows_in_get_workers_and_in_the_dispatch_rate(tmp_path, clean_env,
                                                                                 fresh_redis, page):
    """The rate follows the limit: at 20/s the chart's latest 10 s span holds about 20 jobs a
    second (never more than the bucket lets out), and after the operator lowers it to 3/s, about
    3. The lower bounds are generous: a busy machine may dispatch slower than the limit."""
    with StandInWorker(200) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        page.goto(f"{url}/ui#/worker/send-email")
        form = page.get_by_test_id("limits")

        def set_rate(rate: str) -> None:
            form.locator("input[name=rate]").fill(rate)
            form.locator("input[name=burst]").fill("1")
            form.get_by_role("button", name="Save limits").click()
            expect(page.get_by_test_id("limits-status")).to_have_text("Saved.")

        set_rate("20")
        assert httpx.get(f"{url}/workers", timeout=10).json()["workers"][0]["limits"]["rate"] == 20
        for batch in range(2):
            done = httpx.post(f"{url}/jobs", json={"jobs": [{"worker": "send-email", "id": f"j{batch}-{i}"}
                                                            for i in range(600)]}, timeout=30)
            assert done.status_code == 201, done.text
        fast = recent_rate(page, (8, 20.2))  # a bucket of burst 1 at 20/s lets out at most 201 in 10 s
        screenshot(page, "worker-dispatching")

        set_rate("3")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["limits"]["rate"] == 3
        slow = recent_rate(page, (1.5, 3.2))
        assert slow < fast / 2
        served = httpx.get(f"{url}/workers/send-email", timeout=10).json()
        assert served["recentDispatchRate"] <= 3.2 and served["dispatchHistory"]["bucketSeconds"] == 10
        assert max(served["dispatchHistory"]["dispatched"]) >= 80  # the 20/s spans are still on the chart
        heights = page.get_by_test_id("dispatch-chart").locator("rect").evaluate_all(
            "bars => bars.map(bar => Number(bar.getAttribute('height')))")
        assert max(heights) > 2 * heights[-1], heights  # the chart drops where the limit did
        screenshot(page, "worker-slowed")

        page.goto(f"{url}/ui#/")  # the overview's chart and figure show the same
        row = page.locator('tr[data-worker="send-email"]')
        expect(row.get_by_test_id("dispatch-chart").locator("rect").first).to_be_visible()
        recent_rate(page, (1.5, 3.2))
        screenshot(page, "overview-dispatching")


def test_a_workers_keys_show_the_shared_limits_it_names(tmp_path, clean_env, fresh_redis, page):
    """A worker throttled only by [limits.shopify]: its keys table shows each key's tokens in
    the shared limit (not an empty tokens column, as if it were unthrottled), and a key an
    operator paused in the limit as paused until resumed."""
    shopify = "[limits.shopify]\nrate = 0.01\nburst = 2\n"  # 2 jobs a shop, then one per 100 s
    with StandInWorker(200) as worker, serving(tmp_path, clean_env, stand_in_config("sync-orders", worker)
                                               + 'limits = ["shopify"]\n' + shopify,
                                               redis_url=fresh_redis) as (url, _):
        assert httpx.post(f"{url}/limits/shopify/pause", json={"key": "shop-b"}, timeout=10).status_code == 200
        jobs = [{"worker": "sync-orders", "throttleKey": key} for key in ["shop-a"] * 5 + ["shop-b"] * 2]
        assert httpx.post(f"{url}/jobs", json={"jobs": jobs}, timeout=10).status_code == 201
        for _ in range(100):  # shop-a's 2 tokens are taken, its 3 others wait
            if httpx.get(f"{url}/workers/sync-orders", timeout=10).json()["jobs"]["succeeded"] == 2:
                break
            page.wait_for_timeout(100)
        page.goto(f"{url}/ui#/worker/sync-orders")
        keys = page.get_by_test_id("keys")
        shop_a, shop_b = keys.locator('tr[data-key="shop-a"]'), keys.locator('tr[data-key="shop-b"]')
        expect(shop_a.locator("td").first).to_have_text("3")  # waiting
        headers = keys.locator("thead th").all_inner_texts()
        assert "shopify tokens" in headers and "tokens" not in headers, headers
        served = {k["key"]: k for k in httpx.get(f"{url}/workers/sync-orders/keys", timeout=10).json()["keys"]}
        assert served["shop-a"]["limits"]["shopify"]["tokens"] < 1
        expect(shop_a.locator('[data-limit="shopify"]')).to_have_text(re.compile(r"^0(\.\d+)?$"))  # of 2, refilling
        expect(shop_b.locator('[data-limit="shopify"]')).to_contain_text("paused")
        expect(shop_b).to_contain_text("when resumed")
        expect(keys.locator("tbody tr").first).to_have_attribute("data-key", "shop-b")  # the paused first
        expect(page.get_by_test_id("activity")).to_contain_text("throttled by shopify")
        screenshot(page, "worker-shared-limit")
        page.goto(f"{url}/ui#/")  # no rate of its own: the overview names its limit, not ∞
        expect(page.locator('tr[data-worker="sync-orders"] [data-field="rate"]')).to_have_text("shopify")


def test_the_schedules_page_pauses_resumes_and_deletes(tmp_path, clean_env, fresh_redis, page):
    with StandInWorker(200) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        for body in ({"id": "digest", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "args": {"list": "daily"}},
                     {"id": "ping", "cron": "*/2 * * * * *"}):  # every 2 s: it has last runs soon
            done = httpx.post(f"{url}/job", json={"worker": "send-email", **body}, timeout=10)
            assert done.status_code == 201, done.text

        page.goto(f"{url}/ui#/schedules")
        digest = page.locator('tr[data-schedule="send-email:digest"]')
        ping = page.locator('tr[data-schedule="send-email:ping"]')
        expect(digest).to_contain_text("0 9 * * 1-5")
        expect(digest).to_contain_text("Europe/Berlin")
        expect(digest.locator('[data-field="next"] time')).to_have_count(3)
        first_next = digest.locator('[data-field="next"] time').first
        served = httpx.get(f"{url}/schedule/send-email:digest", timeout=10).json()
        assert first_next.get_attribute("datetime") == served["nextRunTimes"][0]
        assert first_next.get_attribute("title").endswith(" UTC")
        page.wait_for_timeout(4500)  # ping fires twice
        page.reload()
        expect(ping.get_by_role("link", name="succeeded").first).to_be_visible()
        screenshot(page, "schedules")

        ping.get_by_role("button", name="Pause").click()
        expect(ping).to_contain_text("paused")
        assert httpx.get(f"{url}/schedule/send-email:ping", timeout=10).json()["paused"] is True
        ping.get_by_role("button", name="Resume").click()
        expect(ping.get_by_role("button", name="Pause")).to_be_visible()
        assert httpx.get(f"{url}/schedule/send-email:ping", timeout=10).json()["paused"] is False

        page.once("dialog", lambda dialog: dialog.accept())
        ping.get_by_role("button", name="Delete").click()
        expect(ping).to_have_count(0)
        listed = httpx.get(f"{url}/schedules", params={"worker": "send-email"}, timeout=10).json()["schedules"]
        assert [s["id"] for s in listed] == ["send-email:digest"]

        page.goto(f"{url}/ui#/worker/send-email")  # the worker's page lists its schedules too
        expect(page.get_by_test_id("schedules").locator("tbody tr")).to_have_count(1)
        expect(page.get_by_test_id("schedules")).to_contain_text("send-email:digest")


def test_selected_dead_jobs_are_retried_or_deleted_and_jobs_are_found_by_key_and_id(tmp_path, clean_env,
                                                                                    fresh_redis, page):
    with StandInWorker(404) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        jobs = [{"worker": "send-email", "id": f"order-{i}", "throttleKey": "shop-a" if i < 3 else "shop-b"}
                for i in range(7)]
        assert httpx.post(f"{url}/jobs", json={"jobs": jobs}, timeout=10).status_code == 201
        page.goto(f"{url}/ui#/jobs/send-email/dead")
        listed = page.get_by_test_id("jobs").locator("tbody tr")
        expect(listed).to_have_count(7)

        page.get_by_label("Throttle key").fill("shop-a")
        page.get_by_label("Throttle key").press("Enter")
        expect(page.get_by_test_id("key-filter")).to_have_text(" of key shop-a")
        expect(listed).to_have_count(3)
        shown_ids = listed.evaluate_all("rows => rows.map(row => row.dataset.job)")
        served = httpx.get(f"{url}/jobs", params={"worker": "send-email", "state": "dead", "throttleKey": "shop-a"},
                           timeout=10).json()
        assert sorted(shown_ids) == sorted(job["id"] for job in served["jobs"]) \
            == [f"send-email:order-{i}" for i in range(3)]
        screenshot(page, "dead-jobs-of-a-key")
        page.get_by_role("link", name="Every key").click()
        expect(listed).to_have_count(7)

        worker.status = 200
        for i in (0, 4):
            page.get_by_label(f"Select send-email:order-{i}").check()
        expect(page.get_by_test_id("selection")).to_contain_text("2 selected")
        screenshot(page, "dead-jobs-selected")
        page.get_by_test_id("retry-selected").click()
        expect(page.get_by_test_id("operation")).to_have_text("Retried 2 dead jobs.")
        expect(page.get_by_test_id("counts").locator('[data-state="succeeded"]')).to_have_text("succeeded 2")
        for i in (0, 4):
            assert httpx.get(f"{url}/job/send-email:order-{i}", timeout=10).json()["state"] == "succeeded"

        expect(listed).to_have_count(5)
        for i in (1, 5):
            page.get_by_label(f"Select send-email:order-{i}").check()
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("delete-selected").click()
        expect(page.get_by_test_id("operation")).to_have_text("Deleted 2 dead jobs.")
        expect(listed).to_have_count(3)
        for i in (1, 5):
            assert httpx.get(f"{url}/job/send-email:order-{i}", timeout=10).status_code == 404

        page.get_by_test_id("select-page").check()  # every job on the page
        expect(page.get_by_test_id("selection")).to_contain_text("3 selected")
        page.get_by_test_id("select-page").uncheck()
        expect(page.get_by_test_id("selection")).to_contain_text("Select jobs")

        page.get_by_label("Job id").fill("order-6")  # the worker's prefix is optional
        page.get_by_label("Job id").press("Enter")
        expect(page.get_by_test_id("state")).to_have_text("dead")
        expect(page.locator("h1")).to_have_text("Job send-email:order-6")
        page.go_back()

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("delete-all").click()
        expect(page.get_by_test_id("operation")).to_have_text("Deleted 3 dead jobs.")
        assert httpx.get(f"{url}/workers/send-email", timeout=10).json()["jobs"]["dead"] == 0


def test_the_overview_lists_the_coordinators_alive_and_the_429s(tmp_path, clean_env, fresh_redis, page):
    with StandInWorker(429) as worker, serving(tmp_path, clean_env, stand_in_config("send-email", worker),
                                               redis_url=fresh_redis) as (url, _):
        page.goto(f"{url}/ui")
        coordinators = page.get_by_test_id("coordinators").locator("tbody tr")
        expect(coordinators).to_have_count(1)
        expect(coordinators).to_contain_text("(this one)")
        enqueue(url, "send-email", 2)  # 2 attempts each, every one answered 429
        expect(page.locator('tr[data-worker="send-email"] [data-field="throttled"]')).to_have_text("4")
        (tmp_path / "second").mkdir()
        with serving(tmp_path / "second", clean_env, stand_in_config("send-email", worker),
                     redis_url=fresh_redis) as (second_url, _):
            listed = httpx.get(f"{second_url}/coordinators", timeout=10).json()["coordinators"]
            assert len(listed) == 2 and [c["answering"] for c in listed].count(True) == 1
            expect(coordinators).to_have_count(2)  # at the page's next refresh (10 s)
            expect(page.get_by_test_id("coordinator-count")).to_have_text("2")
            screenshot(page, "overview-two-coordinators")
        expect(coordinators).to_have_count(1)  # the second said it stops
        assert len(httpx.get(f"{url}/coordinators", timeout=10).json()["coordinators"]) == 1


def test_the_overview_shows_each_workers_state_at_a_glance(tmp_path, clean_env, fresh_redis, page):
    """Three workers, as an operator meets them: one dispatching at its rate, one whose API
    answers 429, one that is broken (404). Its screenshot is the README's (docs/)."""
    with StandInWorker(200) as email, StandInWorker(429) as shopify, StandInWorker(404) as hooks, \
            serving(tmp_path, clean_env, stand_in_config("send-email", email) + "rate = 10\nburst = 1\n"
                    + stand_in_config("shopify-sync", shopify) + stand_in_config("webhooks", hooks),
                    redis_url=fresh_redis) as (url, _):
        page.goto(f"{url}/ui")
        for worker, n in (("send-email", 400), ("shopify-sync", 3), ("webhooks", 12)):
            done = httpx.post(f"{url}/jobs", json={"jobs": [{"worker": worker, "args": {"n": i}} for i in range(n)]},
                              timeout=30)
            assert done.status_code == 201, done.text
        row = {name: page.locator(f'tr[data-worker="{name}"]') for name in ("send-email", "shopify-sync", "webhooks")}
        expect(row["webhooks"].locator('td[data-state="dead"]')).to_have_text("12")
        expect(row["shopify-sync"].locator('[data-field="throttled"]')).to_have_text("6")  # 2 attempts each
        expect(row["shopify-sync"].locator('td[data-state="dead"]')).to_have_text("3")
        page.wait_for_function(
            "() => { const f = document.querySelector('tr[data-worker=\"send-email\"] [data-testid=recent-rate]');"
            " return f && Number(f.dataset.rate) >= 5; }", timeout=90_000)
        assert float(row["send-email"].get_by_test_id("recent-rate").get_attribute("data-rate") or 0) <= 10.1
        expect(row["send-email"].get_by_test_id("dispatch-chart").locator("rect")).to_have_count(3, timeout=90_000)
        expect(row["webhooks"].locator('[data-field="throttled"]')).to_have_text("0")
        page.set_viewport_size({"width": 1280, "height": 420})  # the page's own height, no blank below
        screenshot(page, "overview-three-workers")
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, "overview-phone")


def test_the_readme_shows_a_screenshot_of_the_overview():
    root = Path(__file__).resolve().parent.parent
    shot = root / "docs" / "console-overview.png"
    assert "](docs/console-overview.png)" in (root / "README.md").read_text()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 200_000
