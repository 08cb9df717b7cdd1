// The redisq console: plain JavaScript, no build step, no framework. One page with hash
// routes (#/, #/worker/NAME, #/jobs/NAME/STATE[?key=K&limit=N], #/job/ID, #/schedules); every
// call goes to the API of the coordinator that served the page, with the operator's token
// (sessionStorage) as a header.
"use strict";

const TOKEN_KEY = "redisq.apiToken";
const STATES = ["scheduled", "running", "retrying", "succeeded", "dead", "cancelled"];
const FINISHED = ["succeeded", "dead", "cancelled"];
const LIMITS = [  // PATCH /workers/{name}'s fields, in the order shown
  ["rate", "jobs/s"], ["burst", "tokens"], ["concurrency", "at once"], ["timeout", "seconds"],
  ["totalRate", "jobs/s, all keys"], ["totalBurst", "tokens, all keys"],
];
const REFRESH_EVERY_MS = 300;  // a worker's rows are fetched again at most this often while its events come
const OVERVIEW_REFRESH_MS = 10000;  // the charts move on (and coordinators come and go) without events too
const RETRYABLE = ["dead", "cancelled"];  // POST /jobs/retry's states; /jobs/delete takes FINISHED
const PAGE_SIZE = 50;  // jobs per page; #/jobs/NAME/STATE?limit=N for another
// The API's root: the page is served at <root>ui, perhaps under a proxy's prefix.
const ROOT = location.pathname.replace(/ui\/?$/, "");

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

class Unauthorized extends Error {}

// -- the API -------------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(ROOT + path, init);
  if (response.status === 401) {
    askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
    throw new Unauthorized();
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  if (!sessionStorage.getItem(TOKEN_KEY)) $("#open-warning").hidden = false;
  return { status: response.status, data };
}

const get = async (path) => (await api("GET", path)).data;
const q = encodeURIComponent;

// -- the DOM -------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const at = new Date(iso);
  return h("time", { datetime: iso, title: `${at.toISOString().replace("T", " ").replace(/\.\d+Z$/, "")} UTC` },
    at.toLocaleString());
}

// A table; on a phone (console.css) each row is a card whose cells are labelled by their
// column's header (data-label), so that nothing hides off the screen's edge.
function table(headers, rows, attrs) {
  const labels = headers.map(([label]) => (typeof label === "string" ? label : ""));
  const body = h("tbody", {}, rows);
  for (const row of body.rows) {
    [...row.cells].forEach((cell, i) => { if (labels[i]) cell.dataset.label = labels[i]; });
  }
  return h("div", { class: "scroll" }, h("table", { ...attrs, class: "cards" },
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls, scope: "col" }, label)))),
    body));
}

function show(...nodes) {
  const main = $("#main");
  main.replaceChildren(...nodes);
  $("h1", main)?.setAttribute("tabindex", "-1");  // a new page moves the focus to its title (route)
}

function askForToken(message) {
  stopEvents();
  $("#main").replaceChildren();
  $("#nav").hidden = true;
  $("#open-warning").hidden = true;
  $("#token-form").hidden = false;
  $("#token-error").textContent = message || "";
  $("#token").focus();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  $("#token-form").hidden = true;
  start();
});

function failed(error) {
  if (error instanceof Unauthorized) return;
  show(h("p", { class: "error", role: "alert" }, error.message));
}

// -- health --------------------------------------------------------------------------------

async function refreshHealth() {
  const badge = $("#health");
  try {
    const response = await fetch(ROOT + "health", { headers: authHeaders() });
    const body = await response.json();
    badge.textContent = `redis ${body.redis}${body.store ? ` (${body.store})` : ""}`;
    badge.className = `badge ${body.redis === "up" ? "up" : "down"}`;
    badge.title = body.error || "";
  } catch (error) {
    badge.textContent = "coordinator unreachable";
    badge.className = "badge down";
  }
}

// -- live events: GET /events read with fetch (an EventSource cannot send the token) -------

let events = null;  // {controller}
const pendingWorkers = new Set();
let refreshTimer = null;
const onWorkerChanged = new Map();  // a page's handlers: name -> function(worker name)

function startEvents() {
  if (events) return;
  const controller = new AbortController();
  events = { controller };
  followEvents(controller.signal);
}

function stopEvents() {
  if (events) events.controller.abort();
  events = null;
  setLive(false);
}

