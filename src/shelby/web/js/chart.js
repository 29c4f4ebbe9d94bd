// The jobs-over-time chart, drawn by hand in SVG: one line per series, one point a minute.

import { h } from "./dom.js";

export const SERIES = [
  { key: "created", label: "Created", cls: "series-created" },
  { key: "finished", label: "Finished", cls: "series-finished" },
  { key: "failed", label: "Failed", cls: "series-failed" },
];

const H = 220;
const M = { top: 12, right: 12, bottom: 26, left: 34 };

/**
 * ``rows``: ``[{minute, created, finished, failed}]`` (``minute`` = Unix seconds // 60);
 * ``now``: the server's time in Unix seconds. Shows the ``minutes`` up to now.
 */
export function buckets(rows, now, minutes = 60) {
  const last = Math.floor(now / 60);
  const byMinute = new Map((rows || []).map((r) => [r.minute, r]));
  const out = [];
  for (let m = last - minutes + 1; m <= last; m += 1) {
    const r = byMinute.get(m) || {};
    out.push({ minute: m, created: r.created || 0, finished: r.finished || 0, failed: r.failed || 0 });
  }
  return out;
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function hhmm(minute) {
  const d = new Date(minute * 60000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** ``width``: the box's width in CSS pixels, so that text is drawn at its real size. */
export function activityChart(rows, now, { minutes = 60, width = 640 } = {}) {
  const W = Math.max(280, Math.round(width));
  const data = buckets(rows, now, minutes);
  const totals = Object.fromEntries(SERIES.map((s) => [s.key, data.reduce((a, d) => a + d[s.key], 0)]));
  const max = niceMax(Math.max(0, ...data.flatMap((d) => SERIES.map((s) => d[s.key]))));
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const x = (i) => M.left + (data.length === 1 ? iw : (i * iw) / (data.length - 1));
  const y = (v) => M.top + ih - (v / max) * ih;

  const summary = `Jobs per minute over the last ${minutes} minutes: `
    + SERIES.map((s) => `${totals[s.key]} ${s.label.toLowerCase()}`).join(", ") + ".";

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = max * f;
    return h("g", { class: "grid" },
      h("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      h("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)));
  });
  const ticks = [];
  for (let i = 0; i < data.length; i += 1) {
    // A label every 15 minutes, or every 30 where they would crowd.
    if ((data.length - 1 - i) % (W < 480 ? 30 : 15) === 0) {
      ticks.push(h("text", { class: "tick", x: x(i), y: H - 8, "text-anchor": i === 0 ? "start" : i === data.length - 1 ? "end" : "middle" }, hhmm(data[i].minute)));
    }
  }
  const lines = SERIES.map((s) =>
    h("polyline", {
      class: `line ${s.cls}`,
      points: data.map((d, i) => `${x(i).toFixed(1)},${y(d[s.key]).toFixed(1)}`).join(" "),
    }));
  // The newest point of each series is marked, so a single event is visible at once.
  const dots = SERIES.map((s) =>
    h("circle", { class: `dot ${s.cls}`, cx: x(data.length - 1), cy: y(data[data.length - 1][s.key]), r: 3 }));

  const svg = h("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, class: "chart",
  }, h("title", {}, summary), ...grid, ...ticks, ...lines, ...dots);

  const legend = h("ul.legend", {}, SERIES.map((s) =>
    h("li", {}, h(`span.swatch.${s.cls}`, { "aria-hidden": "true" }), `${s.label} `, h("strong", {}, String(totals[s.key])))));
  return { svg, legend, totals, data };
}
