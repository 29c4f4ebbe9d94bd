// Overview: job counts by status, active nodes, throughput, jobs over time, recent jobs.

import { api } from "../api.js";
import { liveRefused } from "../auth.js";
import { activityChart } from "../chart.js";
import { ago, fill, h, num, statusBadge, time } from "../dom.js";
import { connect } from "../live.js";

const STATUSES = ["pending", "assigned", "running", "finished", "failed"];

export function mount(main) {
  document.title = "Overview · Shelby";
  const stats = h("div.stats", { "aria-label": "Job counts" });
  const chart = h("div.chart-box");
  const recent = h("div.table-wrap");
  const updated = h("p.muted.small", { "aria-live": "off" });
  main.append(
    h("div.page-head", {}, h("h1", {}, "Overview"), updated),
    stats,
    h("section.card", { "aria-labelledby": "chart-title" },
      h("h2", { id: "chart-title" }, "Jobs over time"),
      h("p.muted.small", {}, "Per minute, over the last hour."),
      chart),
    h("section.card", { "aria-labelledby": "recent-title" },
      h("div.section-head", {},
        h("h2", { id: "recent-title" }, "Recent jobs"),
        h("a", { href: "#/jobs" }, "All jobs →")),
      recent),
  );

  let last = null;
  let skew = 0;
  const render = (data) => {
    last = data;
    skew = (data.timestamp ?? Date.now() / 1000) - Date.now() / 1000;
    renderStats(stats, data);
    renderChart(chart, data);
    renderRecent(recent, data.recentJobs || []);
    updated.textContent = `Updated ${time(data.timestamp)}`;
  };

  api.dashboard().then((d) => last === null && render(d)).catch(() => {});
  const stop = connect(() => "/ws/dashboard", {
    onMessage: (msg) => msg.type === "dashboard" && render(msg.data),
    onClose: liveRefused,
  });
  // "x ago" columns move with time even when nothing happens.
  const tick = setInterval(() => last && renderRecent(recent, last.recentJobs || [], skew), 10000);
  // The chart is drawn for its box's width: redraw it when that changes.
  let drawnWidth = 0;
  const resized = new ResizeObserver(() => {
    if (last && Math.abs(chart.clientWidth - drawnWidth) > 8) {
      drawnWidth = chart.clientWidth;
      renderChart(chart, last);
    }
  });
  resized.observe(chart);
  return () => {
    stop();
    clearInterval(tick);
    resized.disconnect();
  };
}

function card(label, value, { href, cls = "", sub } = {}) {
  const inner = [h("span.label", {}, label), h("span.value", {}, value), sub ? h("span.sub", {}, sub) : null];
  return href ? h(`a.stat${cls}`, { href }, ...inner) : h(`div.stat${cls}`, {}, ...inner);
}

function renderStats(el, data) {
  const s = data.jobStats || {};
  const finishedLastHour = (data.activity || []).reduce((a, r) => a + (r.finished || 0), 0);
  const now = Math.floor((data.timestamp ?? Date.now() / 1000) / 60);
  const last10 = (data.activity || []).filter((r) => r.minute > now - 10)
    .reduce((a, r) => a + (r.finished || 0), 0);
  fill(el,
    ...STATUSES.map((st) => card(st[0].toUpperCase() + st.slice(1), num(s[st] ?? 0),
      { href: `#/jobs?status=${st}`, cls: `.stat-${st}` })),
    card("Total", num(s.total ?? 0), { href: "#/jobs" }),
    card("Active nodes", num(data.activeNodes ?? 0), { href: "#/nodes", cls: ".stat-nodes" }),
    card("Throughput", data.activity ? `${num(finishedLastHour)}/h` : "–",
      { sub: data.activity ? `${(last10 / 10).toFixed(1)} finished/min, last 10 min` : "", cls: ".stat-throughput" }),
  );
}

function renderChart(el, data) {
  if (!data.activity) {
    fill(el, h("p.muted", {}, "The server sent no activity data."));
    return;
  }
  const { svg, legend } = activityChart(data.activity, data.timestamp ?? Date.now() / 1000,
    { width: el.clientWidth || 640 });
  fill(el, legend, svg);
}

function renderRecent(el, jobs, skew = 0) {
  if (jobs.length === 0) {
    fill(el, h("p.empty", {}, "No jobs yet. ", h("a", { href: "#/new" }, "Create one.")));
    return;
  }
  fill(el, h("table.jobs.stack", {},
    h("thead", {}, h("tr", {},
      ["Job", "Status", "Dataset", "Node", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, jobs.map((j) => h("tr", { dataset: { jobId: j.jobId } },
      h("td", { "data-label": "Job" }, h("a", { href: `#/jobs/${encodeURIComponent(j.jobId)}` }, j.jobId)),
      h("td", { "data-label": "Status" }, statusBadge(j.status)),
      h("td", { "data-label": "Dataset" }, j.datasetName || "–"),
      h("td", { "data-label": "Node" }, j.assignedNode || "–"),
      h("td", { "data-label": "Created", title: time(j.createdAt) }, ago(j.createdAt, skew)))))));
}
