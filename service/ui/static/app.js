// The live page: plain JS, no build step. Every number shown comes from the v1 API; URLs are
// relative so the page also works behind a path prefix.
"use strict";

const CO2_MODEL = "co2-forecaster";
const LM_MODEL = "char-lm";
const DIGITS_MODEL = "digits-rnn";
const FOLLOW_MONTHS = 96;

const $ = (selector) => document.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// what the browser test reads: the chart's own data, the text, the probabilities
const ui = (window.rnnserveUi = { cards: {}, errors: [] });

class ServerError extends Error {
  constructor(status, type, message, detail) {
    super(message);
    this.status = status;
    this.type = type;
    this.detail = detail;
  }
}

// ---------------------------------------------------------------- errors, key, requests

function showError(where, error) {
  const type = error.type || "error";
  const status = error.status ? `${error.status} ` : "";
  const entry = { where, status: error.status || 0, type, message: error.message };
  ui.errors.push(entry);
  const item = document.createElement("li");
  item.dataset.type = type;
  item.textContent = `${new Date().toLocaleTimeString()} ${where}: [${status}${type}] ${error.message}`;
  $("#error-list").prepend(item);
  $("#errors").hidden = false;
}

$("#errors-clear").addEventListener("click", () => {
  $("#error-list").replaceChildren();
  $("#errors").hidden = true;
});

const keyInput = $("#api-key");
keyInput.value = sessionStorage.getItem("rnnserve-api-key") || "";
$("#key-form").addEventListener("submit", (event) => event.preventDefault());
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("rnnserve-api-key", keyInput.value.trim());
  loadModels();
});

function apiKey() {
  return keyInput.value.trim();
}

async function api(method, path, body) {
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ServerError(0, "network_error", `${method} ${path}: ${exc.message || exc}`);
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch (exc) {
    payload = null;
  }
  if (!response.ok) {
    const error = payload && payload.error;
    throw new ServerError(
      response.status,
      (error && error.type) || "http_error",
      (error && error.message) || text || response.statusText,
      error && error.detail,
    );
  }
  return payload;
}

// ---------------------------------------------------------------- WebSocket steps

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// One socket on a stream route. The server answers messages in order, so answers resolve a
// queue of promises; the greeting (the session, with its seq) is the first entry.
class StepSocket {
  constructor(path) {
    const url = new URL(path, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // the key travels as a subprotocol: browsers cannot set headers, URLs end up in logs
    const protocols = ["rnnserve"];
    if (apiKey()) protocols.push(`rnnserve.key.${base64url(apiKey())}`);
    this.pending = [];
    this.closed = false;
    this.hello = new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
    this.socket = new WebSocket(url.href, protocols);
    this.socket.onmessage = (event) => this.answer(JSON.parse(event.data));
    this.socket.onclose = (event) => this.fail(event);
  }

  answer(message) {
    const waiter = this.pending.shift();
    if (!waiter) return;
    if (message.error) {
      const { type, message: text, detail } = message.error;
      waiter.reject(new ServerError(0, type, text, detail));
    } else {
      waiter.resolve(message);
    }
  }

  fail(event) {
    this.closed = true;
    const reason = event.reason ? ` ${event.reason}` : "";
    const error = new ServerError(event.code, event.reason || "closed", `socket closed (${event.code}${reason})`);
    for (const waiter of this.pending.splice(0)) waiter.reject(error);
  }

  step(seq, inputs) {
    if (this.closed) return Promise.reject(new ServerError(0, "closed", "socket is closed"));
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.socket.send(JSON.stringify({ seq, inputs }));
    });
  }

  close() {
    this.closed = true;
    this.socket.close(1000);
  }
}

// ---------------------------------------------------------------- models and health

function fmt(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) < 1e-3 ? value.toExponential(2) : value.toFixed(4);
}

