// The job table: filter by status, search, and follow changes as they happen.

import { api } from "../api.js";
import { liveRefused } from "../auth.js";
import { ago, duration, fill, h, num, statusBadge, throttle, time } from "../dom.js";
import { connect } from "../live.js";

const STATUSES = ["pending", "assigned", "running", "finished", "failed"];
const LIMIT = 500;

let state = null;

export function mount(main, { query }) {
  document.title = "Jobs · Shelby";
  const status = h("select", { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const search = h("input", {
    id: "job-search", type: "search", name: "q", placeholder: "Job id, dataset, node…",
    autocomplete: "off",
  });
  const table = h("div.table-wrap");
  const count = h("p.muted.small", { role: "status" });
  main.append(
    h("div.page-head", {}, h("h1", {}, "Jobs"), h("a.button.primary", { href: "#/new" }, "New job")),
    h("form.filters", { role: "search", onsubmit: (e) => e.preventDefault() },
      h("div.field", {}, h("label", { for: "status-filter" }, "Status"), status),
      h("div.field.grow", {}, h("label", { for: "job-search" }, "Search"), search)),
    count,
    table,
  );

  state = {
    status, search, table, count, jobs: null, skew: 0, signature: null, loading: null, loadedStatus: null,
  };
  const s = state;
  status.addEventListener("change", () => setQuery({ status: status.value }));
  search.addEventListener("input", () => setQuery({ q: search.value }));
  update(query);

  const refresh = throttle(() => load(s), 1000);
  const stop = connect(() => "/ws/dashboard", {
    onMessage: (msg) => {
      if (msg.type !== "dashboard") return;
      s.skew = (msg.data.timestamp ?? Date.now() / 1000) - Date.now() / 1000;
      // The snapshot changes whenever a job is created, moves or goes: then the list has too.
      const signature = JSON.stringify([msg.data.jobStats, msg.data.recentJobs]);
      if (signature !== s.signature) {
        const first = s.signature === null;
        s.signature = signature;
        if (!first) refresh();
      }
    },
    onClose: liveRefused,
  });
  const tick = setInterval(() => render(s), 15000);
  return () => {
    stop();
    clearInterval(tick);
    state = null;
  };
}

/** The query part of the address changed (filter, search): no new connection needed. */
export function update(query) {
  const s = state;
  if (!s) return;
  const wanted = query.get("status") || "";
  const q = query.get("q") || "";
  if (s.search.value !== q && document.activeElement !== s.search) s.search.value = q;
  s.status.value = wanted;
  // Compared with what was loaded, not with the select, which the person just changed.
  if (s.loadedStatus !== wanted) load(s);
  else render(s);
}

function setQuery(changes) {
  const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
  for (const [k, v] of Object.entries(changes)) {
    if (v) params.set(k, v);
    else params.delete(k);
  }
  const qs = params.toString();
  // replaceState: typing a search is not a trail of history entries.
  history.replaceState(history.state, "", `#/jobs${qs ? `?${qs}` : ""}`);
  update(params);
}

async function load(s) {
  const status = s.status.value;
  s.loadedStatus = status;
  const ticket = {};
  s.loading = ticket;
  try {
    const answer = await api.jobs(status || undefined, LIMIT);
    if (s !== state || s.loading !== ticket) return;
    s.jobs = answer.jobs || [];
    render(s);
  } catch {
    if (s === state && s.jobs === null) fill(s.table, h("p.empty", {}, "Could not load the jobs."));
  }
}

function matches(job, q) {
  if (!q) return true;
  const hay = [job.jobId, job.datasetName, job.assignedNode, job.status, job.entrypoint,
    job.meta && JSON.stringify(job.meta)].filter(Boolean).join(" ").toLowerCase();
  return q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

function render(s) {
  if (s.jobs === null) {
    fill(s.table, h("p.muted", {}, "Loading…"));
    return;
  }
  const q = s.search.value.trim();
  const shown = s.jobs.filter((j) => matches(j, q));
  s.count.textContent = `${num(shown.length)} of ${num(s.jobs.length)} job${s.jobs.length === 1 ? "" : "s"}`
    + (s.jobs.length >= LIMIT ? ` (the newest ${LIMIT})` : "");
  if (shown.length === 0) {
    fill(s.table, h("p.empty", {}, s.jobs.length ? "No job matches." : "No jobs here yet."));
    return;
  }
  fill(s.table, h("table.jobs.stack", {},
    h("thead", {}, h("tr", {},
      ["Job", "Status", "Dataset", "Node", "Attempt", "Created", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, shown.map((j) => h("tr", { dataset: { jobId: j.jobId } },
      h("td", { "data-label": "Job" }, h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}` }, j.jobId)),
      h("td", { "data-label": "Status" }, statusBadge(j.status)),
      h("td", { "data-label": "Dataset" }, j.datasetName || "–"),
      h("td", { "data-label": "Node" }, j.assignedNode || "–"),
      h("td", { "data-label": "Attempt" }, j.attempt ? `${j.attempt} of ${j.maxAttempts ?? "?"}` : "–"),
      h("td", { "data-label": "Created", title: time(j.createdAt) }, ago(j.createdAt, s.skew)),
      h("td", { "data-label": "Duration" }, j.duration != null ? duration(j.duration) : "–"))))));
}
