// celeriac dashboard: plain JavaScript, no build step. Every value from the server goes
// into the page through textContent or attributes (el() below), never as HTML.
"use strict";

const BASE = document.body.dataset.base || "";
const SVG = "http://www.w3.org/2000/svg";
let ME = { can_change: false, role: null };
let rendering = false;
let pending = false;

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path) {
  const response = await fetch(BASE + path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

async function post(path, body) {
  const response = await fetch(BASE + path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Celeriac-Dashboard": "1" },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: await response.text() }; }
  if (!response.ok) { toast(`Refused: ${data.error || response.status}`); throw new Error(data.error); }
  return data;
}

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.classList.add("show");
  clearTimeout(box._timer);
  box._timer = setTimeout(() => box.classList.remove("show"), 3500);
}

// A button that changes something: disabled (and says why) for the read-only role.
function action(label, handler, opts) {
  const o = opts || {};
  const attrs = { type: "button", class: o.danger ? "danger" : null, "data-action": o.name || label };
  if (!ME.can_change) { attrs.disabled = true; attrs.title = "read-only: you can change nothing"; }
  attrs.onclick = async (event) => {
    if (o.confirm && !window.confirm(o.confirm)) return;
    event.target.disabled = true;
    try { const answer = await handler(); toast(o.done ? o.done(answer) : `${label}: done`); }
    catch (e) { /* toast shown by post() */ }
    finally { event.target.disabled = !ME.can_change; refresh(); }
  };
  return el("button", attrs, label);
}

const ago = (seconds) => seconds === null || seconds === undefined ? "—" : `${seconds.toFixed(1)} s`;
const when = (epoch) => epoch ? new Date(epoch * 1000).toLocaleTimeString() : "—";
const secs = (value) => value === null || value === undefined ? "—" : value < 1 ? `${(value * 1000).toPrecision(2)} ms` : `${value.toFixed(2)} s`;
const stateTag = (state) => el("span", { class: `state state-${state}` }, state);
const taskLink = (id, text) => el("a", { href: `#/task/${encodeURIComponent(id)}`, class: "mono" }, text || id);
const table = (heads, rows, attrs) => el("table", attrs || {}, el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))), el("tbody", {}, rows));

// -- charts (inline SVG) ---------------------------------------------------------------
function barChart(series, width, height) {
  const max = Math.max(1, ...series.map((s) => s.succeeded + s.failed));
  const w = width / Math.max(1, series.length);
  const svg = el("svg:svg", { width, height: height + 16, viewBox: `0 0 ${width} ${height + 16}`, role: "img", "aria-label": "throughput" });
  series.forEach((s, i) => {
    const ok = (s.succeeded / max) * height;
    const bad = (s.failed / max) * height;
    svg.append(el("svg:rect", { x: i * w + 1, y: height - ok - bad, width: Math.max(1, w - 2), height: ok, fill: "#2e8b57" }, el("svg:title", {}, `${when(s.t)}: ${s.succeeded} ok`)));
    if (bad) svg.append(el("svg:rect", { x: i * w + 1, y: height - bad, width: Math.max(1, w - 2), height: bad, fill: "#c0392b" }, el("svg:title", {}, `${s.failed} failed`)));
  });
  svg.append(el("svg:text", { x: 2, y: height + 13, fill: "#6b7280" }, `max ${max} per bucket`));
  return svg;
}

function lineChart(points, width, height, label, color) {
  const svg = el("svg:svg", { width, height: height + 16, viewBox: `0 0 ${width} ${height + 16}`, role: "img", "aria-label": label });
  if (points.length) {
    const max = Math.max(1, ...points.map((p) => p[1]));
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const span = Math.max(1e-9, t1 - t0);
    const xy = points.map((p) => `${((p[0] - t0) / span) * (width - 4) + 2},${height - (p[1] / max) * (height - 4) - 2}`);
    svg.append(el("svg:polyline", { points: xy.join(" "), fill: "none", stroke: color || "#2c6fbb", "stroke-width": 1.6 }));
    svg.append(el("svg:text", { x: 2, y: height + 13, fill: "#6b7280" }, `${label}: max ${Math.round(max * 100) / 100}`));
  }
  return svg;
}

