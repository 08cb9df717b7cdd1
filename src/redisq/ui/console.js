// The redisq console: plain JavaScript, no build step, no framework. One page with hash
// routes (#/, #/worker/NAME, #/jobs/NAME/STATE, #/job/ID); every call goes to the API of the
// coordinator that served the page, with the operator's token (sessionStorage) as a header.
"use strict";

const TOKEN_KEY = "redisq.apiToken";
const STATES = ["scheduled", "running", "retrying", "succeeded", "dead", "cancelled"];
const FINISHED = ["succeeded", "dead", "cancelled"];
const LIMITS = [  // PATCH /workers/{name}'s fields, in the order shown
  ["rate", "jobs/s"], ["burst", "tokens"], ["concurrency", "at once"], ["timeout", "seconds"],
  ["totalRate", "jobs/s, all keys"], ["totalBurst", "tokens, all keys"],
];
const REFRESH_DEBOUNCE_MS = 300;
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

function table(headers, rows, attrs) {
  return h("div", { class: "scroll" }, h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls, scope: "col" }, label)))),
    h("tbody", {}, rows)));
}

function show(...nodes) {
  const main = $("#main");
  main.replaceChildren(...nodes);
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

function jobEvent(event) {  // a worker's rows are fetched again once its burst of events is over
  pendingWorkers.add(event.worker);
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    const names = [...pendingWorkers];
    pendingWorkers.clear();
    for (const name of names) for (const handler of onWorkerChanged.values()) handler(name);
  }, REFRESH_DEBOUNCE_MS);
}

// -- overview ------------------------------------------------------------------------------

function workerRow(worker) {
  const limits = worker.limits;
  const jobs = worker.jobs;
  return h("tr", { "data-worker": worker.name },
    h("td", {}, h("a", { href: `#/worker/${q(worker.name)}` }, worker.name),
      limits.paused ? h("span", { class: "badge down" }, " paused") : null),
    h("td", { class: "num" }, limits.rate === null ? "∞" : num(limits.rate)),
    h("td", { class: "num" }, num(limits.burst)),
    h("td", { class: "num" }, num(limits.concurrency)),
    h("td", { class: "num" }, num(limits.timeout)),
    h("td", { class: "num" }, num(worker.tokens)),
    STATES.map((state) => h("td", { class: `num ${state === "dead" && jobs.dead ? "dead" : ""}`, "data-state": state },
      h("a", { href: `#/jobs/${q(worker.name)}/${state}` }, num(jobs[state], 0)))),
    h("td", { class: "num", "data-field": "dispatchRate" }, `${num(worker.dispatchRate)}/s`),
  );
}

const WORKER_COLUMNS = [["worker"], ["rate", "num"], ["burst", "num"], ["concurrency", "num"], ["timeout s", "num"],
  ["tokens", "num"], ...STATES.map((state) => [state, "num"]), ["dispatch", "num"]];

async function overview() {
  const { workers } = await get("workers");
  const body = workers.map(workerRow);
  show(h("h1", {}, "Workers"),
    workers.length ? table(WORKER_COLUMNS, body, { "data-testid": "workers" })
      : h("p", { class: "muted" }, "No worker is configured."));
  onWorkerChanged.set("overview", async (name) => {
    const row = $(`tr[data-worker="${CSS.escape(name)}"]`);
    if (!row) return;
    try { row.replaceWith(workerRow(await get(`workers/${q(name)}`))); } catch (error) { /* the next event */ }
  });
}

// -- a worker: its limits, edited in place, pause and resume --------------------------------

async function workerPage(name) {
  const worker = await get(`workers/${q(name)}`);
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
  show(h("h1", {}, `Worker ${name}`, paused ? h("span", { class: "badge down" }, " paused") : null),
    h("p", { class: "muted" }, worker.url),
    h("div", { class: "bar" }, toggle, h("span", {}, paused ? "Its jobs wait until it is resumed." : "Dispatching.")),
    h("h2", {}, "Limits"), form,
    h("h2", {}, "Jobs"),
    h("div", { class: "tabs" }, STATES.map((state) => h("a", { href: `#/jobs/${q(name)}/${state}` },
      `${state} ${num(worker.jobs[state], 0)}`))),
    h("p", { class: "muted" }, `Dispatched ${num(worker.dispatchedLastMinute, 0)} in the last minute `
      + `(${num(worker.dispatchRate)}/s); tokens left ${num(worker.tokens)}.`));
}

// -- jobs of a worker in a state, a page at a time -----------------------------------------

