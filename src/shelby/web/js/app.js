// The dashboard's entry point: the token, the router, the live indicator and the alerts.

import { adoptTokenFromUrl, onApiError, setToken } from "./api.js";
import { clearAlerts, showError } from "./alerts.js";
import { askForToken } from "./auth.js";
import { announce, onLiveState } from "./live.js";
import * as overview from "./pages/overview.js";
import * as jobs from "./pages/jobs.js";
import * as job from "./pages/job.js";
import * as nodes from "./pages/nodes.js";
import * as newJob from "./pages/new-job.js";

adoptTokenFromUrl();

/** "#/jobs/abc?status=x" -> {parts: ["jobs", "abc"], query: URLSearchParams} */
export function parseRoute(hash = window.location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(qs) };
}

function pick({ parts }) {
  if (parts.length === 0) return [overview, "overview", {}];
  if (parts[0] === "jobs" && parts.length === 1) return [jobs, "jobs", {}];
  if (parts[0] === "jobs" && parts.length === 2) return [job, "jobs", { jobId: parts[1] }];
  if (parts[0] === "nodes") return [nodes, "nodes", {}];
  if (parts[0] === "new") return [newJob, "new", {}];
  return [null, "", {}];
}

let unmount = null;
let mountedKey = null;
let routed = false;

function route() {
  const r = parseRoute();
  const [page, nav, params] = pick(r);
  const key = `${nav}:${params.jobId ?? ""}`;
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  // Changing only the query (the job filter) is the page's own business.
  if (key === mountedKey && page?.update) {
    page.update(r.query);
    return;
  }
  unmount?.();
  unmount = null;
  mountedKey = key;
  const main = document.getElementById("main");
  main.replaceChildren();
  if (!page) {
    main.append(Object.assign(document.createElement("h1"), { textContent: "Page not found" }));
    document.title = "Not found · Shelby";
    return;
  }
  unmount = page.mount(main, { ...params, query: r.query }) || null;
  // After a navigation, keyboard and screen-reader users start at the new content; on
  // the first load they start at the top (the skip link), as on any page.
  if (routed && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
  routed = true;
}

document.getElementById("token-form").addEventListener("submit", () => {
  setToken(document.getElementById("token-input").value.trim());
  document.getElementById("token-input").value = "";
  clearAlerts(); // the refusals were about the old token

  mountedKey = null;
  route();
});

onApiError((err) => {
  if (err.status === 401) askForToken();
  const where = err.path ? ` (${err.path})` : "";
  showError(err.status ? `Error ${err.status}: ${err.detail}${where}` : `${err.detail}${where}`);
});

onLiveState((state) => {
  const el = document.getElementById("live");
  el.dataset.state = state;
  el.textContent = { live: "live", connecting: "connecting…", offline: "offline", idle: "" }[state];
  el.hidden = state === "idle";
});

window.addEventListener("hashchange", route);
route();
announce();