const IN_FROM = {
  sent: "in: counted from task-sent events; out: task-received events",
  lengths: "in: derived from the length samples plus what went out (no task-sent event heard for this queue); out: task-received events",
};

// The canvas of a task: columns by depth from the roots, one box per task.
function canvasGraph(graph, current) {
  const children = new Map(), indegree = new Map();
  for (const node of graph.nodes) { children.set(node.id, []); indegree.set(node.id, 0); }
  for (const [from, to] of graph.edges) {
    if (!children.has(from) || !children.has(to)) continue;
    children.get(from).push(to); indegree.set(to, indegree.get(to) + 1);
  }
  const depth = new Map();
  const queue = graph.nodes.filter((n) => indegree.get(n.id) === 0).map((n) => n.id);
  queue.forEach((id) => depth.set(id, 0));
  while (queue.length) {
    const id = queue.shift();
    for (const child of children.get(id)) {
      if (!depth.has(child)) { depth.set(child, depth.get(id) + 1); queue.push(child); }
    }
  }
  const columns = [];
  for (const node of graph.nodes) {
    const d = depth.has(node.id) ? depth.get(node.id) : 0;
    (columns[d] = columns[d] || []).push(node);
  }
  const W = 170, H = 40, GX = 50, GY = 14;
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((node, y) => pos.set(node.id, [x * (W + GX) + 4, y * (H + GY) + 4])));
  const width = columns.length * (W + GX), height = Math.max(...columns.map((c) => c.length)) * (H + GY) + 8;
  const svg = el("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "canvas-graph" });
  for (const [from, to] of graph.edges) {
    if (!pos.has(from) || !pos.has(to)) continue;
    const [x1, y1] = pos.get(from), [x2, y2] = pos.get(to);
    svg.append(el("svg:line", { x1: x1 + W, y1: y1 + H / 2, x2, y2: y2 + H / 2, stroke: "#9aa3af", "stroke-width": 1.5 }));
  }
  const colors = { SUCCESS: "#e6f4ea", FAILURE: "#fbe9e7", REVOKED: "#fbe9e7", STARTED: "#e8f0fb", RECEIVED: "#e8f0fb" };
  for (const node of graph.nodes) {
    const [x, y] = pos.get(node.id);
    if (node.kind === "group") {  // a group: its members feed it, it feeds a chord's body
      svg.append(el("svg:g", { class: "group-node", "data-group": node.group_id },
        el("svg:rect", { x, y, width: W, height: H, rx: 14, fill: "#f3f4f6", stroke: "#9aa3af", "stroke-dasharray": "4 3" }),
        el("svg:text", { x: x + 8, y: y + 15 }, node.name),
        el("svg:text", { x: x + 8, y: y + 31, fill: "#6b7280" }, `${node.state} · ${node.group_id.slice(0, 8)}`)));
      continue;
    }
    const box = el("svg:a", { href: `#/task/${encodeURIComponent(node.id)}` },
      el("svg:rect", { x, y, width: W, height: H, rx: 5, fill: colors[node.state] || "#fff8e6", stroke: node.id === current ? "#2f6f4f" : "#cfd4dc", "stroke-width": node.id === current ? 2.5 : 1 }),
      el("svg:text", { x: x + 6, y: y + 15 }, (node.name || "?").slice(-26)),
      el("svg:text", { x: x + 6, y: y + 31, fill: "#6b7280" }, `${node.state || "?"} · ${node.id.slice(0, 8)}`));
    svg.append(box);
  }
  return svg;
}

