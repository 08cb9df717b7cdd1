// A fast local worker for the benchmarks: answers 200 {"ok":true} to every POST.
//
//   node bench/sink.js [--port 0] [--latency-ms 0]      (or env SINK_PORT, SINK_LATENCY_MS)
//
// POST anything     -> 200 {"ok":true}, after --latency-ms when it is > 0; counted.
//                      A JSON body whose args carry dueAt (unix seconds) adds one lag sample:
//                      arrival time - dueAt.
// GET  /count       -> {"count": POSTs answered, "lagSamples": n}
// GET  /lags        -> {"n", "p50Ms", "p99Ms", "maxMs", "minMs"} over the lag samples
// GET  /clock       -> {"now": the unix seconds the sink stamps arrivals with}, so that the
//                      benchmark can measure the offset between its clock and the sink's
// POST /reset       -> clears the count and the lag samples
// Prints "listening PORT" once it accepts connections. Binds 127.0.0.1 only.
'use strict';
const http = require('http');
const { performance } = require('perf_hooks');

function option(name, envName, fallback) {
  const i = process.argv.indexOf(name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (process.env[envName] !== undefined) return process.env[envName];
  return fallback;
}

const port = Number(option('--port', 'SINK_PORT', '0'));
const latencyMs = Number(option('--latency-ms', 'SINK_LATENCY_MS', '0'));
const OK = Buffer.from('{"ok":true}');
const OK_HEADERS = { 'content-type': 'application/json', 'content-length': OK.length };

let count = 0;
let lags = [];  // ms, arrival - dueAt

function nowUnixS() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

function json(res, status, value) {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

function answer(res) {
  count += 1;
  res.writeHead(200, OK_HEADERS);
  res.end(OK);
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET') {
    if (req.url === '/count') return json(res, 200, { count, lagSamples: lags.length });
    if (req.url === '/clock') return json(res, 200, { now: nowUnixS() });
    if (req.url === '/lags') {
      const sorted = lags.slice().sort((a, b) => a - b);
      const round = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
      return json(res, 200, {
        n: sorted.length,
        p50Ms: round(percentile(sorted, 50)),
        p99Ms: round(percentile(sorted, 99)),
        maxMs: round(sorted.length ? sorted[sorted.length - 1] : null),
        minMs: round(sorted.length ? sorted[0] : null),
      });
    }
    return json(res, 404, { error: 'GET /count or /lags' });
  }
  const arrival = nowUnixS();
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.url === '/reset') {
      count = 0;
      lags = [];
      return json(res, 200, { ok: true });
    }
    if (chunks.length) {
      const body = Buffer.concat(chunks);
      // Parse only the bodies that carry a due time: the throughput runs stay cheap.
      if (body.indexOf('dueAt') >= 0) {
        try {
          const dueAt = JSON.parse(body).args.dueAt;
          if (typeof dueAt === 'number') lags.push((arrival - dueAt) * 1000);
        } catch (e) { /* not a job body: just answer */ }
      }
    }
    if (latencyMs > 0) setTimeout(answer, latencyMs, res);
    else answer(res);
  });
});
server.keepAliveTimeout = 120000;  // clients keep connections; never close one under them
server.headersTimeout = 121000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