function describeCard(info) {
  const card = info.card;
  const rows = [];
  if (!card) return [["reason", info.reason || "unavailable"]];
  const input = card.vocab_size != null
    ? `tokens, vocabulary ${card.vocab_size}`
    : `${card.input_size} float feature(s)${card.feature_names ? ` (${card.feature_names.join(", ")})` : ""}`;
  rows.push(["input", input]);
  const per = { per_step: "at every step", last_step: "at every step, read at the last", per_sequence: "per sequence" };
  rows.push(["output", `${card.output_size} ${per[card.head] || ""} (head ${card.head})`]);
  rows.push(["layers", (card.layers || []).map((l) =>
    `${l.name}: ${l.kind}${l.nonlinearity ? `/${l.nonlinearity}` : ""} ${l.input_size}->${l.hidden_size}` +
    ` x${l.num_layers}${l.bidirectional ? " bidirectional" : ""}`).join("; ")]);
  rows.push(["state", (card.states || []).map((s) => `${s.name} [${s.rows}x${s.width}]`).join(", ")]);
  rows.push(["streamable", card.streamable ? "yes" : `no: ${card.not_streamable_reason}`]);
  rows.push(["padding safe", card.padding_safe ? "yes" : "no"]);
  if (card.parity) rows.push(["parity vs torch", `max abs error ${fmt(card.parity.max_abs_error)}`]);
  if (card.metrics) {
    rows.push(["metrics", Object.entries(card.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")]);
  }
  if (card.labels) {
    const shown = card.labels.slice(0, 24).map((l) => JSON.stringify(l)).join(" ");
    rows.push(["labels", `${card.labels.length}: ${shown}${card.labels.length > 24 ? " ..." : ""}`]);
  }
  rows.push(["provider", info.provider || "-"]);
  return rows;
}

function renderModels(models) {
  const container = $("#model-cards");
  container.replaceChildren();
  for (const info of models) {
    const box = document.createElement("article");
    box.className = `card ${info.status}`;
    box.dataset.model = info.name;
    const title = document.createElement("h3");
    title.textContent = `${info.name} v${info.version} `;
    const status = document.createElement("span");
    status.className = "pill";
    status.textContent = info.status;
    title.append(status);
    box.append(title);
    if (info.card && info.card.description) {
      const description = document.createElement("p");
      description.className = "description";
      description.textContent = info.card.description;
      box.append(description);
    }
    const list = document.createElement("dl");
    for (const [term, value] of describeCard(info)) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }
    box.append(list);
    container.append(box);
  }
}

async function loadModels() {
  try {
    const { models } = await api("GET", "v1/models");
    ui.cards = {};
    for (const info of models) {
      // the default version is the highest ready one, as on the server
      const seen = ui.cards[info.name];
      if (info.status === "ready" && (!seen || seen.version < info.version)) ui.cards[info.name] = info;
    }
    renderModels(models);
  } catch (error) {
    showError("models", error);
  }
}

async function loadHealth() {
  const pill = $("#health");
  try {
    const response = await fetch("health/ready");
    const health = await response.json();
    pill.textContent = `${health.status} - ${Object.keys(health.models || {}).length} models - ` +
      `store ${health.session_store ? `${health.session_store.kind} ${health.session_store.status}` : "-"}`;
    pill.className = `pill ${response.ok ? "ready" : "unavailable"}`;
  } catch (exc) {
    pill.textContent = "server unreachable";
    pill.className = "pill unavailable";
  }
}

function requireModel(name, statusElement) {
  const info = ui.cards[name];
  if (!info) {
    statusElement.textContent = `model ${name} is not served here`;
    return null;
  }
  return info;
}

// ---------------------------------------------------------------- CO2 forecaster

const co2 = (ui.co2 = { values: [], months: [], observed: [], forecast: [], seq: 0, running: false });

function monthLabel(index) {
  const [year, month] = co2.firstMonth;
  const total = year * 12 + (month - 1) + index;
  return `${Math.floor(total / 12)}-${String((total % 12) + 1).padStart(2, "0")}`;
}

function co2Clear() {
  const n = co2.values.length + 1; // one more month: the forecast after the last value
  co2.observed = new Array(n).fill(null);
  co2.forecast = new Array(n).fill(null);
  co2.seq = 0;
  co2.chart.setData([co2.months, co2.observed, co2.forecast]);
  co2.chart.setScale("x", { min: co2.months[0], max: co2.months[Math.min(n - 1, FOLLOW_MONTHS)] });
}

async function co2Init() {
  try {
    const response = await fetch("ui/static/co2.json");
    const series = await response.json();
    co2.values = series.values;
    co2.firstMonth = series.first_month.split("-").map(Number);
    co2.months = [];
    for (let i = 0; i <= co2.values.length; i++) {
      co2.months.push(Date.UTC(co2.firstMonth[0], co2.firstMonth[1] - 1 + i, 1) / 1000);
    }
    const width = Math.max(320, $("#co2-chart").clientWidth || 900);
    co2.chart = new uPlot({
      width,
      height: 300,
      scales: { x: { time: true }, y: { auto: true } },
      series: [
        {},
        { label: `observed (${series.unit})`, stroke: "#2a6fdb", width: 2, spanGaps: false },
        { label: "forecast for the month", stroke: "#e4572e", width: 2, dash: [6, 4], spanGaps: false },
      ],
      axes: [{}, { label: series.unit }],
    }, [co2.months, [], []], $("#co2-chart"));
    co2Clear();
    $("#co2-status").textContent = `${series.months} months from ${series.first_month}; not started`;
  } catch (error) {
    showError("co2 data", error);
  }
}

function co2Buttons() {
  $("#co2-start").disabled = co2.running;
  $("#co2-pause").disabled = !co2.running;
}

async function co2Run() {
  if (!requireModel(CO2_MODEL, $("#co2-status")) || co2.running) return;
  co2.running = true;
  co2Buttons();
  try {
    if (!co2.socket || co2.socket.closed) {
      // after a lost socket, continue the same session: its greeting says where it stands,
      // and a step it applied whose answer never arrived is answered again from its record
      const resume = Boolean(co2.sessionId);
      co2.socket = new StepSocket(resume ? `v1/sessions/${co2.sessionId}/stream` : `v1/models/${CO2_MODEL}/stream`);
      let hello;
      try {
        hello = await co2.socket.hello;
      } catch (error) {
        if (resume) {
          co2.sessionId = null;
          co2Clear();
        }
        throw error;
      }
      co2.sessionId = hello.session_id;
      if (!resume || hello.seq < co2.seq) co2.seq = hello.seq;
    }
    while (co2.running && co2.seq < co2.values.length) {
      const seq = co2.seq;
      const answer = await co2.socket.step(seq, [[co2.values[seq]]]);
      co2.observed[seq] = co2.values[seq];
      co2.forecast[seq + 1] = answer.outputs[0][0];
      co2.seq = answer.seq;
      co2.chart.setData([co2.months, co2.observed, co2.forecast], false);
      if ($("#co2-follow").checked) {
        const last = Math.min(co2.months.length - 1, Math.max(seq + 2, FOLLOW_MONTHS));
        co2.chart.setScale("x", { min: co2.months[last - FOLLOW_MONTHS], max: co2.months[last] });
      } else {
        co2.chart.redraw();
      }
      $("#co2-status").textContent = `${monthLabel(seq)} observed ${co2.values[seq].toFixed(2)}, ` +
        `forecast for ${monthLabel(seq + 1)} ${answer.outputs[0][0].toFixed(2)} ppm ` +
        `(session ${co2.sessionId}, seq ${co2.seq})`;
      const delay = Number($("#co2-delay").value);
      if (delay > 0) await sleep(delay);
    }
  } catch (error) {
    showError("co2 stream", error);
    if (co2.socket) co2.socket.close();
    co2.socket = null;
  }
  co2.running = false;
  co2Buttons();
}

async function co2Reset() {
  co2.running = false;
  if (co2.socket) co2.socket.close();
  co2.socket = null;
  const sessionId = co2.sessionId;
  co2.sessionId = null;
  co2Clear();
  co2Buttons();
  $("#co2-status").textContent = "reset";
  if (sessionId) {
    try {
      await api("DELETE", `v1/sessions/${sessionId}`);
    } catch (error) {
      showError("co2 reset", error);
    }
  }
}

$("#co2-start").addEventListener("click", co2Run);
$("#co2-pause").addEventListener("click", () => {
  co2.running = false;
});
$("#co2-reset").addEventListener("click", co2Reset);

// ---------------------------------------------------------------- character LM

const lm = (ui.lm = { running: false, text: "", steps: 0 });

function sampleToken(logits, temperature) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (temperature <= 0) return best;
  const weights = logits.map((v) => Math.exp((v - logits[best]) / temperature));
  let draw = Math.random() * weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < weights.length; i++) {
    draw -= weights[i];
    if (draw <= 0) return i;
  }
  return best;
}

