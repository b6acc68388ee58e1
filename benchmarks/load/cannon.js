// Drive one load run with autocannon and print a JSON summary on stdout.
//   node cannon.js '{"url": "...", "connections": 64, "duration": 10, "rate": 0, "samples": false}'
// Closed loop: `connections` keep-alive clients, each sends its next request when the last answered.
// Open loop: `rate` > 0 caps the overall arrival rate (requests/s) over many connections, so at
// rates below capacity requests are sent on schedule, not when an answer frees a client.
// Bodies cycle over 10,000 distinct (date, store, item) rows (fixed seed), the same for every system.
// With `samples`, every response is recorded as [ms since start, status, latency ms] for time plots.
// Latency percentiles are computed here from every response's time, to the microsecond.
// With `requestsFile`, requests follow that file's JSON list instead, [{"path", "headers", "body"}, ...],
// each taken in turn by whichever connection sends next (wrapping around at the end), the same order
// for every system: the many-models scenario's model per request (benchmarks/many_models.py).
"use strict";
const fs = require("fs");
const autocannon = require("autocannon");

const opts = JSON.parse(process.argv[2]);
let seed = 42;
function random() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; }
const bodies = [];
for (let n = 0; n < 10000; n++) {
  const year = 2017 + Math.floor(random() * 2), month = 1 + Math.floor(random() * 12);
  const day = 1 + Math.floor(random() * 28);
  const date = `${year}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`;
  bodies.push(JSON.stringify({ date, store: 1 + Math.floor(random() * 10), item: 1 + Math.floor(random() * 50) }));
}
let next = Math.floor(random() * 10000);
const listed = opts.requestsFile ? JSON.parse(fs.readFileSync(opts.requestsFile, "utf8")) : null;
let nextListed = 0;

function fromList(request) {
  const entry = listed[nextListed];
  nextListed = (nextListed + 1) % listed.length;
  request.path = entry.path;
  request.headers = entry.headers;
  request.body = entry.body;
  return request;
}

const started = Date.now();
const samples = [];
const instance = autocannon({
  url: opts.url,
  connections: opts.connections,
  duration: opts.duration,
  overallRate: opts.rate > 0 ? opts.rate : undefined,
  timeout: opts.timeout || 30,
  requests: [{
    method: opts.method || "POST",
    path: opts.path || "/predict",
    headers: { "content-type": "application/json" },
    setupRequest: (request) => {
      if (listed) return fromList(request);
      if ((opts.method || "POST") === "POST") { request.body = bodies[next]; next = (next + 1) % bodies.length; }
      return request;
    },
  }],
}, (error, result) => {
  if (error) { console.error(error); process.exit(1); }
  const statuses = {};
  for (const [key, value] of Object.entries(result.statusCodeStats || {})) statuses[key] = value.count;
  console.log(JSON.stringify({
    requests: result.requests.total,
    seconds: result.duration,
    rps: result.requests.total / result.duration,
    latency_ms: percentiles(result),
    statuses,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    samples: opts.samples ? samples : undefined,
  }));
});
// Every response's time (ms, sub-millisecond: autocannon's own percentiles are whole milliseconds).
const times = [];
instance.on("response", (client, statusCode, bytes, responseTime) => {
  times.push(responseTime);
  if (opts.samples) samples.push([Date.now() - started, statusCode, Math.round(responseTime * 100) / 100]);
});
if (opts.samples) instance.on("reqError", () => { samples.push([Date.now() - started, 0, 0]); });

function percentiles(result) {
  if (times.length === 0) return { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.mean };
  const sorted = Float64Array.from(times).sort();
  const at = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 1000) / 1000;
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), mean: Math.round(mean * 1000) / 1000 };
}
