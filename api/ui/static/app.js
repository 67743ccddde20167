// The Flux dashboard: live feed, entities, one entity live with its history and charts, the node and its cluster.
// Data from the API is only ever put on the page as text (textContent), never parsed as HTML.

import { ApiError, ROOT, entityPath, get, getJson, nextLink, parseMetrics, setToken, token } from "./api.js";
import { Series, drawChart } from "./chart.js";
import { Live, matches } from "./live.js";

const FEED_ROWS = 200; // rows of the live feed kept
const HISTORY_ROWS = 100; // events of the selected entity shown
const MAX_CHARTS = 12; // numeric properties charted
const METRICS_EVERY_MS = 2000;
const CLUSTER_EVERY_MS = 5000;
const VALUE_CHARS = 200;

const $ = (selector) => document.querySelector(selector);

function text(value) {
  const shown = typeof value === "string" ? value : JSON.stringify(value);
  return shown === undefined ? "" : shown.length > VALUE_CHARS ? `${shown.slice(0, VALUE_CHARS)}…` : shown;
}

function row(cells, className = "") {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function timeOf(value) {
  const date = typeof value === "number" ? new Date(value) : new Date(Date.parse(value));
  return Number.isNaN(date.getTime()) ? String(value ?? "") : date.toISOString().replace("T", " ").replace("Z", "");
}

function showError(selector, err) {
  $(selector).textContent = err ? (err instanceof Error ? err.message : String(err)) : "";
}

// -- the live feed --------------------------------------------------------------------------------

const feed = {
  pattern: "*",
  pending: [], // rows waiting for the next frame (at most FEED_ROWS)
  scheduled: false,

  push(cells, entityId) {
    if ($("#feed-pause").checked || !matches(this.pattern, entityId)) return;
    this.pending.push({ cells, entityId });
    if (this.pending.length > FEED_ROWS) this.pending.splice(0, this.pending.length - FEED_ROWS);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  },

  flush() {
    this.scheduled = false;
    const body = $("#feed tbody");
    for (const { cells, entityId } of this.pending) {
      const tr = row(cells, "pick fresh");
      tr.dataset.entity = entityId;
      body.prepend(tr);
    }
    this.pending = [];
    while (body.rows.length > FEED_ROWS) body.lastElementChild.remove();
  },
};

// -- the selected entity ------------------------------------------------------------------------------

const entity = {
  id: null,
  properties: new Map(), // name -> {value, updated}
  series: new Map(), // numeric property -> Series
  deleted: false,
  historyTimer: null,

  async select(id) {
    if (this.id && this.id !== feed.pattern) live.unsubscribe(this.id);
    this.id = id;
    this.properties = new Map();
    this.series = new Map();
    this.deleted = false;
    history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    $("#entity-id").textContent = id;
    $("#entity-status").textContent = "loading…";
    showError("#entity-error", null);
    this.render();
    $("#history tbody").replaceChildren();
    live.subscribe(id, true);
    try {
      const current = await getJson(entityPath(id));
      if (this.id !== id) return;
      this.setEntity(current);
    } catch (err) {
      if (this.id !== id) return;
      if (err instanceof ApiError && err.status === 404) $("#entity-status").textContent = "no such entity (yet)";
      else showError("#entity-error", err);
    }
    await this.loadHistory(true);
  },

  setEntity(current) {
    this.deleted = false;
    const updated = current.lastUpdated;
    this.properties = new Map(Object.entries(current.properties || {}).map(([k, v]) => [k, { value: v, updated }]));
    $("#entity-status").textContent = `last updated ${timeOf(updated)}`;
    this.render();
  },

  async loadHistory(charts) {
    const id = this.id;
    if (!id) return;
    const query = new URLSearchParams({ entity: id, since: "0", order: "desc", limit: String(HISTORY_ROWS) });
    let events;
    try {
      events = await getJson(`api/events?${query}`);
    } catch (err) {
      if (this.id === id) showError("#entity-error", err);
      return;
    }
    if (this.id !== id) return;
    const rows = events.map((event) => {
      const props = event.op === "delete" ? "(deleted)" : text(event.payload?.properties ?? {});
      return row([timeOf(event.timestamp), event.stream ?? "", event.source ?? "", props]);
    });
    $("#history tbody").replaceChildren(...rows);
    if (charts) {
      for (const event of events) {
        for (const [name, value] of Object.entries(event.payload?.properties ?? {})) this.point(name, event.timestamp, value);
      }
      this.renderCharts();
    }
  },

  // The history table follows live changes, at most once a second.
  historySoon() {
    if (this.historyTimer) return;
    this.historyTimer = setTimeout(() => {
      this.historyTimer = null;
      this.loadHistory(false);
    }, 1000);
  },

  point(name, time, value) {
    if (typeof value !== "number") return;
    let series = this.series.get(name);
    if (!series) {
      if (this.series.size >= MAX_CHARTS) return;
      series = new Series();
      this.series.set(name, series);
    }
    series.add(time, value);
  },

  onMessage(message) {
    if (message.type === "snapshot" && message.entity?.id === this.id) {
      this.setEntity(message.entity);
    } else if (message.type === "state_update" && message.entity_id === this.id) {
      this.deleted = false;
      this.properties.set(message.property, { value: message.value, updated: message.timestamp });
      $("#entity-status").textContent = `last updated ${timeOf(message.timestamp)}`;
      this.point(message.property, Date.parse(message.timestamp), message.value);
      this.render();
      this.renderCharts();
      this.historySoon();
    } else if (message.type === "property_removed" && message.entity_id === this.id) {
      this.properties.delete(message.property);
      this.render();
    } else if (message.type === "entity_deleted" && message.entity_id === this.id) {
      this.deleted = true;
      this.properties = new Map();
      $("#entity-status").textContent = `deleted at ${timeOf(message.timestamp)}`;
      this.render();
      this.historySoon();
    }
  },

  render() {
    const rows = [...this.properties.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, { value, updated }]) => {
        const tr = row([name, text(value), timeOf(updated)]);
        tr.dataset.property = name;
        return tr;
      });
    $("#entity-props tbody").replaceChildren(...rows);
  },

  renderCharts() {
    const charts = [...this.series.entries()].map(([name, series]) => drawChart(name, series));
    $("#charts").replaceChildren(...charts);
  },
};