$("#lm-temperature").addEventListener("input", () => {
  $("#lm-temperature-value").textContent = Number($("#lm-temperature").value).toFixed(2);
});

async function lmGenerate() {
  const info = requireModel(LM_MODEL, $("#lm-status"));
  if (!info || lm.running) return;
  const vocabulary = info.card.labels || [...Array(info.card.vocab_size).keys()].map((i) => `<${i}>`);
  const index = new Map(vocabulary.map((char, i) => [char, i]));
  const prompt = $("#lm-prompt").value || " ";
  const tokens = [...prompt].map((char) => index.get(char) ?? 0);
  const length = Math.max(1, Math.min(2000, Number($("#lm-length").value) || 300));
  lm.running = true;
  $("#lm-generate").disabled = true;
  $("#lm-stop").disabled = false;
  lm.text = prompt;
  $("#lm-output").textContent = lm.text;
  const socket = new StepSocket(`v1/models/${LM_MODEL}/stream`);
  try {
    const hello = await socket.hello;
    let answer = await socket.step(hello.seq, tokens);
    for (let i = 0; i < length && lm.running; i++) {
      const token = sampleToken(answer.outputs[answer.outputs.length - 1], Number($("#lm-temperature").value));
      lm.text += vocabulary[token];
      $("#lm-output").textContent = lm.text;
      answer = await socket.step(answer.seq, [token]);
      lm.steps = answer.seq;
      $("#lm-status").textContent = `session ${hello.session_id}, ${answer.seq} steps`;
    }
  } catch (error) {
    showError("char-lm stream", error);
  }
  socket.close();
  lm.running = false;
  $("#lm-generate").disabled = false;
  $("#lm-stop").disabled = true;
}

