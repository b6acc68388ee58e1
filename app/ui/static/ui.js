// The planner page: every number comes from the public API (GET /models, POST /forecast, GET /actuals,
// GET /accuracy); nothing is computed differently here. Weekly actuals are the sums of the stored days of each
// ISO week (Monday to Sunday), as /forecast sums its days. The page state lives in the URL.
"use strict";

const LEVELS = [80, 95];
const DAY_S = 86400;
const $ = (id) => document.getElementById(id);
const ui = { ready: false, plotted: null, request: null, firstChartMs: null, chart: null, draws: 0 };
window.forecastUi = ui; // what the page drew, for whoever checks it (the browser tests)

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// A fetch that throws the API's own error message for any non-2xx answer.
async function api(path, options) {
  const answer = await fetch(path, options);
  if (answer.ok) return answer;
  let message = answer.statusText;
  try { message = (await answer.json()).message || message; } catch (_) { /* not JSON: the status text */ }
  throw new ApiError(answer.status, message, answer.headers.get("Retry-After"));
}

function readState() {
  const query = new URLSearchParams(location.search);
  const weeks = Math.min(52, Math.max(4, parseInt(query.get("weeks") || "13", 10) || 13));
  return {
    model: query.get("model") || "default",
    store: query.get("store") || "1",
    item: query.get("item") || "1",
    weeks,
    granularity: query.get("granularity") === "day" ? "day" : "week",
  };
}

function writeState(state) {
  const query = new URLSearchParams(state);
  history.replaceState(null, "", `${location.pathname}?${query}`);
}

// The /forecast request for the state: a series, a store's or an item's total, or the chain's.
function forecastRequest(state, serves) {
  const body = { days: state.weeks * 7, granularity: state.granularity, level: LEVELS };
  const allStores = state.store === "all", allItems = state.item === "all";
  if (allStores && allItems) {
    body.totals = "all";
  } else if (allItems) {
    body.series = serves.items.map((item) => ({ store: Number(state.store), item }));
    body.totals = "store";
  } else if (allStores) {
    body.series = serves.stores.map((store) => ({ store, item: Number(state.item) }));
    body.totals = "item";
  } else {
    body.series = [{ store: Number(state.store), item: Number(state.item) }];
  }
  const path = state.model === "default" ? "/forecast" : `/models/${encodeURIComponent(state.model)}/forecast`;
  return { path, body };
}

function post(request, accept) {
  return api(request.path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: accept },
    body: JSON.stringify(request.body),
  });
}

function actualsPath(state) {
  const query = new URLSearchParams({ model: state.model });
  if (state.store !== "all") query.set("store", state.store);
  if (state.item !== "all") query.set("item", state.item);
  return `/actuals?${query}`;
}

const seconds = (date) => Date.parse(`${date}T00:00:00Z`) / 1000;
function mondayOf(date) {
  const day = seconds(date);
  const weekday = (new Date(day * 1000).getUTCDay() + 6) % 7; // Monday 0
  return day - weekday * DAY_S;
}

// Stored actuals summed per day (or per ISO week) over the series shown.
function actualSums(rows, granularity) {
  const sums = new Map();
  for (const row of rows) {
    const at = granularity === "week" ? mondayOf(row.date) : seconds(row.date);
    sums.set(at, (sums.get(at) || 0) + row.sales);
  }
  return sums;
}

function plotData(forecasts, actuals, granularity) {
  const past = actualSums(actuals, granularity);
  const ahead = new Map(forecasts.map((f) => [seconds(f.date), f]));
  const xs = [...new Set([...past.keys(), ...ahead.keys()])].sort((a, b) => a - b);
  const column = (pick) => xs.map((x) => (ahead.has(x) ? pick(ahead.get(x)) : null));
  const edge = (side, level) => column((f) => (f[side] ? f[side][level] : null));
  return {
    xs,
    actual: xs.map((x) => (past.has(x) ? past.get(x) : null)),
    sales: column((f) => f.sales),
    lower80: edge("lower", "80"), upper80: edge("upper", "80"),
    lower95: edge("lower", "95"), upper95: edge("upper", "95"),
    actualsEnd: past.size ? Math.max(...past.keys()) : null,
  };
}

function hatch(u) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 8;
  const pen = canvas.getContext("2d");
  pen.strokeStyle = "rgba(31, 95, 191, 0.45)";
  pen.lineWidth = 1.5;
  pen.beginPath(); pen.moveTo(0, 8); pen.lineTo(8, 0); pen.stroke();
  return u.ctx.createPattern(canvas, "repeat");
}

function drawActualsEnd(u) {
  const end = ui.plotted && ui.plotted.actualsEnd;
  if (end == null) return;
  const x = Math.round(u.valToPos(end, "x", true));
  const { top, height } = u.bbox;
  u.ctx.save();
  u.ctx.strokeStyle = "#555";
  u.ctx.setLineDash([2, 3]);
  u.ctx.lineWidth = 1.5;
  u.ctx.beginPath(); u.ctx.moveTo(x, top); u.ctx.lineTo(x, top + height); u.ctx.stroke();
  u.ctx.restore();
}

function draw(data) {
  const edge = { stroke: "rgba(31, 95, 191, 0.5)", width: 1, dash: [1, 3] };
  const options = {
    width: Math.max(480, $("figure").clientWidth - 16),
    height: 380,
    scales: { x: { time: true } },
    series: [
      { label: "Date" },
      { label: "Actual", stroke: "#1a1a1a", width: 2 },
      { label: "Forecast", stroke: "#1f5fbf", width: 2, dash: [8, 4] },
      { label: "95% low", ...edge }, { label: "95% high", ...edge },
      { label: "80% low", ...edge }, { label: "80% high", ...edge },
    ],
    bands: [
      { series: [4, 3], fill: hatch },
      { series: [6, 5], fill: "rgba(31, 95, 191, 0.28)" },
    ],
    axes: [{}, { label: "units sold" }],
    hooks: { draw: [drawActualsEnd, () => { ui.draws += 1; }] },
  };
  const rows = [data.xs, data.actual, data.sales, data.lower95, data.upper95, data.lower80, data.upper80];
  if (ui.chart) ui.chart.destroy();
  ui.chart = new uPlot(options, rows, $("chart"));
}

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = !text;
}

