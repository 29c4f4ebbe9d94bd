// Talking to the server: the admin token, JSON requests, and errors that reach the person.

const TOKEN_KEY = "shelby.adminToken";

/**
 * Takes ``?token=`` from the address once, keeps it for this tab's session, and removes it
 * from the address so that it does not stay in the history, a bookmark or a screenshot.
 */
export function adoptTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer other than 2xx, with the server's ``detail`` as its message. */
export class ApiError extends Error {
  constructor(status, detail, path) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

const listeners = new Set();

/** ``fn(error)`` is called for every failed request; the app shows them. */
export function onApiError(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function detailOf(status, body) {
  if (body && typeof body === "object" && "detail" in body) {
    const d = body.detail;
    return typeof d === "string" ? d : JSON.stringify(d);
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
  return `HTTP ${status}`;
}

/**
 * ``request("GET", "/api/frontend/jobs", {query: {status: "running"}})`` -> parsed JSON.
 * Throws ``ApiError`` (and reports it to the listeners unless ``quiet``).
 */
export async function request(method, path, { body, query, quiet = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    const error = new ApiError(0, `Cannot reach the server (${err.message})`, path);
    if (!quiet) listeners.forEach((fn) => fn(error));
    throw error;
  }
  const text = await response.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): keep the text for the message.
  }
  if (!response.ok) {
    const error = new ApiError(response.status, detailOf(response.status, parsed), path);
    if (!quiet) listeners.forEach((fn) => fn(error));
    throw error;
  }
  return parsed;
}

export const api = {
  dashboard: () => request("GET", "/api/frontend/dashboard"),
  health: () => request("GET", "/api/frontend/system/health", { quiet: true }),
  jobs: (status, limit = 200) =>
    request("GET", "/api/frontend/jobs", { query: { status, limit } }),
  job: (id) => request("GET", `/api/frontend/jobs/${encodeURIComponent(id)}`),
  nodes: () => request("GET", "/api/frontend/nodes"),
  createJob: (body) => request("POST", "/api/jobs/create", { body }),
  uploadScript: (body) => request("POST", "/api/jobs/upload-script", { body }),
  restartJob: (id) =>
    request("POST", `/api/frontend/jobs/${encodeURIComponent(id)}/restart`),
  deleteJob: (id) => request("DELETE", `/api/frontend/jobs/${encodeURIComponent(id)}`),
};