$("#lm-generate").addEventListener("click", lmGenerate);
$("#lm-stop").addEventListener("click", () => {
  lm.running = false;
});

// ---------------------------------------------------------------- digits classifier

const digits = (ui.digits = { pixels: new Array(64).fill(0), rows: [], predicted: null, sessionId: null });
const PIXEL_MAX = 16;

function paintCell(cell, value) {
  const index = Number(cell.dataset.row) * 8 + Number(cell.dataset.col);
  digits.pixels[index] = value;
  cell.dataset.value = String(value);
  const shade = Math.round(255 - (value / PIXEL_MAX) * 255);
  cell.style.background = `rgb(${shade},${shade},${shade})`;
}

function buildGrid() {
  const grid = $("#digits-grid");
  let painting = false;
  const ink = () => Number($("#digits-ink").value);
  for (let row = 0; row < 8; row++) {
    for (let col = 0; col < 8; col++) {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.row = String(row);
      cell.dataset.col = String(col);
      cell.addEventListener("pointerdown", (event) => {
        painting = true;
        cell.releasePointerCapture(event.pointerId);
        paintCell(cell, event.button === 2 ? 0 : ink());
      });
      cell.addEventListener("pointerenter", () => painting && paintCell(cell, ink()));
      grid.append(cell);
      paintCell(cell, 0);
    }
  }
  grid.addEventListener("contextmenu", (event) => event.preventDefault());
  window.addEventListener("pointerup", () => {
    painting = false;
  });
  $("#digits-ink").addEventListener("input", () => {
    $("#digits-ink-value").textContent = $("#digits-ink").value;
  });
  $("#digits-clear").addEventListener("click", () => {
    for (const cell of grid.children) paintCell(cell, 0);
  });
}