// -- entities: search and pages -----------------------------------------------------------------------

const entities = {
  path: null, // this page's request
  start: 0, // the position of this page's first entity in the whole list
  count: 0,
  back: [], // [path, start] of the pages before this one (the Link header only points forward)
  next: null,

  query() {
    const mode = $("#search-mode").value;
    const term = $("#search").value.trim();
    const params = new URLSearchParams({ limit: $("#page-size").value });
    if (term) params.set(mode, term);
    return `api/state/entities?${params}`;
  },

  async load(path, start = 0, back = []) {
    showError("#entities-error", null);
    let response;
    try {
      response = await get(path);
    } catch (err) {
      showError("#entities-error", err);
      return;
    }
    const list = await response.json();
    Object.assign(this, { path, start, back, count: list.length });
    this.next = nextLink(response.headers.get("Link"));
    const rows = list.map((item) => {
      const tr = row([item.id, timeOf(item.lastUpdated), String(Object.keys(item.properties || {}).length)], "pick");
      tr.dataset.entity = item.id;
      return tr;
    });
    $("#entities tbody").replaceChildren(...rows);
    $("#page-info").textContent = list.length
      ? `${start + 1} to ${start + list.length}${this.next ? "" : " (last page)"}`
      : "no entities";
    $("#prev").disabled = back.length === 0;
    $("#next").disabled = !this.next;
  },

  forward() {
    if (this.next) this.load(this.next, this.start + this.count, [...this.back, [this.path, this.start]]);
  },

  backward() {
    const previous = this.back.at(-1);
    if (previous) this.load(previous[0], previous[1], this.back.slice(0, -1));
  },
};

// -- the node: metrics, lag, cluster --------------------------------------------------------------------

