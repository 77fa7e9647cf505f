// Triggers inspector: plain JavaScript, no build step, no library. Everything goes through the
// public API with the user's key (sessionStorage, Authorization header; never a URL or cookie).
// The graph is drawn here as SVG: a session's graph is a small layered DAG, and a hand-made
// layout needs no vendored library, no licence to track and no refresh script.
"use strict";

const KEY_STORE = "triggers.apiKey";
const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const state = { scopes: [], auth: false, cursor: null, follow: null, uid: null, refreshTimer: null };

// ---------------------------------------------------------------------------------- API ---

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORE);
    showLogin("The API key was refused; enter another.");
    throw new Error("unauthorized");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((data && (data.detail || data.title)) || response.statusText);
  return data;
}

const enc = encodeURIComponent;
const can = (scope) => state.scopes.includes(scope);

function say(text, isError) {
  const msg = $("msg");
  msg.textContent = text;
  msg.className = isError ? "error" : "";
  msg.hidden = !text;
}

// ----------------------------------------------------------------------------- helpers ---

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function jsonDetails(label, value) {
  if (value === undefined || value === null) return null;
  return el("details", {}, el("summary", { text: label }), el("pre", { text: JSON.stringify(value, null, 2) }));
}

function shortTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function ask(text, options) {
  // A modal confirmation; resolves to {json, check} or null when cancelled.
  const opts = options || {};
  const dialog = $("dialog");
  $("dialog-text").textContent = text;
  $("dialog-json-label").hidden = !("json" in opts);
  $("dialog-json").value = opts.json || "";
  $("dialog-check-label").hidden = !opts.check;
  $("dialog-check-text").textContent = opts.check || "";
  $("dialog-check").checked = false;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      resolve({ json: $("dialog-json").value.trim(), check: $("dialog-check").checked });
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function parseJson(text, what) {
  if (!text) return undefined;
  try { return JSON.parse(text); } catch (error) { throw new Error(what + " is not JSON: " + error.message); }
}

async function act(doing) {
  try { await doing(); } catch (error) { if (error.message !== "unauthorized") say(error.message, true); }
}

function applyScopes(root) {
  for (const node of root.querySelectorAll("[data-scope]")) node.hidden = !can(node.dataset.scope);
}

// ------------------------------------------------------------------------------- views ---

function show(section) {
  for (const id of ["login", "list", "session"]) $(id).hidden = id !== section;
}

function showLogin(reason) {
  stopFollowing();
  show("login");
  say(reason || "", Boolean(reason));
}

async function whoAmI() {
  const me = await api("GET", "/auth/key");
  state.auth = me.auth;
  state.scopes = me.scopes;
  $("who").textContent = me.auth ? (me.name ? "key: " + me.name + " (" + me.scopes.join(", ") + ")" : "") : "authentication off";
  $("forget").hidden = !me.name;
  return me;
}

async function route() {
  say("");
  stopFollowing();
  const me = await whoAmI();
  if (me.auth && !me.name) return showLogin();
  const match = location.hash.match(/^#\/s\/(.+)$/);
  if (match) return openSession(decodeURIComponent(match[1]));
  return openList(true);
}

// -------------------------------------------------------------------------------- list ---

async function openList(fresh) {
  show("list");
  const body = $("sessions").tBodies[0];
  if (fresh) { body.replaceChildren(); state.cursor = null; }
  const params = new URLSearchParams({ limit: "50" });
  if ($("filter-prefix").value) params.set("prefix", $("filter-prefix").value);
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  if (state.cursor) params.set("cursor", state.cursor);
  const page = await api("GET", "/sessions?" + params);
  for (const s of page.sessions) {
    body.append(el("tr", { "data-uid": s.uid },
      el("td", {}, el("a", { href: "#/s/" + enc(s.uid), text: s.uid })),
      el("td", { text: shortTime(s.updated) }),
      el("td", {}, el("span", { class: "badge", text: s.finalized ? "finalized" : "active" }))));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "3", text: "No sessions." })));
  state.cursor = page.next;
  $("more").hidden = !page.next;
}

