// A Node HTTP client as the peer for the Python clients: keeps N POSTs in flight to a URL
// over keep-alive connections until it is stopped (SIGTERM) or MAX_SECONDS pass. The
// benchmark counts its requests at the sink, as it does for the Python clients.
//
//   node bench/load.js URL IN_FLIGHT [MAX_SECONDS=60]
'use strict';
const http = require('http');

const [url, inFlightText, maxSecondsText] = process.argv.slice(2);
const target = new URL(url);
const inFlight = Number(inFlightText);
const maxSeconds = Number(maxSecondsText || '60');
const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight, maxFreeSockets: inFlight });
const body = Buffer.from('{"jobId":"bench:x","worker":"bench","attempt":1,"args":{"n":1}}');

function one() {
  const req = http.request({
    host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
    headers: { 'content-type': 'application/json', 'content-length': body.length },
  }, (res) => {
    res.resume();
    res.on('end', one);
  });
  req.on('error', () => setTimeout(one, 10));
  req.end(body);
}

for (let i = 0; i < inFlight; i++) one();
setTimeout(() => process.exit(0), maxSeconds * 1000);
process.on('SIGTERM', () => process.exit(0));