const node = {
  last: null, // {time, published, applied}

  async metrics() {
    let samples;
    try {
      samples = parseMetrics(await (await get("metrics")).text());
    } catch (err) {
      showError("#node-error", err);
      return;
    }
    showError("#node-error", null);
    const one = (name) => samples.find((s) => s.name === name && !Object.keys(s.labels).length)?.value;
    const now = performance.now();
    const published = one("flux_events_published_total");
    const applied = one("flux_events_applied_total");
    const set = (key, value) => {
      document.querySelector(`[data-metric="${key}"]`).textContent = value === undefined ? "-" : String(value);
    };
    if (this.last) {
      const seconds = (now - this.last.time) / 1000;
      set("published_rate", Math.max(0, (published - this.last.published) / seconds).toFixed(1));
      set("applied_rate", Math.max(0, (applied - this.last.applied) / seconds).toFixed(1));
    }
    this.last = { time: now, published, applied };
    set("published", published);
    set("applied", applied);
    set("entities", one("flux_entities"));
    set("websockets", one("flux_websocket_connections"));
    set("publishers", one("flux_publishers_active"));
    const lag = new Map();
    for (const s of samples) {
      if (s.labels.partition === undefined) continue;
      const entry = lag.get(s.labels.partition) || {};
      if (s.name === "flux_applied_lag_records") entry.records = s.value;
      if (s.name === "flux_applied_lag_ms") entry.ms = s.value;
      lag.set(s.labels.partition, entry);
    }
    const rows = [...lag.entries()]
      .filter(([, e]) => e.records !== undefined || e.ms !== undefined)
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([p, e]) => row([p, String(e.records ?? "-"), String(e.ms ?? "-")]));
    $("#lag tbody").replaceChildren(...rows);
  },

  async cluster() {
    try {
      const [cluster, ready] = await Promise.all([getJson("api/cluster"), this.ready()]);
      $("#node-url").textContent = cluster.node;
      const rows = cluster.nodes.map((n) => {
        const tr = row([n.url, n.partitions.join(", ")], n.self ? "self" : "");
        tr.dataset.node = n.url;
        return tr;
      });
      $("#cluster tbody").replaceChildren(...rows);
      $("#unassigned").textContent = cluster.unassigned.length
        ? `unassigned partitions: ${cluster.unassigned.join(", ")}`
        : `${cluster.partitions} partitions, all assigned`;
      const standbys = Object.entries(ready.standbys || {}).map(([p, behind]) => `${p} (${behind} behind)`);
      $("#ready").textContent =
        `this node: ${ready.status}; serves ${ready.partitions.join(", ") || "none"}` +
        (standbys.length ? `; standby of ${standbys.join(", ")}` : "") +
        (ready.detail ? ` (${ready.detail})` : "");
    } catch (err) {
      showError("#node-error", err);
    }
  },

  async ready() {
    // 503 while not ready still has the body we show.
    const response = await fetch(new URL("ready", ROOT), { cache: "no-store" });
    return response.json();
  },

  onMetricsUpdate(message) {
    const parts = [
      `entities ${message.entities?.total ?? "-"}`,
      `events ${message.events?.total ?? "-"} (${(message.events?.rate_per_second ?? 0).toFixed(1)}/s)`,
      `this process's WebSockets ${message.websocket?.connections ?? "-"}`,
      `publishers ${message.publishers?.active ?? "-"}`,
    ];
    $("#live-metrics").textContent = `live: ${parts.join(" · ")} at ${timeOf(message.timestamp)}`;
  },
};

// -- the WebSocket ----------------------------------------------------------------------------------------

function onMessage(message) {
  switch (message.type) {
    case "state_update":
      feed.push([timeOf(message.timestamp), message.entity_id, message.property, text(message.value)], message.entity_id);
      break;
    case "entity_deleted":
      feed.push([timeOf(message.timestamp), message.entity_id, "", "(deleted)"], message.entity_id);
      break;
    case "property_removed":
      feed.push(["", message.entity_id, message.property, "(removed)"], message.entity_id);
      break;
    case "metrics_update":
      node.onMetricsUpdate(message);
      break;
    case "error":
      showError(message.entity_id === entity.id ? "#entity-error" : "#feed-error", message.error);
      break;
    case "subscribed":
      if (message.entity_id === feed.pattern) {
        showError("#feed-error", null);
        $("#feed-panel").dataset.following = message.entity_id; // the feed is live from here on
      }
      break;
    default:
      break;
  }
  entity.onMessage(message);
}

function onState(state, detail) {
  if (state !== "open") delete $("#feed-panel").dataset.following;
  const badge = $("#ws-status");
  badge.dataset.state = state;
  badge.textContent = state === "open" ? "live" : state === "closed" ? `disconnected (${detail})` : "connecting";
}

const live = new Live(onMessage, onState);

// -- wiring -------------------------------------------------------------------------------------------------

function pick(event) {
  const tr = event.target.closest("tr[data-entity]");
  if (tr) entity.select(tr.dataset.entity);
}

function reloadAll() {
  live.connect();
  entities.load(entities.query());
  node.metrics();
  node.cluster();
  if (entity.id) entity.select(entity.id);
}

function start() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("#token").value.trim());
    reloadAll();
  });
  $("#token-clear").addEventListener("click", () => {
    $("#token").value = "";
    setToken("");
    reloadAll();
  });
  $("#feed-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const pattern = $("#feed-pattern").value.trim() || "*";
    if (pattern === feed.pattern) return;
    if (feed.pattern !== entity.id) live.unsubscribe(feed.pattern);
    feed.pattern = pattern;
    delete $("#feed-panel").dataset.following;
    $("#feed tbody").replaceChildren();
    live.subscribe(pattern, false);
  });
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    entities.load(entities.query());
  });
  $("#page-size").addEventListener("change", () => entities.load(entities.query()));
  $("#next").addEventListener("click", () => entities.forward());
  $("#prev").addEventListener("click", () => entities.backward());
  $("#feed tbody").addEventListener("click", pick);
  $("#entities tbody").addEventListener("click", pick);

  live.subscribe(feed.pattern, false);
  live.connect();
  entities.load(entities.query());
  node.metrics();
  node.cluster();
  setInterval(() => node.metrics(), METRICS_EVERY_MS);
  setInterval(() => node.cluster(), CLUSTER_EVERY_MS);
  const selected = decodeURIComponent(location.hash.slice(1));
  if (selected) entity.select(selected);
}

start();