async function jobsPage(name, state, cursors, pageSize = PAGE_SIZE) {
  const cursor = cursors[cursors.length - 1];
  const params = `worker=${q(name)}&state=${q(state)}&limit=${pageSize}${cursor ? `&cursor=${q(cursor)}` : ""}`;
  const page = await get(`jobs?${params}`);
  const finished = FINISHED.includes(state);
  const rows = page.jobs.map((job) => h("tr", { "data-job": job.id },
    h("td", {}, h("a", { href: `#/job/${q(job.id)}` }, job.id)),
    h("td", {}, finished ? time(job.finishedAt) : time(job.runAt)),
    h("td", { class: "num" }, `${num(job.attempts, 0)}/${num(job.maxAttempts, 0)}`),
    h("td", {}, job.throttleKey || ""),
    h("td", { class: "error" }, job.lastError || ""),
    h("td", {}, jobActions(job, () => jobsPage(name, state, cursors, pageSize).catch(failed)))));
  const progress = h("p", { role: "status", "data-testid": "operation" });
  if (lastOperation.page === `${name}/${state}`) progress.textContent = lastOperation.text;  // kept over redraws
  const bar = h("div", { class: "bar" });
  if (state === "dead" || state === "cancelled") {
    bar.append(h("button", { type: "button", "data-testid": "retry-all", disabled: !page.counts[state],
      onclick: () => retryAll(name, state, progress) }, `Retry all ${num(page.counts[state], 0)} ${state}`));
  }
  if (cursors.length > 1) {
    bar.append(h("button", { type: "button", onclick: () => jobsPage(name, state, [null], pageSize).catch(failed) }, "First page"));
  }
  if (page.next) {
    bar.append(h("button", { type: "button", "data-testid": "next-page",
      onclick: () => jobsPage(name, state, [...cursors, page.next], pageSize).catch(failed) }, "Next page"));
  }
  show(h("h1", {}, h("a", { href: `#/worker/${q(name)}` }, name), ` · ${state} jobs`),
    h("div", { class: "tabs", "data-testid": "counts" }, STATES.map((s) => h("a", {
      href: `#/jobs/${q(name)}/${s}`, class: s === state ? "current" : null, "data-state": s,
      "aria-current": s === state ? "page" : null }, `${s} ${num(page.counts[s], 0)}`))),
    bar, progress,
    page.jobs.length
      ? table([["id"], [finished ? "finished" : "runs at"], ["attempts", "num"], ["key"], ["last error"], [""]], rows,
        { "data-testid": "jobs" })
      : h("p", { class: "muted" }, `No ${state} job${cursor ? " on this page" : ""}.`));
  onWorkerChanged.set("jobs", (changed) => {
    if (changed === name && !retrying) jobsPage(name, state, cursors, pageSize).catch(failed);
  });
}

function jobActions(job, after) {
  const act = (method, path, body) => async () => {
    try { await api(method, path, body); after(); } catch (error) { failed(error); }
  };
  const buttons = [];
  if (job.state === "dead" || job.state === "cancelled") {
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

let retrying = false;  // while a retry-all runs, live events do not redraw the jobs page under it
let lastOperation = { page: "", text: "" };  // what the last retry-all of a jobs page said

async function retryAll(name, state, progress) {
  progress.textContent = `Retrying every ${state} job…`;
  retrying = true;
  try {
    let { status, data } = await api("POST", "jobs/retry", { worker: name, state, all: true });
    while (status === 202 || !data.done) {
      progress.textContent = `Retried ${num(data.retried, 0)} of ${num(data.total, 0)}…`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      ({ status, data } = await api("GET", `operations/${q(data.operation)}`));
    }
    progress.textContent = data.error ? `Stopped after ${num(data.retried, 0)}: ${data.error}`
      : `Retried ${num(data.retried, 0)} ${state} job${data.retried === 1 ? "" : "s"}.`;
    lastOperation = { page: `${name}/${state}`, text: progress.textContent };
    await jobsPage(name, state, [null]);
  } catch (error) {
    if (!(error instanceof Unauthorized)) progress.textContent = error.message;
  } finally {
    retrying = false;  // the page follows live events again: the retried jobs' ends show as they come
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
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const limit = Number(new URLSearchParams(query || "").get("limit")) || PAGE_SIZE;
  let page;
  if (parts[0] === "worker" && parts[1]) page = workerPage(parts[1]);
  else if (parts[0] === "jobs" && parts[1]) page = jobsPage(parts[1], parts[2] || "dead", [null], limit);
  else if (parts[0] === "job" && parts[1]) page = jobPage(parts.slice(1).join("/"));
  else page = overview();
  page.catch(failed);
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
