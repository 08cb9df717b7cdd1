"""The console (``GET /ui``) driven in headless Chromium by Playwright, against `redisq serve`
on a real Redis with a stand-in worker: dead jobs show up live, are retried from the page and
succeed; limits are edited in place (the API's 422 beside the field); with ``api_tokens`` the
page shows nothing but the token prompt until a token is given.

Screenshots of each page go to ``tests/screenshots/`` (gitignored) for a person to look at.
Chromium is Debian's (``/usr/bin/chromium``): missing, the tests fail saying how to install it."""

from __future__ import annotations

import json
import os
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