// -- views -----------------------------------------------------------------------------
const views = {
  async overview() {
    const data = await api("/api/overview");
    const states = data.states || {};
    const done = (states.SUCCESS || 0) + (states.FAILURE || 0);
    const rate = done ? Math.round((100 * (states.FAILURE || 0)) / done) : 0;
    const failure = data.series.map((s) => [s.t, s.succeeded + s.failed ? (100 * s.failed) / (s.succeeded + s.failed) : 0]);
    return [
      el("h1", {}, "Overview"),
      el("div", { class: "cards" },
        el("div", { class: "card" }, el("b", { id: "workers-online" }, data.workers_online), "workers online"),
        el("div", { class: "card" }, el("b", {}, data.tasks), "tasks shown"),
        el("div", { class: "card" }, el("b", {}, states.SUCCESS || 0), "succeeded"),
        el("div", { class: "card" }, el("b", {}, states.FAILURE || 0), "failed"),
        el("div", { class: "card" }, el("b", {}, `${rate} %`), "failure rate"),
        el("div", { class: "card" }, el("b", {}, data.events), "events received")),
      el("h2", {}, `Throughput (tasks finished per ${data.bucket_seconds} s, last 10 minutes)`),
      el("div", { class: "chart", id: "throughput-chart" }, barChart(data.series, 720, 120)),
      el("h2", {}, "Failure rate (%)"),
      el("div", { class: "chart", id: "failure-chart" }, lineChart(failure, 720, 80, "failure %", "#c0392b")),
    ];
  },

  async workers() {
    const rows = await api("/api/workers");
    const body = rows.map((w) => {
      const queueInput = el("input", { placeholder: "queue", size: 8, "aria-label": `queue for ${w.hostname}` });
      return el("tr", { "data-worker": w.hostname },
        el("td", { class: "mono" }, w.hostname),
        el("td", { class: w.online ? "online" : "offline" }, w.online ? "online" : "offline"),
        el("td", {}, (w.pool.implementation || "—").replace("celery.concurrency.", "")),
        el("td", {}, w.pool.max_concurrency ?? "—"),
        el("td", {}, w.active), el("td", {}, w.processed),
        el("td", {}, (w.loadavg || []).map((x) => x.toFixed(2)).join(" ") || "—"),
        el("td", {}, ago(w.heartbeat_age)),
        el("td", { class: "mono" }, (w.queues || []).join(", ") || "—"),
        el("td", {},
          action("+1", () => post(`/api/workers/${encodeURIComponent(w.hostname)}/pool_grow`, { n: 1 }), { name: "pool-grow" }),
          action("−1", () => post(`/api/workers/${encodeURIComponent(w.hostname)}/pool_shrink`, { n: 1 }), { name: "pool-shrink" }),
          queueInput,
          action("consume", () => post(`/api/workers/${encodeURIComponent(w.hostname)}/add_consumer`, { queue: queueInput.value }), { name: "add-consumer" }),
          action("cancel", () => post(`/api/workers/${encodeURIComponent(w.hostname)}/cancel_consumer`, { queue: queueInput.value }), { name: "cancel-consumer" }),
          action("shut down", () => post(`/api/workers/${encodeURIComponent(w.hostname)}/shutdown`), { name: "shutdown", danger: true, confirm: `Shut down ${w.hostname}?` })));
    });
    return [
      el("h1", {}, `Workers (${rows.filter((w) => w.online).length} online)`),
      rows.length ? table(["Worker", "Status", "Pool", "Concurrency", "Active", "Processed", "Load", "Heartbeat age", "Queues", ""], body, { id: "workers" })
        : el("p", { class: "muted", id: "workers" }, "No worker heard of yet."),
    ];
  },

  async queues() {
    const rows = await api("/api/queues");
    return [
      el("h1", {}, "Queues"),
      el("p", { class: "muted", id: "rates-legend" }, "Out: tasks received by a worker from the queue (task-received events). ",
        "In: tasks sent to it, counted from task-sent events where clients send them (task_send_sent_event); ",
        "otherwise derived (\"in (derived)\"): the growth of the length between two samples plus what went out meanwhile, an estimate."),
      table(["Queue", "Length", "Consumers", "Length over time", `In / out per ${10} s`, ""], rows.map((q) => el("tr", { "data-queue": q.name },
        el("td", { class: "mono" }, q.name),
        el("td", {}, q.length ?? "—"),
        el("td", { class: "mono" }, q.consumers.join(", ") || "none"),
        el("td", {}, lineChart(q.samples, 220, 30, "length")),
        el("td", { title: IN_FROM[q.in_from] }, q.rates.length ? [lineChart(q.rates.map((b) => [b[0], b[1]]), 160, 24, q.in_from === "sent" ? "in" : "in (derived)", "#c98a1b"), lineChart(q.rates.map((b) => [b[0], b[2]]), 160, 24, "out", "#2e8b57")]
          : el("span", { class: "muted" }, "—")),
        el("td", {}, action("purge", () => post(`/api/queues/${encodeURIComponent(q.name)}/purge`), {
          name: "purge", danger: true, confirm: `Delete every waiting message of ${q.name}?`, done: (a) => `purged ${a.purged}` })))), { id: "queues" }),
    ];
  },

  async tasks(params) {
    const form = tasksFilters(params);
    const query = new URLSearchParams(params).toString();
    const data = await api(`/api/tasks?${query}`);
    const rows = data.tasks.map((t) => el("tr", { "data-task": t.uuid, "data-state": t.state },
      el("td", {}, taskLink(t.uuid, t.uuid.slice(0, 8))),
      el("td", {}, t.name || "?"), el("td", {}, stateTag(t.state)),
      el("td", { class: "mono" }, t.worker || "—"), el("td", {}, t.queue || "—"),
      el("td", {}, when(t.received)), el("td", {}, when(t.started)), el("td", {}, secs(t.runtime)),
      el("td", { class: "mono" }, `${t.args || ""} ${t.kwargs && t.kwargs !== "{}" ? t.kwargs : ""}`),
      el("td", { class: "mono" }, t.state === "SUCCESS" ? t.result : t.exception || "")));
    const datalist = el("datalist", { id: "task-names" }, data.names.map((n) => el("option", { value: n })));
    return [
      el("h1", {}, `Tasks (${data.tasks.length} of ${data.total} shown)`), form, datalist,
      table(["Id", "Name", "State", "Worker", "Queue", "Received", "Started", "Runtime", "Args", "Result"], rows, { id: "tasks" }),
    ];
  },

  async task(params, id) {
    const data = await api(`/api/tasks/${encodeURIComponent(id)}`);
    const t = data.task;
    const field = (name, value) => [el("dt", {}, name), el("dd", {}, value ?? "—")];
    const buttons = el("div", {},
      action("Revoke", () => post(`/api/tasks/${encodeURIComponent(id)}/revoke`), { name: "revoke", confirm: "Revoke this task?" }),
      action("Terminate", () => post(`/api/tasks/${encodeURIComponent(id)}/terminate`), { name: "terminate", danger: true, confirm: "Terminate this task if it runs?" }),
      t.state === "FAILURE" ? action("Retry now", () => post(`/api/tasks/${encodeURIComponent(id)}/retry`), { name: "retry", done: (a) => `sent again as ${a.task_id}` }) : null);
    return [
      el("h1", {}, t.name || "task", " ", stateTag(t.state)),
      buttons,
      el("dl", { class: "fields", id: "task-fields" },
        field("id", el("span", { class: "mono" }, t.uuid)), field("state", stateTag(t.state)),
        field("worker", t.worker), field("queue", t.queue), field("args", t.args), field("kwargs", t.kwargs),
        field("result", t.result), field("exception", t.exception), field("retries", t.retries),
        field("sent", when(t.sent)), field("received", when(t.received)), field("started", when(t.started)),
        field("finished", when(t.finished)), field("runtime", secs(t.runtime)),
        field("parent", t.parent_id ? taskLink(t.parent_id) : null), field("root", t.root_id ? taskLink(t.root_id) : null),
        field("children", data.children.length ? data.children.map((c) => [taskLink(c), " "]) : null),
        field("in result backend", data.in_backend ? "yes" : "no")),
      t.traceback ? [el("h2", {}, "Traceback"), el("pre", { id: "traceback" }, t.traceback)] : null,
      el("h2", {}, "Canvas"),
      el("div", { class: "chart" }, canvasGraph(data.graph, t.uuid)),
    ];
  },

  async periodic() {
    const data = await api("/api/periodic");
    const rows = data.entries.map((e) => el("tr", { "data-entry": e.name },
      el("td", {}, e.name), el("td", { class: "mono" }, e.task), el("td", {}, e.schedule),
      el("td", {}, e.last_run ? new Date(e.last_run).toLocaleString() : "—"),
      el("td", {}, e.next_run ? new Date(e.next_run).toLocaleString() : "—"),
      el("td", {}, e.enabled ? "enabled" : "disabled"),
      el("td", {},
        action("run now", () => post(`/api/periodic/${encodeURIComponent(e.name)}/run`), { name: "run", done: (a) => `sent ${a.task_id}` }),
        e.enabled ? action("disable", () => post(`/api/periodic/${encodeURIComponent(e.name)}/disable`), { name: "disable" })
          : action("enable", () => post(`/api/periodic/${encodeURIComponent(e.name)}/enable`), { name: "enable" }))));
    return [
      el("h1", {}, "Periodic entries"),
      data.error ? el("p", { class: "error" }, data.error) : null,
      rows.length ? table(["Name", "Task", "Schedule", "Last run", "Next run", "", ""], rows, { id: "periodic" }) : el("p", { class: "muted" }, "No periodic entry."),
    ];
  },

  async "dead-letters"() {
    const data = await api("/api/dead-letters");
    const rows = data.letters.map((d) => el("tr", {},
      el("td", {}, when(d.failed_at)), el("td", { class: "mono" }, d.queue), el("td", {}, d.task || "?"),
      el("td", {}, d.task_id ? taskLink(d.task_id, d.task_id.slice(0, 8)) : "—"), el("td", { class: "mono" }, d.args || ""),
      el("td", {}, d.reason),
      el("td", {},
        action("requeue", () => post("/api/dead-letters/requeue", { queue: d.queue, failed_at: d.failed_at }), { name: "requeue" }),
        action("delete", () => post("/api/dead-letters/delete", { queue: d.queue, failed_at: d.failed_at }), { name: "delete", danger: true, confirm: "Delete this dead letter?" }))));
    return [
      el("h1", {}, "Dead letters"),
      data.error ? el("p", { class: "error" }, data.error) : null,
      rows.length ? table(["When", "Queue", "Task", "Id", "Args", "Reason", ""], rows, { id: "dead-letters" }) : el("p", { class: "muted" }, "No dead letter."),
    ];
  },
};