function setLive(live) {
  const badge = $("#live");
  badge.textContent = live ? "live" : "offline";
  badge.className = `badge ${live ? "up" : "down"}`;
}

async function followEvents(signal) {
  let lastEventId = null;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(ROOT + "events", { headers, signal });
      if (response.status === 401) { askForToken("That token was refused."); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive(true);
      refreshHealth();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (event.id) lastEventId = event.id;
          if (event.type === "job" && event.data) jobEvent(JSON.parse(event.data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    setLive(false);
    refreshHealth();
    await new Promise((resolve) => setTimeout(resolve, 1000));  // the stream's own `retry: 1000`
  }
}

function parseEvent(block) {
  const event = { type: "message", data: "", id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
  }
  event.data = data.join("\n");
  return event;
}

function jobEvent(event) {  // a worker's rows are fetched again once per REFRESH_EVERY_MS while events come
  pendingWorkers.add(event.worker);
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    const names = [...pendingWorkers];
    pendingWorkers.clear();
    for (const name of names) for (const handler of onWorkerChanged.values()) handler(name);
  }, REFRESH_EVERY_MS);
}

// -- charts and figures --------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// Jobs dispatched per span of the last minutes (GET /workers' dispatchHistory) as bars, the
// newest on the right; its title and label say the peak and the latest rate.
function dispatchChart(worker, width = 150, height = 28) {
  const { bucketSeconds, dispatched } = worker.dispatchHistory;
  const peak = Math.max(1, ...dispatched);
  const step = width / dispatched.length;
  const minutes = Math.round((bucketSeconds * dispatched.length) / 60);
  const label = `Dispatched per ${bucketSeconds} s over the last ${minutes} minutes: peak `
    + `${num(peak / bucketSeconds)}/s, latest ${num(worker.recentDispatchRate)}/s`;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                             "aria-label": label, "data-testid": "dispatch-chart" },
    svg("title", {}, label),
    svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
  dispatched.forEach((count, i) => {
    if (!count) return;
    const barHeight = Math.max(1, (count / peak) * (height - 2));
    chart.append(svg("rect", { x: (i * step + 0.5).toFixed(1), y: (height - 1 - barHeight).toFixed(1),
      width: Math.max(1, step - 1).toFixed(1), height: barHeight.toFixed(1) },
      svg("title", {}, `${num(count, 0)} in ${bucketSeconds} s, ${Math.round((dispatched.length - i) * bucketSeconds)} s ago`)));
  });
  return chart;
}

function rateFigure(worker) {
  return h("span", { "data-testid": "recent-rate", "data-rate": worker.recentDispatchRate,
                     title: `${num(worker.dispatchRate)}/s over the last minute` },
    `${num(worker.recentDispatchRate)}/s`);
}

function duration(seconds) {
  if (!seconds) return "—";
  if (seconds < 90) return `${num(seconds, 1)} s`;
  if (seconds < 5400) return `${num(seconds / 60, 1)} min`;
  return `${num(seconds / 3600, 1)} h`;
}

// -- overview ------------------------------------------------------------------------------

function workerRow(worker) {
  const limits = worker.limits;
  const jobs = worker.jobs;
  return h("tr", { "data-worker": worker.name },
    h("th", { scope: "row" }, h("a", { href: `#/worker/${q(worker.name)}` }, worker.name),
      limits.paused ? h("span", { class: "badge down" }, " paused") : null),
    h("td", { class: "num", "data-field": "rate" }, limits.rate !== null ? num(limits.rate)
      : worker.sharedLimits.length  // no rate of its own: the shared limits it obeys, not ∞
        ? h("span", { title: "its shared limits" }, worker.sharedLimits.map((limit) => limit.name).join(", "))
        : "∞"),
    h("td", { class: "num" }, num(limits.burst)),
    h("td", { class: "num" }, num(limits.concurrency)),
    h("td", { class: "num" }, num(limits.timeout)),
    h("td", { class: "num" }, num(worker.tokens)),
    STATES.map((state) => h("td", { class: `num ${state === "dead" && jobs.dead ? "dead" : ""}`, "data-state": state },
      h("a", { href: `#/jobs/${q(worker.name)}/${state}` }, num(jobs[state], 0)))),
    h("td", { class: "chart-cell" }, dispatchChart(worker)),
    h("td", { class: "num", "data-field": "dispatchRate" }, rateFigure(worker)),
    h("td", { class: `num ${worker.throttled ? "warn" : ""}`, "data-field": "throttled",
              title: "Answers that pushed back: a 429, a 503 with Retry-After, a receipt's retryAfter" },
      num(worker.throttled, 0)),
  );
}