function describeError(error) {
  if (!(error instanceof ApiError)) return `The request failed: ${error.message}`;
  if (error.status === 503) {
    const retry = error.retryAfter ? ` Retry in ${error.retryAfter} s.` : "";
    return `The service is not ready: ${error.message}.${retry}`;
  }
  return `The service refused the request (${error.status}): ${error.message}`;
}

function fillSelect(select, values, chosen, allLabel) {
  const options = (allLabel ? [["all", allLabel]] : []).concat(values.map((v) => [String(v), String(v)]));
  select.replaceChildren(...options.map(([value, text]) => new Option(text, value, false, value === chosen)));
  if (![...select.options].some((o) => o.selected)) select.value = options.length ? options[0][0] : "";
}

function showVersion(model, entry) {
  const routes = entry.routes || {};
  const rows = [["Model", model], ["Production", routes.production || "not served"],
    ["Canary", routes.canary ? `${routes.canary} (${routes.canary_weight}% of series)` : "none"],
    ["Shadow", routes.shadow ? `${routes.shadow} (${routes.shadow_weight}% of rows)` : "none"]];
  if (entry.serves) rows.push(["Trained through", entry.serves.trained_through]);
  $("version").replaceChildren(...rows.flatMap(([term, value]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = term; dd.textContent = value;
    return [dt, dd];
  }));
}

function fixed(value, digits) { return value == null ? "n/a" : value.toFixed(digits); }

function showAccuracy(report) {
  const box = $("accuracy");
  const production = report.versions.find((v) => v.aliases.includes("production"));
  if (!report.start || !production || !production.rows) {
    box.textContent = "No actuals yet: load them with POST /actuals to see how the model has been doing.";
    return;
  }
  const table = document.createElement("table");
  table.innerHTML = "<caption></caption><thead><tr><th scope=\"col\"></th><th scope=\"col\">SMAPE</th>" +
    "<th scope=\"col\">MAE</th></tr></thead><tbody></tbody>";
  table.caption.textContent = `${report.start} to ${report.end}, ${production.rows} forecasts`;
  const body = table.tBodies[0];
  for (const [name, scores] of [[`Model (${production.version})`, production], ["Seasonal naive", production.baseline]]) {
    const row = body.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = fixed(scores.smape, 2);
    row.insertCell().textContent = fixed(scores.mae, 2);
  }
  box.replaceChildren(table);
  ui.accuracy = { version: production.version, smape: production.smape, baseline: production.baseline.smape };
}

async function render(state) {
  const models = (await (await api("/models")).json()).models;
  fillSelect($("model"), Object.keys(models), state.model);
  state.model = $("model").value;
  const entry = models[state.model];
  if (!entry.serves) throw new ApiError(503, `model ${state.model} is not served by this pod yet`);
  fillSelect($("store"), entry.serves.stores, state.store, "All stores");
  fillSelect($("item"), entry.serves.items, state.item, "All items");
  state.store = $("store").value; state.item = $("item").value;
  $("weeks").value = state.weeks; $("granularity").value = state.granularity;
  writeState(state);
  showVersion(state.model, entry);
  const request = forecastRequest(state, entry.serves);
  const [answer, stored, accuracy] = await Promise.all([
    post(request, "application/json").then((r) => r.json()),
    api(actualsPath(state)).then((r) => r.json()),
    api(`/accuracy?model=${encodeURIComponent(state.model)}`).then((r) => r.json()),
  ]);
  ui.request = request;
  ui.answer = answer;
  ui.plotted = plotData(answer.forecasts, stored.actuals, state.granularity);
  draw(ui.plotted);
  showAccuracy(accuracy);
  const notes = [];
  if (answer.intervals && answer.intervals.none) notes.push(`No bands for this version: ${answer.intervals.none}`);
  if (stored.source !== "actuals") {
    notes.push(`No actual sales stored yet: the history shown is the ${stored.source} (POST /actuals to store some).`);
  } else if (!stored.actuals.length) {
    notes.push("No actual sales stored for this selection yet (POST /actuals).");
  }
  ui.source = stored.source;
  showMessage(notes.join(" "), "note");
  if (ui.firstChartMs === null) ui.firstChartMs = Math.round(performance.now()); // since navigation start
  ui.ready = true;
}

async function update() {
  ui.ready = false;
  const state = {
    model: $("model").value, store: $("store").value, item: $("item").value,
    weeks: Math.min(52, Math.max(4, parseInt($("weeks").value, 10) || 13)), granularity: $("granularity").value,
  };
  try {
    await render(state);
  } catch (error) {
    failed(error);
  }
}

function failed(error) {
  showMessage(describeError(error));
  ui.error = describeError(error);
  ui.ready = true;
}

async function download() {
  if (!ui.request) return;
  try {
    const csv = await (await post(ui.request, "text/csv")).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(csv);
    link.download = "forecast.csv";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (error) {
    showMessage(describeError(error));
  }
}

for (const id of ["model", "store", "item", "weeks", "granularity"]) $(id).addEventListener("change", update);
$("pickers").addEventListener("submit", (event) => { event.preventDefault(); update(); });
$("download").addEventListener("click", download);
render(readState()).catch(failed);