function tasksFilters(params) {
  const input = (name, attrs) => el("input", { name, value: params[name] || "", ...attrs });
  const state = el("select", { name: "state", "aria-label": "state" },
    ["", "PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED"].map((s) =>
      el("option", { value: s, selected: (params.state || "") === s }, s || "any state")));
  const form = el("form", { class: "filters", id: "task-filters" },
    input("q", { placeholder: "search id, name, args, result…", size: 30, "aria-label": "search" }),
    state, input("name", { placeholder: "task name", list: "task-names", "aria-label": "name" }),
    input("worker", { placeholder: "worker", "aria-label": "worker" }),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
    location.hash = `#/tasks?${new URLSearchParams(values)}`;
  });
  return form;
}

function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean);
  return { name: parts[0] || "overview", id: parts[1] ? decodeURIComponent(parts[1]) : null, params: Object.fromEntries(new URLSearchParams(query || "")) };
}

async function render() {
  if (rendering) { pending = true; return; }
  rendering = true;
  const { name, id, params } = route();
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.nav === name || (name === "task" && link.dataset.nav === "tasks"));
  const view = views[name] || views.overview;
  const main = document.getElementById("view");
  try {
    const nodes = await view(params, id);
    // keep what is typed in the filters and inputs across live updates
    const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement : null;
    if (focused && focused.tagName === "INPUT") { rendering = false; return; }
    main.replaceChildren(...[nodes].flat(2).filter(Boolean));
    main.dataset.view = name;
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, `Cannot load: ${e.message}`));
  } finally {
    rendering = false;
    if (pending) { pending = false; render(); }
  }
}

function refresh() { render(); }

async function start() {
  ME = await api("/api/me");
  document.getElementById("role").textContent = ME.role;
  document.getElementById("where").textContent = `${ME.app} · ${ME.broker}`;
  document.body.dataset.role = ME.role;
  window.addEventListener("hashchange", render);
  await render();
  const live = document.getElementById("live");
  const stream = new EventSource(BASE + "/api/stream");
  stream.addEventListener("open", () => live.classList.add("on"));
  stream.addEventListener("error", () => live.classList.remove("on"));
  stream.addEventListener("update", () => render());
}

start().catch((e) => { document.getElementById("view").textContent = `Cannot start: ${e.message}`; });
