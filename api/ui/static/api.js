// The node's HTTP API as the page uses it: same origin, the token of this tab (sessionStorage) as a bearer.

const TOKEN_KEY = "flux.token";

// The page is served at <root>/ui/, so the API is one level up (also behind a proxy path).
export const ROOT = new URL("..", location.href);

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// GET `path` (relative to ROOT, or an absolute path as in a Link header); the response, or ApiError.
export async function get(path) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(new URL(path, ROOT), { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `network error: ${err.message}`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = `${response.status}: ${body.error}`;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

export async function getJson(path) {
  return (await get(path)).json();
}

// The URL of rel="next" in a Link header, or null.
export function nextLink(header) {
  if (!header) return null;
  const match = /<([^>]*)>\s*;\s*rel="next"/.exec(header);
  return match ? match[1] : null;
}

// Prometheus text as [{name, labels, value}] (comments and malformed lines left out).
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

// The WebSocket URL of the node; a token goes as ?token= (a browser cannot set headers on the upgrade).
export function websocketUrl() {
  const url = new URL("api/ws", ROOT);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const bearer = token();
  if (bearer) url.searchParams.set("token", bearer);
  return url.href;
}

// The entity path of `id`: every character percent-encoded once ('/' as %2F, which the API accepts).
export function entityPath(id) {
  return `api/state/entities/${encodeURIComponent(id)}`;
}
