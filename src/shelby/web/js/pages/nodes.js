// The node table: live CPU and RAM, what each node runs, and when it was last heard from.

import { api } from "../api.js";
import { liveRefused } from "../auth.js";
import { ago, fill, h, num, time } from "../dom.js";
import { connect } from "../live.js";

export function mount(main) {
  document.title = "Nodes · Shelby";
  const table = h("div.table-wrap");
  const summary = h("p.muted.small", { role: "status" });
  main.append(h("div.page-head", {}, h("h1", {}, "Nodes"), summary), table);

  let nodes = null;
  let skew = 0;
  const render = () => renderNodes(table, summary, nodes, skew);
  const take = (answer, timestamp) => {
    nodes = Array.isArray(answer) ? answer : answer?.nodes || [];
    if (timestamp) skew = timestamp - Date.now() / 1000;
    render();
  };

  api.nodes().then((a) => nodes === null && take(a)).catch(() => {
    if (nodes === null) fill(table, h("p.empty", {}, "Could not load the nodes."));
  });
  const stop = connect(() => "/ws/nodes", {
    onMessage: (msg) => {
      if (msg.type === "nodes") take(msg.data, msg.data?.timestamp ?? msg.timestamp);
    },
    onClose: liveRefused,
  });
  // "Last seen" counts up between heartbeats without asking the server.
  const tick = setInterval(() => {
    for (const cell of table.querySelectorAll("[data-last-seen]")) {
      cell.textContent = ago(Number(cell.dataset.lastSeen), skew);
    }
  }, 1000);
  return () => {
    stop();
    clearInterval(tick);
  };
}

function bar(label, value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) {
    return h("span.muted", {}, "–");
  }
  const v = Math.max(0, Math.min(100, Number(value)));
  const level = v >= 90 ? "high" : v >= 70 ? "mid" : "low";
  const fillEl = h(`span.bar-fill.${level}`);
  fillEl.style.width = `${v}%`;
  return h("div.bar-row", {},
    h("div.bar", {
      role: "meter", "aria-label": `${label} ${v.toFixed(0)}%`,
      "aria-valuenow": v.toFixed(1), "aria-valuemin": "0", "aria-valuemax": "100",
    }, fillEl),
    h("span.bar-value", {}, `${v.toFixed(0)}%`));
}

function specsText(specs) {
  const parts = [];
  if (specs.cpuCount) parts.push(`${specs.cpuCount} CPU`);
  if (specs.totalRAM_GB) parts.push(`${Number(specs.totalRAM_GB).toFixed(1)} GB RAM`);
  if (Array.isArray(specs.gpus) && specs.gpus.length) {
    parts.push(`${specs.gpus.length}× ${specs.gpus[0].name || "GPU"}`);
  }
  if (specs.platform || specs.os) parts.push(specs.platform || specs.os);
  return parts.join(" · ") || "–";
}

function renderNodes(table, summary, nodes, skew) {
  if (nodes === null) {
    fill(table, h("p.muted", {}, "Loading…"));
    return;
  }
  const active = nodes.filter((n) => n.status === "active").length;
  summary.textContent = `${num(active)} active of ${num(nodes.length)}`;
  if (nodes.length === 0) {
    fill(table, h("p.empty", {}, "No node has registered yet. Start one with ",
      h("code", {}, "shelby agent --server URL --join-token TOKEN"), "."));
    return;
  }
  fill(table, h("table.nodes.stack", {},
    h("thead", {}, h("tr", {},
      ["Node", "Status", "CPU", "RAM", "Specs", "Running", "Last seen"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, nodes.map((n) => {
      const specs = n.specs || {};
      const running = n.runningJobs || [];
      return h("tr", { dataset: { nodeId: n.nodeId } },
        h("td", { "data-label": "Node" }, h("div", {}, h("strong", {}, n.name || n.nodeId),
          n.name && n.name !== n.nodeId ? h("div.muted.small.mono", {}, n.nodeId) : null)),
        h("td", { "data-label": "Status" }, h(`span.badge.node-${n.status}`, {}, n.status)),
        h("td.meter-cell", { "data-label": "CPU" }, bar("CPU", specs.cpuUsage)),
        h("td.meter-cell", { "data-label": "RAM" }, bar("RAM", specs.ramUsage)),
        h("td", { "data-label": "Specs" }, specsText(specs)),
        h("td", { "data-label": "Running" }, running.length
          ? h("span", {}, running.map((id, i) => [i ? ", " : "", h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, id)]))
          : h("span.muted", {}, "idle")),
        h("td", { "data-label": "Last seen", title: time(n.lastSeen), "data-last-seen": n.lastSeen }, ago(n.lastSeen, skew)));
    }))));
}