const WORKER_COLUMNS = [["worker"], ["rate", "num"], ["burst", "num"], ["concurrency", "num"], ["timeout s", "num"],
  ["tokens", "num"], ...STATES.map((state) => [state, "num"]), ["dispatched, last 5 min"], ["now", "num"],
  ["429s", "num"]];

function coordinatorRows(coordinators) {
  return coordinators.map((c) => h("tr", { "data-coordinator": c.id },
    h("th", { scope: "row" }, c.id, c.answering ? h("span", { class: "muted" }, " (this one)") : null),
    h("td", {}, c.version), h("td", {}, time(c.startedAt)), h("td", {}, time(c.aliveUntil))));
}

async function overview() {
  const [{ workers }, { coordinators }] = await Promise.all([get("workers"), get("coordinators")]);
  const coordinatorTable = table([["coordinator"], ["version"], ["started"], ["alive until"]],
    coordinatorRows(coordinators), { "data-testid": "coordinators" });
  show(h("h1", {}, "Workers"),
    workers.length ? table(WORKER_COLUMNS, workers.map(workerRow), { "data-testid": "workers" })
      : h("p", { class: "muted" }, "No worker is configured."),
    h("h2", {}, "Coordinators alive ", h("span", { class: "muted", "data-testid": "coordinator-count" },
      num(coordinators.length, 0))),
    coordinatorTable,
    h("p", { class: "muted" }, "Each coordinator says it is alive every few seconds; one that stops saying so "
      + "leaves this list within 15 s."));
  const redraw = async (name) => {
    const row = $(`tr[data-worker="${CSS.escape(name)}"]`);
    if (!row) return;
    try { row.replaceWith(labelled(row, workerRow(await get(`workers/${q(name)}`)))); } catch (error) { /* the next event */ }
  };
  onWorkerChanged.set("overview", redraw);
  every(OVERVIEW_REFRESH_MS, async () => {  // one call for every row: the charts slide on while no job moves
    const [fresh, alive] = await Promise.all([get("workers"), get("coordinators")]);
    for (const worker of fresh.workers) {
      const row = $(`tr[data-worker="${CSS.escape(worker.name)}"]`);
      row?.replaceWith(labelled(row, workerRow(worker)));
    }
    const rows = coordinatorRows(alive.coordinators);
    const first = coordinatorTable.querySelector("tbody tr");
    if (first) rows.forEach((row) => labelled(first, row));
    coordinatorTable.querySelector("tbody").replaceChildren(...rows);
    $('[data-testid="coordinator-count"]').textContent = num(alive.coordinators.length, 0);
  });
}

// A new row in place of `old`, its cells labelled as old's were (table).
function labelled(old, row) {
  [...row.cells].forEach((cell, i) => { if (old.cells[i]?.dataset.label) cell.dataset.label = old.cells[i].dataset.label; });
  return row;
}

// A page's timer, stopped when the page changes (route clears them).
const pageTimers = [];
function every(ms, tick) {
  pageTimers.push(setInterval(() => { tick().catch(() => { /* the next tick */ }); }, ms));
}

// -- a worker: its limits, edited in place, pause and resume, its keys and schedules -------