// ----------------------------------------------------------------------------- session ---

async function openSession(uid) {
  show("session");
  state.uid = uid;
  $("s-title").textContent = uid;
  $("timeline").replaceChildren();
  applyScopes($("session"));
  await refresh();
  follow(uid);
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => act(refresh), 80);
}

async function refresh() {
  const uid = state.uid;
  const base = "/sessions/" + enc(uid);
  let session;
  try {
    session = await api("GET", base);
  } catch (error) {
    $("s-summary").textContent = error.message;
    return;
  }
  const [unresolved, deliveries] = await Promise.all([
    api("GET", base + "/tasks/unresolved").catch(() => ({ tasks: [] })),
    api("GET", base + "/webhooks/deliveries").catch(() => ({ deliveries: [] })),
  ]);
  if (uid !== state.uid) return;
  $("s-summary").textContent = (session.finalized ? "finalized " + shortTime(session.finalizedAt) : "active") +
    " · created " + shortTime(session.created) + " · updated " + shortTime(session.updated) +
    " · version " + session.version;
  drawGraph(session, unresolved.tasks);
  drawInstances(session);
  drawDeliveries(deliveries.deliveries);
}

function latestInstances(session) {
  const latest = {};
  for (const inst of Object.values(session.instances)) {
    const n = Number(inst.name.split("#").pop());
    if (!latest[inst.task] || n > latest[inst.task].n) latest[inst.task] = { n, inst };
  }
  return latest;
}