function softmax(logits) {
  const peak = Math.max(...logits);
  const weights = logits.map((v) => Math.exp(v - peak));
  const total = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / total);
}

function renderBars(probabilities, labels) {
  const bars = $("#digits-bars");
  bars.replaceChildren();
  probabilities.forEach((p, i) => {
    const line = document.createElement("div");
    line.className = "bar";
    line.dataset.label = labels[i];
    line.innerHTML = "<span class=\"label\"></span><span class=\"fill\"></span><span class=\"p\"></span>";
    line.querySelector(".label").textContent = labels[i];
    line.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    line.querySelector(".p").textContent = p.toFixed(3);
    bars.append(line);
  });
}

// A session is kept between classifications and reset to seq 0 each time; one that expired
// meanwhile is reported (the server's 404) and replaced.
async function digitsSession() {
  if (digits.sessionId) {
    try {
      await api("POST", `v1/sessions/${digits.sessionId}/reset`, {});
      return digits.sessionId;
    } catch (error) {
      showError("digits session", error);
      if (error.status !== 404) throw error;
    }
  }
  const opened = await api("POST", `v1/models/${DIGITS_MODEL}/sessions`, {});
  digits.sessionId = opened.session_id;
  return digits.sessionId;
}

async function digitsClassify() {
  const info = requireModel(DIGITS_MODEL, $("#digits-status"));
  if (!info) return;
  const labels = info.card.labels || [...Array(info.card.output_size).keys()].map(String);
  const button = $("#digits-classify");
  button.disabled = true;
  digits.rows = [];
  digits.predicted = null;
  $("#digits-history tbody").replaceChildren();
  $("#digits-class").textContent = "-";
  try {
    const sessionId = await digitsSession();
    for (let row = 0; row < 8; row++) {
      const pixels = digits.pixels.slice(row * 8, row * 8 + 8);
      const answer = await api("POST", `v1/sessions/${sessionId}/steps`, { seq: row, inputs: [pixels] });
      const probabilities = softmax(answer.outputs[0]);
      let top = 0;
      probabilities.forEach((p, i) => {
        if (p > probabilities[top]) top = i;
      });
      digits.rows.push(probabilities);
      digits.predicted = labels[top];
      renderBars(probabilities, labels);
      $("#digits-row").textContent = String(row + 1);
      $("#digits-class").textContent = labels[top];
      const tr = document.createElement("tr");
      tr.innerHTML = "<td></td><td></td><td></td>";
      tr.children[0].textContent = String(row + 1);
      tr.children[1].textContent = labels[top];
      tr.children[2].textContent = probabilities[top].toFixed(3);
      $("#digits-history tbody").append(tr);
      for (const cell of $("#digits-grid").children) {
        cell.classList.toggle("fed", Number(cell.dataset.row) <= row);
      }
      $("#digits-status").textContent = `session ${sessionId}, seq ${answer.seq}`;
      await sleep(120);
    }
  } catch (error) {
    showError("digits", error);
  }
  button.disabled = false;
}

$("#digits-classify").addEventListener("click", digitsClassify);

// ---------------------------------------------------------------- start

buildGrid();
loadHealth();
co2Init();
loadModels();