async function workerPage(name) {
  const [worker, keys, { schedules }] = await Promise.all([
    get(`workers/${q(name)}`), get(`workers/${q(name)}/keys?limit=20`), get(`schedules?worker=${q(name)}`)]);
  const form = h("form", { class: "limits", "data-testid": "limits", novalidate: true });
  for (const [field, unit] of LIMITS) {
    const value = worker.limits[field];
    form.append(
      h("label", { for: `limit-${field}` }, `${field} `, h("span", { class: "muted" }, `(${unit})`)),
      h("input", { id: `limit-${field}`, name: field, inputmode: "decimal", value: value === null ? "" : value,
                   placeholder: "none" }),
      h("span", { class: "error", id: `error-${field}`, "data-error-for": field, role: "alert" }));
  }
  const status = h("p", { class: "muted", role: "status", "data-testid": "limits-status" });
  form.append(h("span"), h("button", { type: "submit" }, "Save limits"), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".error").forEach((node) => { node.textContent = ""; });
    const patch = {};
    for (const [field] of LIMITS) {
      const input = form.elements[field];
      const before = worker.limits[field];
      const text = input.value.trim();
      const value = text === "" ? null : (Number.isNaN(Number(text)) ? text : Number(text));
      if (value !== before) patch[field] = value;
    }
    if (!Object.keys(patch).length) { status.textContent = "Nothing changed."; return; }
    try {
      const { data } = await api("PATCH", `workers/${q(name)}`, patch);
      Object.assign(worker.limits, data.limits);
      status.textContent = "Saved.";
    } catch (error) {
      if (error instanceof Unauthorized) return;
      const beside = error.field && form.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`);
      (beside || status).textContent = error.message;
      status.textContent = beside ? "Not saved." : error.message;
    }
  });
  const paused = worker.limits.paused;
  const toggle = h("button", {
    type: "button", "data-testid": "pause",
    onclick: async () => {
      try { await api("POST", `workers/${q(name)}/${paused ? "resume" : "pause"}`); route(); } catch (e) { failed(e); }
    },
  }, paused ? "Resume" : "Pause");
  const activity = h("div", { class: "activity", "data-testid": "activity" });
  const drawActivity = (state) => activity.replaceChildren(
    dispatchChart(state, 300, 60),
    h("p", {}, "Now ", rateFigure(state), ` · ${num(state.dispatchedLastMinute, 0)} dispatched in the last minute`
      + (state.tokens === null && state.sharedLimits.length
        ? ` · throttled by ${state.sharedLimits.map((limit) => limit.name).join(", ")} (shared limits)`
        : ` · tokens left ${num(state.tokens)}`)
      + ` · ${num(state.throttled, 0)} answers pushed back (429)`
      + (state.backPressureFor ? ` · paused by back-pressure for ${duration(state.backPressureFor)}` : "")));
  drawActivity(worker);
  const counts = h("div", { class: "tabs", "data-testid": "counts" });
  const drawCounts = (state) => counts.replaceChildren(...STATES.map((s) => h("a", {
    href: `#/jobs/${q(name)}/${s}`, "data-state": s }, `${s} ${num(state.jobs[s], 0)}`)));
  drawCounts(worker);
  const keyTable = h("div", { "data-testid": "keys" });
  const drawKeys = (found) => {
    // A column per shared limit the worker names; its own tokens only when it has a rate of its own.
    const shared = Object.keys(found.keys[0]?.limits || {});
    const own = !shared.length || found.keys.some((k) => k.tokens !== null);
    keyTable.replaceChildren(found.keys.length
      ? table([["throttle key"], ["waiting", "num"], ["running", "num"], own ? ["tokens", "num"] : null,
        ...shared.map((limit) => [`${limit} tokens`, "num"]), ["paused for", "num"], ["next leaves"]].filter(Boolean),
      found.keys.map((k) => h("tr", { "data-key": k.key },
        h("th", { scope: "row" }, h("a", { href: `#/jobs/${q(name)}/scheduled?key=${q(k.key)}` },
          k.key || h("span", { class: "muted" }, "(no key)"))),
        h("td", { class: "num" }, num(k.waiting, 0)), h("td", { class: "num" }, num(k.running, 0)),
        own ? h("td", { class: "num" }, num(k.tokens)) : null,
        shared.map((limit) => sharedKeyCell(limit, k.limits[limit])),
        h("td", { class: `num ${k.pausedFor ? "warn" : ""}` }, duration(k.pausedFor)),
        h("td", {}, k.readyAt === null ? h("span", { class: "warn" }, "when resumed") : time(k.readyAt)))))
      : h("p", { class: "muted" }, "No job is waiting."),
    h("p", { class: "muted" }, `${num(found.keysWaiting, 0)} key${found.keysWaiting === 1 ? "" : "s"} with jobs `
      + "waiting; those paused first (in a shared limit, then by back-pressure), then the busiest."));
  };
  drawKeys(keys);
  show(h("h1", {}, `Worker ${name}`, paused ? h("span", { class: "badge down" }, " paused") : null),
    h("p", { class: "muted" }, worker.url),
    h("div", { class: "bar" }, toggle, h("span", {}, paused ? "Its jobs wait until it is resumed." : "Dispatching.")),
    h("h2", {}, "Dispatch"), activity,
    h("h2", {}, "Jobs"), counts,
    h("h2", {}, "Limits"), form,
    h("h2", {}, "Throttle keys"), keyTable,
    h("h2", {}, "Schedules"), schedules.length ? scheduleTable(schedules, () => route())
      : h("p", { class: "muted" }, "No schedule."));
  const refresh = async () => {
    const [state, found] = await Promise.all([get(`workers/${q(name)}`), get(`workers/${q(name)}/keys?limit=20`)]);
    drawActivity(state); drawCounts(state); drawKeys(found);
  };
  onWorkerChanged.set("worker", (changed) => { if (changed === name) refresh().catch(() => {}); });
  every(OVERVIEW_REFRESH_MS, refresh);
}

// A throttle key's bucket in one shared limit: its tokens, and whether it is paused there.
function sharedKeyCell(limit, bucket) {
  if (!bucket) return h("td", { class: "num", "data-limit": limit }, "—");
  const held = bucket.paused || bucket.pausedFor;
  return h("td", { class: `num ${held ? "warn" : ""}`, "data-limit": limit }, num(bucket.tokens),
    bucket.paused ? [" ", h("span", { class: "badge down", title: `paused in ${limit} by an operator` }, "paused")]
      : null,
    bucket.pausedFor ? h("span", { title: "back-pressure a worker of the limit met" },
      ` · paused for ${duration(bucket.pausedFor)}`) : null);
}

// -- schedules -----------------------------------------------------------------------------

function scheduleTable(schedules, after) {
  const act = (path, question) => async () => {
    if (question && !window.confirm(question)) return;
    try { await api(path[0], path[1]); after(); } catch (error) { failed(error); }
  };
  const rows = schedules.map((s) => h("tr", { "data-schedule": s.id },
    h("th", { scope: "row" }, s.id, s.paused ? h("span", { class: "badge down" }, " paused") : null),
    h("td", {}, h("code", {}, s.cron)), h("td", {}, s.timezone),
    h("td", { "data-field": "next" }, s.paused ? h("span", { class: "muted" }, "paused")
      : h("ul", { class: "times" }, s.nextRunTimes.slice(0, 3).map((at) => h("li", {}, time(at))))),
    h("td", {}, time(s.lastFireAt)),
    h("td", {}, s.lastJobs.length ? h("ul", { class: "times" }, s.lastJobs.slice(0, 3).map((job) => h("li", {},
      h("a", { href: `#/job/${q(job.id)}` }, job.state), " ", time(job.runAt)))) : h("span", { class: "muted" }, "—")),
    h("td", { class: "actions" },
      s.paused
        ? h("button", { type: "button", onclick: act(["POST", `schedule/${q(s.id)}/resume`]) }, "Resume")
        : h("button", { type: "button", onclick: act(["POST", `schedule/${q(s.id)}/pause`]) }, "Pause"),
      h("button", { type: "button", class: "danger",
        onclick: act(["DELETE", `schedule/${q(s.id)}`], `Delete schedule ${s.id}? Its jobs already made stay.`) },
      "Delete"))));
  return table([["schedule"], ["cron"], ["timezone"], ["next runs"], ["last fired"], ["last runs"], [""]], rows,
    { "data-testid": "schedules" });
}

async function schedulesPage() {
  const { schedules } = await get("schedules");
  show(h("h1", {}, "Schedules"),
    schedules.length ? scheduleTable(schedules, () => schedulesPage().catch(failed))
      : h("p", { class: "muted" }, "No schedule. Save one with POST /job and a cron."),
    h("p", { class: "muted" }, "Times in your browser's zone; hover for UTC. A paused schedule fires again from "
      + "its next fire time after it is resumed."));
}

// -- jobs of a worker in a state, a page at a time -----------------------------------------

let pickedOnJobsPage = () => 0;  // how many jobs are picked on the jobs page shown now

// refresh: a redraw for live events, which gives way when jobs were picked while it read
// (it would draw the page again without the picks).
async function jobsPage(name, state, cursors, pageSize = PAGE_SIZE, throttleKey = "", refresh = false) {
  const cursor = cursors[cursors.length - 1];
  const params = `worker=${q(name)}&state=${q(state)}&limit=${pageSize}`
    + `${throttleKey ? `&throttleKey=${q(throttleKey)}` : ""}${cursor ? `&cursor=${q(cursor)}` : ""}`;
  const page = await get(`jobs?${params}`);
  if (refresh && pickedOnJobsPage() > 0) return;
  const finished = FINISHED.includes(state);
  const selectable = finished;  // finished jobs can be deleted; dead and cancelled ones retried too
  const again = (newCursors = cursors, refresh = false) =>
    jobsPage(name, state, newCursors, pageSize, throttleKey, refresh).catch(failed);
  const selected = new Set();
  pickedOnJobsPage = () => selected.size;
  const selectionBar = h("div", { class: "bar", "data-testid": "selection" });
  const boxes = [];
  const drawSelection = () => {
    const n = selected.size;
    selectionBar.replaceChildren(
      h("span", { class: "muted" }, n ? `${num(n, 0)} selected` : "Select jobs to act on them"),
      RETRYABLE.includes(state) ? h("button", { type: "button", "data-testid": "retry-selected", disabled: !n,
        onclick: () => bulk("retry", { worker: name, state, ids: [...selected] }, progress, again) },
      `Retry selected`) : null,
      h("button", { type: "button", class: "danger", "data-testid": "delete-selected", disabled: !n,
        onclick: () => {
          if (window.confirm(`Delete ${n} ${state} job${n === 1 ? "" : "s"}?`)) {
            bulk("delete", { worker: name, state, ids: [...selected] }, progress, again);
          }
        } }, "Delete selected"));
    if (selectAll) {
      selectAll.checked = n > 0 && n === boxes.length;
      selectAll.indeterminate = n > 0 && n < boxes.length;
    }
  };
  const selectAll = selectable && page.jobs.length ? h("input", { type: "checkbox", "aria-label": "Select every job on this page",
    "data-testid": "select-page", onchange: (event) => {
      for (const box of boxes) {
        box.checked = event.target.checked;
        if (box.checked) selected.add(box.value); else selected.delete(box.value);
      }
      drawSelection();
    } }) : null;
  const rows = page.jobs.map((job) => {
    let box = null;
    if (selectable) {
      box = h("input", { type: "checkbox", value: job.id, "aria-label": `Select ${job.id}`, onchange: (event) => {
        if (event.target.checked) selected.add(job.id); else selected.delete(job.id);
        drawSelection();
      } });
      boxes.push(box);
    }
    return h("tr", { "data-job": job.id },
      selectable ? h("td", {}, box) : null,
      h("td", {}, h("a", { href: `#/job/${q(job.id)}` }, job.id)),
      h("td", {}, finished ? time(job.finishedAt) : time(job.runAt)),
      h("td", { class: "num" }, `${num(job.attempts, 0)}/${num(job.maxAttempts, 0)}`),
      h("td", {}, job.throttleKey ? h("a", { href: jobsHash(name, state, job.throttleKey) }, job.throttleKey) : ""),
      h("td", { class: "error" }, job.lastError || ""),
      h("td", { class: "actions" }, jobActions(job, () => again())));
  });
  const progress = h("p", { role: "status", "data-testid": "operation" });
  if (lastOperation.page === `${name}/${state}/${throttleKey}`) progress.textContent = lastOperation.text;  // kept over redraws
  const bar = h("div", { class: "bar" });
  const total = page.counts[state];
  if (RETRYABLE.includes(state) && !throttleKey) {
    bar.append(h("button", { type: "button", "data-testid": "retry-all", disabled: !total,
      onclick: () => bulk("retry", { worker: name, state, all: true }, progress, () => again([null])) },
    `Retry all ${num(total, 0)} ${state}`));
  }
  if (finished && !throttleKey) {
    bar.append(h("button", { type: "button", class: "danger", "data-testid": "delete-all", disabled: !total,
      onclick: () => {
        if (window.confirm(`Delete all ${num(total, 0)} ${state} jobs of ${name}?`)) {
          bulk("delete", { worker: name, state, all: true }, progress, () => again([null]));
        }
      } }, `Delete all ${num(total, 0)} ${state}`));
  }
  if (cursors.length > 1) bar.append(h("button", { type: "button", onclick: () => again([null]) }, "First page"));
  if (page.next) {
    bar.append(h("button", { type: "button", "data-testid": "next-page", onclick: () => again([...cursors, page.next]) },
      "Next page"));
  }
  const filters = h("form", { class: "bar filters", "data-testid": "filters", onsubmit: (event) => {
    event.preventDefault();
    location.hash = jobsHash(name, state, event.target.elements.key.value.trim(), pageSize);
  } },
  h("label", { for: "filter-key" }, "Throttle key"),
  h("input", { id: "filter-key", name: "key", value: throttleKey, placeholder: "any", autocomplete: "off" }),
  h("button", { type: "submit" }, "Filter"),
  throttleKey ? h("a", { href: jobsHash(name, state, "", pageSize) }, "Every key") : null);
  const jump = h("form", { class: "bar filters", "data-testid": "jump", onsubmit: (event) => {
    event.preventDefault();
    const id = event.target.elements.id.value.trim();
    if (id) location.hash = `#/job/${q(id.includes(":") ? id : `${name}:${id}`)}`;
  } },
  h("label", { for: "jump-id" }, "Job id"),
  h("input", { id: "jump-id", name: "id", placeholder: `${name}:…`, autocomplete: "off" }),
  h("button", { type: "submit" }, "Open"));
  show(h("h1", {}, h("a", { href: `#/worker/${q(name)}` }, name), ` · ${state} jobs`,
    throttleKey ? h("span", { "data-testid": "key-filter" }, ` of key ${throttleKey}`) : null),
    h("div", { class: "tabs", "data-testid": "counts" }, STATES.map((s) => h("a", {
      href: jobsHash(name, s, throttleKey, pageSize), class: s === state ? "current" : null, "data-state": s,
      "aria-current": s === state ? "page" : null }, `${s} ${num(page.counts[s], 0)}`))),
    h("div", { class: "bar" }, filters, jump),
    bar, selectable && page.jobs.length ? selectionBar : null, progress,
    page.jobs.length
      ? table([...(selectable ? [[selectAll]] : []), ["id"], [finished ? "finished" : "runs at"], ["attempts", "num"],
        ["key"], ["last error"], [""]], rows, { "data-testid": "jobs" })
      : h("p", { class: "muted" }, `No ${state} job${throttleKey ? ` of key ${throttleKey}` : ""}`
        + `${cursor ? " on this page" : ""}.`));
  drawSelection();
  onWorkerChanged.set("jobs", (changed) => {  // not while jobs are picked or a bulk operation runs
    if (changed === name && !operating && !selected.size) again(cursors, true);
  });
}

function jobsHash(name, state, throttleKey, pageSize = PAGE_SIZE) {
  const query = new URLSearchParams();
  if (throttleKey) query.set("key", throttleKey);
  if (pageSize !== PAGE_SIZE) query.set("limit", pageSize);
  const text = query.toString();
  return `#/jobs/${q(name)}/${q(state)}${text ? `?${text}` : ""}`;
}

function jobActions(job, after) {
  const act = (method, path, body) => async () => {
    try { await api(method, path, body); after(); } catch (error) { failed(error); }
  };
  const buttons = [];
  if (RETRYABLE.includes(job.state)) {
    buttons.push(h("button", { type: "button", onclick: act("POST", `job/${q(job.id)}/retry`) }, "Retry"));
  }
  if (FINISHED.includes(job.state)) {
    buttons.push(h("button", { type: "button", class: "danger",
      onclick: act("POST", "jobs/delete", { worker: job.worker, state: job.state, ids: [job.id] }) }, "Delete"));
  } else {
    buttons.push(h("button", { type: "button", class: "danger", onclick: act("DELETE", `job/${q(job.id)}`) }, "Cancel"));
  }
  return buttons;
}

let operating = false;  // while a bulk operation runs, live events do not redraw the jobs page under it
let lastOperation = { page: "", text: "" };  // what the last bulk operation of a jobs page said

// POST /jobs/retry or /jobs/delete, followed to its end (GET /operations/{id}) with its
// progress shown; `after` redraws the page.
async function bulk(kind, body, progress, after) {
  const done = kind === "retry" ? "retried" : "deleted";
  const Done = kind === "retry" ? "Retried" : "Deleted";
  const which = body.all ? `every ${body.state} job` : `${num(body.ids.length, 0)} selected`;
  progress.textContent = `${kind === "retry" ? "Retrying" : "Deleting"} ${which}…`;
  operating = true;
  try {
    let { status, data } = await api("POST", `jobs/${kind}`, body);
    while (status === 202 || !data.done) {
      progress.textContent = `${Done} ${num(data[done], 0)} of ${num(data.total, 0)}…`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      ({ status, data } = await api("GET", `operations/${q(data.operation)}`));
    }
    const skipped = (data.skipped || []).length;
    progress.textContent = data.error ? `Stopped after ${num(data[done], 0)}: ${data.error}`
      : `${Done} ${num(data[done], 0)} ${body.state} job${data[done] === 1 ? "" : "s"}.`
        + (skipped ? ` ${num(skipped, 0)} left as they were (no longer ${body.state}).` : "");
    lastOperation = { page: `${body.worker}/${body.state}/`, text: progress.textContent };
    await after();
  } catch (error) {
    if (!(error instanceof Unauthorized)) progress.textContent = error.message;
  } finally {
    operating = false;  // the page follows live events again: the retried jobs' ends show as they come
  }
}

// -- one job -------------------------------------------------------------------------------

async function jobPage(id) {
  const job = await get(`job/${q(id)}`);
  const field = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const history = (job.history || []).map((attempt) => h("tr", {},
    h("td", { class: "num" }, num(attempt.attempt, 0)),
    h("td", {}, time(attempt.startedAt)),
    h("td", { class: "num" }, attempt.durationMs === null ? "—" : `${num(attempt.durationMs, 0)} ms`),
    h("td", {}, attempt.outcome),
    h("td", { class: "num" }, attempt.status ?? "—"),
    h("td", { class: "error" }, attempt.error || ""),
    h("td", { class: "muted" }, attempt.coordinator || "")));
  show(h("h1", {}, `Job ${job.id}`),
    h("div", { class: "bar" }, jobActions(job, () => jobPage(id).catch(failed))),
    h("dl", { class: "fields", "data-testid": "job" },
      field("worker", h("a", { href: `#/worker/${q(job.worker)}` }, job.worker)),
      field("state", h("span", { class: job.state === "dead" ? "dead" : "", "data-testid": "state" }, job.state)),
      field("attempts", `${num(job.attempts, 0)} of ${num(job.maxAttempts, 0)}`),
      field("runs at", time(job.runAt)), field("created", time(job.createdAt)),
      field("finished", time(job.finishedAt)), field("throttle key", job.throttleKey || "—"),
      field("cost", num(job.cost)), field("last error", job.lastError || "—")),
    h("h2", {}, "Args"), h("pre", { "data-testid": "args" }, JSON.stringify(job.args, null, 2)),
    h("h2", {}, "Result"), h("pre", { "data-testid": "result" }, JSON.stringify(job.result, null, 2)),
    h("h2", {}, "Attempts"),
    history.length ? table([["#", "num"], ["started"], ["took", "num"], ["outcome"], ["status", "num"], ["error"],
      ["coordinator"]], history, { "data-testid": "history" }) : h("p", { class: "muted" }, "No attempt yet."));
  onWorkerChanged.set("job", (changed) => { if (changed === job.worker) jobPage(id).catch(failed); });
}

// -- routes --------------------------------------------------------------------------------

function route() {
  onWorkerChanged.clear();
  while (pageTimers.length) clearInterval(pageTimers.pop());
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const limit = Number(params.get("limit")) || PAGE_SIZE;
  let page;
  if (parts[0] === "worker" && parts[1]) page = workerPage(parts[1]);
  else if (parts[0] === "jobs" && parts[1]) page = jobsPage(parts[1], parts[2] || "dead", [null], limit, params.get("key") || "");
  else if (parts[0] === "job" && parts[1]) page = jobPage(parts.slice(1).join("/"));
  else if (parts[0] === "schedules") page = schedulesPage();
  else page = overview();
  for (const link of document.querySelectorAll("#nav a")) {
    link.setAttribute("aria-current", link.dataset.page === (parts[0] || "overview") ? "page" : "false");
  }
  page.then(() => $("#main h1")?.focus({ preventScroll: true })).catch(failed);
}

async function start() {
  try {
    await get("workers");  // 401 here shows the token prompt and nothing else
  } catch (error) {
    if (!(error instanceof Unauthorized)) failed(error);
    return;
  }
  $("#token-form").hidden = true;
  $("#nav").hidden = false;
  refreshHealth();
  startEvents();
  route();
}

window.addEventListener("hashchange", () => { if ($("#token-form").hidden) route(); });
setInterval(refreshHealth, 15000);
start();