function drawGraph(session, unresolvedTasks) {
  const tasks = session.tasks;
  const names = Object.keys(tasks);
  const waiting = {};
  for (const t of unresolvedTasks) waiting[t.name] = t.waitingFor;
  const level = {};
  const visiting = new Set();
  const levelOf = (name) => {
    if (!(name in tasks)) return 0;
    if (name in level) return level[name];
    if (visiting.has(name)) return 1;
    visiting.add(name);
    const sources = [...(tasks[name].after || []), ...(tasks[name].andEvery ? [tasks[name].andEvery] : [])];
    level[name] = 1 + Math.max(0, ...sources.map(levelOf));
    visiting.delete(name);
    return level[name];
  };
  names.forEach(levelOf);
  const triggers = new Set();
  for (const name of names) {
    const t = tasks[name];
    for (const trig of [...(t.after || []), ...(t.unless || []), ...(t.andEvery ? [t.andEvery] : [])]) {
      if (!(trig in tasks)) triggers.add(trig);
    }
  }
  const nodes = [...[...triggers].map((n) => ({ id: n, kind: "trigger", level: 0 })),
    ...names.map((n) => ({ id: n, kind: "task", level: level[n] }))];
  const columns = {};
  for (const node of nodes) (columns[node.level] = columns[node.level] || []).push(node);
  const W = 170, H = 48, GX = 70, GY = 22, PAD = 16;
  let maxRows = 0;
  for (const [lvl, column] of Object.entries(columns)) {
    column.forEach((node, row) => { node.x = PAD + Number(lvl) * (W + GX); node.y = PAD + row * (H + GY); });
    maxRows = Math.max(maxRows, column.length);
  }
  const width = PAD * 2 + (Math.max(0, ...Object.keys(columns).map(Number)) + 1) * (W + GX) - GX;
  const height = PAD * 2 + maxRows * (H + GY) - GY;
  const graph = $("graph");
  graph.replaceChildren();
  graph.setAttribute("viewBox", `0 0 ${width} ${height}`);
  graph.setAttribute("width", width);
  graph.setAttribute("height", height);
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
  defs.append(marker);
  graph.append(defs);
  const at = Object.fromEntries(nodes.map((n) => [n.id, n]));
  const edge = (from, to, kind) => {
    const a = at[from], b = at[to];
    if (!a || !b) return;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const bend = Math.max(30, Math.abs(x2 - x1) / 2);
    const path = svg("path", { class: "edge " + kind, d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" });
    path.append(svg("title", {}, `${from} → ${to} (${kind})`));
    graph.append(path);
  };
  for (const name of names) {
    const t = tasks[name];
    for (const trig of t.after || []) if (trig !== t.andEvery) edge(trig, name, "after");
    if (t.andEvery) edge(t.andEvery, name, "every");
    for (const trig of t.unless || []) edge(trig, name, "unless");
  }
  const latest = latestInstances(session);
  for (const node of nodes) {
    const group = svg("g", { class: "node-group", "data-node": node.id, "data-kind": node.kind });
    let cls = "node " + node.kind, sub = "";
    if (node.kind === "trigger") {
      const fired = node.id in session.latestKwargs;
      if (fired) cls += " fired";
      sub = fired ? "fired" : "not fired";
    } else {
      const inst = latest[node.id] && latest[node.id].inst;
      const status = inst ? inst.status : "none";
      cls += " st-" + status;
      group.setAttribute("data-status", status);
      sub = inst ? "#" + inst.name.split("#").pop() + " " + status : "no instance";
      if (waiting[node.id] && waiting[node.id].length) sub += " · waits for " + waiting[node.id].join(", ");
    }
    group.append(svg("rect", { class: cls, x: node.x, y: node.y, width: W, height: H }));
    group.append(svg("text", { x: node.x + 10, y: node.y + 19 }, clip(node.id, 22)));
    group.append(svg("text", { class: "sub", x: node.x + 10, y: node.y + 36 }, clip(sub, 30)));
    group.append(svg("title", {}, node.id + "\n" + sub));
    graph.append(group);
  }
}

function clip(text, length) {
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

function drawInstances(session) {
  const body = $("instances").tBodies[0];
  const rows = Object.values(session.instances).sort((a, b) =>
    a.task === b.task ? Number(a.name.split("#").pop()) - Number(b.name.split("#").pop()) : a.task < b.task ? -1 : 1);
  body.replaceChildren(...rows.map((inst) => {
    const m = inst.metadata || {};
    const ts = m.timestamps || {};
    const outcome = {};
    for (const key of ["result", "exceptionType", "exceptionInfo", "exceptionContext"]) if (key in m) outcome[key] = m[key];
    const buttons = el("td", {});
    if (inst.status === "failed" && can("operate")) {
      buttons.append(el("button", { type: "button", class: "replay", "data-instance": inst.name, text: "Replay", onclick: () => replay(inst) }), " ",
        el("button", { type: "button", class: "skip", "data-instance": inst.name, text: "Skip", onclick: () => skip(inst) }));
    }
    return el("tr", { "data-instance": inst.name, "data-status": inst.status },
      el("td", { text: inst.name }),
      el("td", {}, el("span", { class: "badge", text: inst.status })),
      el("td", { text: m.attempt || "" }),
      el("td", {}, jsonDetails(shortTime(ts.lastModified || ts.created), ts)),
      el("td", {}, jsonDetails("kwargs", inst.kwargs), Object.keys(outcome).length ? jsonDetails(m.exceptionType ? "exception" : "result", outcome) : null,
        jsonDetails("metadata", m)),
      buttons);
  }));
}

function drawDeliveries(deliveries) {
  const body = $("deliveries").tBodies[0];
  body.replaceChildren(...deliveries.map((d) => el("tr", { "data-delivery": d.id },
    el("td", {}, el("div", { text: d.type }), el("small", { text: d.url })),
    el("td", {}, el("span", { class: "badge", text: d.state })),
    el("td", {}, jsonDetails(d.attempts.length + " attempt(s)", d.attempts)),
    el("td", {}, can("operate") ? el("button", { type: "button", text: "Redeliver", onclick: () => redeliver(d) }) : null))));
  if (!deliveries.length) body.append(el("tr", {}, el("td", { colspan: "4", text: "No deliveries." })));
}

// ----------------------------------------------------------------------------- actions ---

const base = () => "/sessions/" + enc(state.uid);

function replay(inst) {
  return act(async () => {
    const answer = await ask("Replay " + inst.name + "? Leave the kwargs as they are to keep them.",
      { json: JSON.stringify(inst.kwargs) });
    if (!answer) return;
    const kwargs = parseJson(answer.json, "kwargs");
    const done = await api("POST", base() + "/instances/" + enc(inst.name) + "/replay", kwargs === undefined ? {} : { kwargs });
    say("Replayed " + inst.name + " as " + done.instance);
    scheduleRefresh();
  });
}

function skip(inst) {
  return act(async () => {
    const answer = await ask("Skip " + inst.name + "?", { check: "fire its cascade (" + inst.task + ")" });
    if (!answer) return;
    await api("POST", base() + "/instances/" + enc(inst.name) + "/skip", { cascade: answer.check });
    say("Skipped " + inst.name);
    scheduleRefresh();
  });
}

function redeliver(delivery) {
  return act(async () => {
    if (!(await ask("Deliver " + delivery.type + " to " + delivery.url + " again?"))) return;
    await api("POST", base() + "/webhooks/deliveries/" + enc(delivery.id) + "/redeliver");
    say("Redelivery of " + delivery.id + " queued");
    scheduleRefresh();
  });
}

function fire(event) {
  event.preventDefault();
  return act(async () => {
    const trigger = $("fire-trigger").value.trim();
    const kwargs = parseJson($("fire-kwargs").value.trim(), "kwargs") || {};
    if (!(await ask("Fire " + trigger + " with " + JSON.stringify(kwargs) + "?"))) return;
    await api("POST", base() + "/fire", { trigger, kwargs });
    say("Fired " + trigger);
  });
}

function deleteSession() {
  return act(async () => {
    if (!(await ask("Delete session " + state.uid + " and everything in it?"))) return;
    await api("DELETE", base());
    location.hash = "#/";
  });
}

// ----------------------------------------------------------------------- live (SSE) ---

function stopFollowing() {
  if (state.follow) state.follow.abort();
  state.follow = null;
}

// EventSource cannot send an Authorization header, so the stream is read with fetch.
async function follow(uid) {
  stopFollowing();
  const controller = new AbortController();
  state.follow = controller;
  let last = null;
  while (!controller.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (last) headers["Last-Event-ID"] = last;
      const response = await fetch("/sessions/" + enc(uid) + "/events", { headers, signal: controller.signal });
      if (!response.ok) throw new Error("event stream: " + response.status);
      $("live").textContent = "live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let data = null, id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("data: ")) data = line.slice(6);
            else if (line.startsWith("id: ")) id = line.slice(4);
          }
          if (data) { last = id || last; onEvent(JSON.parse(data)); }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    $("live").textContent = "reconnecting";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function describe(event) {
  const skip = new Set(["id", "at", "type", "actor"]);
  return Object.entries(event).filter(([k]) => !skip.has(k)).map(([k, v]) => k + "=" + v).join(" ");
}

function onEvent(event) {
  const item = el("li", { "data-type": event.type },
    el("time", { text: shortTime(event.at) }), el("span", { class: "type", text: event.type }),
    describe(event), event.actor ? el("small", { text: " by " + event.actor }) : null);
  $("timeline").prepend(item);
  scheduleRefresh();
}

// ------------------------------------------------------------------------------- start ---

function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("login-key").value.trim());
    $("login-key").value = "";
    act(route);
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); act(route); });
  $("filter").addEventListener("submit", (event) => { event.preventDefault(); act(() => openList(true)); });
  $("more").addEventListener("click", () => act(() => openList(false)));
  $("fire-form").addEventListener("submit", fire);
  $("delete-button").addEventListener("click", deleteSession);
  window.addEventListener("hashchange", () => act(route));
  act(route);
}

start();
