// One job: its state, a live tail of its log, its provenance, and restart/delete.

import { api } from "../api.js";
import { showNotice } from "../alerts.js";
import { liveRefused } from "../auth.js";
import { duration, fill, h, num, statusBadge, throttle, time } from "../dom.js";
import { connect } from "../live.js";
import { logView } from "../logview.js";

export function mount(main, { jobId }) {
  document.title = `${jobId} · Shelby`;
  const badge = h("span");
  const actions = h("div.actions");
  const gone = h("div");
  const facts = h("div.facts");
  const usage = h("div");
  const provenance = h("div");
  const log = logView();
  main.append(
    h("p.crumbs", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    h("div.page-head", {}, h("h1.job-title", {}, h("span.mono", {}, jobId), " ", badge), actions),
    gone,
    h("div.job-grid", {},
      h("section.card.job-facts", { "aria-labelledby": "facts-title" },
        h("h2", { id: "facts-title" }, "Details"), facts,
        h("h3", {}, "Usage"), usage),
      h("section.card.job-log", { "aria-labelledby": "log-title" },
        h("h2", { id: "log-title" }, "Log"), log.el)),
    h("section.card", { "aria-labelledby": "prov-title" },
      h("h2", { id: "prov-title" }, "Provenance"),
      h("p.muted.small", {}, "Every event of this job as the log recorded it, oldest first, with its hash in the chain."),
      provenance),
  );

  let job = null;
  let deleted = false;
  let stopped = false;

  const render = () => {
    if (!job) return;
    fill(badge, statusBadge(deleted ? "deleted" : job.status));
    renderFacts(facts, job);
    renderUsage(usage, job.usage);
    renderProvenance(provenance, job.provenance || []);
    renderActions(actions, job, deleted, { restart, remove });
  };

  const load = async () => {
    try {
      const fresh = await api.job(jobId);
      if (stopped) return;
      job = fresh;
      render();
    } catch (err) {
      if (err.status === 404 && !stopped) markDeleted(job ? "This job was deleted." : "There is no job with this id.");
    }
  };
  const reload = throttle(load, 400);

  const markDeleted = (text) => {
    deleted = true;
    fill(gone, h("div.notice.notice-warn", { role: "status" }, text, " ", h("a", { href: "#/jobs" }, "Back to the jobs.")));
    render();
    fill(actions);
  };

  const restart = async () => {
    try {
      const answer = await api.restartJob(jobId);
      showNotice(`Job ${jobId} restarted as attempt ${answer?.attempt ?? "?"}.`);
      reload();
    } catch {
      // The alert shows the server's reason (409 when it is not finished or failed).
    }
  };

  const remove = async () => {
    if (!(await confirmDelete(jobId))) return;
    try {
      await api.deleteJob(jobId);
      showNotice(`Job ${jobId} deleted.`);
      window.location.hash = "#/jobs";
    } catch {
      // Shown by the alert.
    }
  };

  load();
  const stop = connect(() => log.resumePath(`/ws/jobs/${encodeURIComponent(jobId)}/logs`), {
    onMessage: (msg) => {
      if (msg.type === "log") log.add(msg.lines || [], msg.attempt);
      else if (msg.type === "status") {
        if (msg.status === "deleted") {
          markDeleted("This job was deleted.");
          return;
        }
        // A new attempt starts its log at offset 0: the tail starts over with it.
        if (msg.attempt != null) log.add([], msg.attempt);
        if (job && msg.status) {
          job = { ...job, status: msg.status, attempt: msg.attempt ?? job.attempt };
          render();
        }
        reload();
      }
    },
    onClose: (code) => {
      if (code === 4404) markDeleted(job ? "This job was deleted." : "There is no job with this id.");
      else liveRefused(code);
    },
  });
  return () => {
    stopped = true;
    stop();
    log.destroy();
  };
}

function renderActions(el, job, deleted, { restart, remove }) {
  if (deleted) {
    fill(el);
    return;
  }
  const canRestart = job.status === "finished" || job.status === "failed";
  fill(el,
    h("button.button", {
      type: "button", onclick: restart, disabled: !canRestart,
      title: canRestart ? "Run it again as a new attempt" : "Only a finished or failed job can be restarted",
    }, "Restart"),
    h("button.button.danger", { type: "button", onclick: remove }, "Delete…"));
}

function confirmDelete(jobId) {
  return new Promise((resolve) => {
    const dialog = h("dialog.confirm", { "aria-labelledby": "confirm-title" },
      h("form", { method: "dialog" },
        h("h2", { id: "confirm-title" }, `Delete job ${jobId}?`),
        h("p", {}, "It leaves every view and endpoint; a node running it is told to stop. "
          + "Its history stays in the event log for auditors."),
        h("div.actions", {},
          h("button.button", { value: "cancel", autofocus: true }, "Cancel"),
          h("button.button.danger", { value: "delete" }, "Delete job"))));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "delete");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

function row(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return [h("dt", {}, label), h("dd", {}, value)];
}

function json(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object" && Object.keys(value).length === 0) return null;
  return h("code.wrap", {}, JSON.stringify(value));
}

function renderFacts(el, j) {
  const ended = j.finishedAt && j.startedAt ? j.finishedAt - j.startedAt : j.duration;
  fill(el,
    j.status === "pending" && j.pendingReason
      ? h("p.pending-reason", { role: "status" }, h("strong", {}, "Waiting: "), j.pendingReason)
      : null,
    h("dl", {},
      row("Status", j.status),
      row("Attempt", j.attempt ? `${j.attempt} of ${j.maxAttempts ?? "?"}` : null),
      row("Node", j.assignedNode),
      row("Dataset", j.datasetName),
      row("Dataset URL", j.datasetUrl
        ? h("a.wrap", { href: j.datasetUrl, rel: "noopener noreferrer", target: "_blank" }, j.datasetUrl) : null),
      row("Dataset hash", j.datasetHash ? h("code.wrap", {}, j.datasetHash) : null),
      row("Created", time(j.createdAt)),
      row("Started", j.startedAt ? time(j.startedAt) : null),
      row("Ended", j.finishedAt ? time(j.finishedAt) : null),
      row("Duration", ended != null ? duration(ended) : null),
      row("Entrypoint", j.entrypoint ? h("code", {}, j.entrypoint) : null),
      row("Script hash", j.scriptHash ? h("code.wrap", {}, j.scriptHash) : null),
      row("Model hash", j.modelHash ? h("code.wrap", {}, j.modelHash) : null),
      row("Exit code", j.exitCode ?? null),
      row("Error", j.error ? h("span.error-text", {}, j.error) : null),
      row("Timeout", j.timeoutMinutes ? `${num(j.timeoutMinutes)} min` : null),
      row("Resources", json(j.resources)),
      row("Labels", json(j.labels)),
      row("Meta", json(j.meta)),
      row("Metadata", json(j.metadata))));
}

const USAGE = [
  ["cpuSeconds", "CPU time", (v) => duration(v)],
  ["wallSeconds", "Wall time", (v) => duration(v)],
  ["peakRamMB", "Peak RAM", (v) => `${num(Math.round(v))} MB`],
  ["gpuSeconds", "GPU time", (v) => duration(v)],
];

function renderUsage(el, usage) {
  const rows = USAGE.filter(([k]) => usage && usage[k] !== null && usage[k] !== undefined)
    .map(([k, label, f]) => row(label, f(usage[k])));
  fill(el, rows.length ? h("dl", {}, rows) : h("p.muted.small", {}, "No usage reported yet."));
}

function parsed(data) {
  if (typeof data !== "string") return data || {};
  try {
    return JSON.parse(data);
  } catch {
    return {};
  }
}

function describe(type, d, actor) {
  switch (type) {
    case "JobCreated": return `Created${d.datasetName ? ` for ${d.datasetName}` : ""}.`;
    case "ScriptUploaded": return `Script uploaded (${d.entrypoint || "train.py"}).`;
    case "JobAssigned": return `Assigned to ${d.nodeId} as attempt ${d.attempt}.`;
    case "JobAcked": return `Started on ${d.nodeId} (attempt ${d.attempt}).`;
    case "UsageReported": return `Usage reported by ${d.nodeId}`
      + (d.cpuSeconds != null ? `: ${duration(d.cpuSeconds)} CPU` : "")
      + (d.wallSeconds != null ? `, ${duration(d.wallSeconds)} wall` : "") + ".";
    case "JobFinished": return `Finished on ${d.nodeId}, exit code ${d.exitCode ?? "?"}.`;
    case "JobFailed": return `Failed${d.error ? `: ${d.error}` : ""}`
      + (d.exitCode != null ? ` (exit code ${d.exitCode})` : "") + ".";
    case "LeaseExpired": return `${d.nodeId} went silent; ${d.requeued ? "back in the queue" : "no attempts left"}.`;
    case "JobReleased": return `${d.nodeId} handed attempt ${d.attempt} back (${d.reason || "no reason given"}); ${d.requeued ? "back in the queue" : "no attempts left"}.`;
    case "JobTimedOut": return `Ran past its timeout on ${d.nodeId || "its node"}.`;
    case "JobRestarted": return `Restarted as attempt ${d.attempt}.`;
    case "JobDeleted": return "Deleted.";
    default: return `${type} by ${actor}.`;
  }
}

function renderProvenance(el, entries) {
  if (entries.length === 0) {
    fill(el, h("p.muted", {}, "No events."));
    return;
  }
  fill(el, h("ol.timeline", {}, entries.map((e) => {
    const d = parsed(e.data);
    return h(`li.event.ev-${e.type}`, { dataset: { seq: e.seq, type: e.type } },
      h("div.ev-head", {},
        h("strong.ev-type", {}, e.type),
        h("span.muted.small", {}, ` #${e.seq} · ${time(e.timestamp)} · by `, h("span.mono", {}, e.actor))),
      h("p.ev-text", {}, describe(e.type, d, e.actor)),
      h("div.ev-hash", {}, h("span.muted.small", {}, "hash "), h("code.hash", { title: "SHA-256 of the previous hash and this event" }, e.hash)),
      h("details.ev-data", {}, h("summary", {}, "Data"), h("pre", {}, JSON.stringify(d, null, 2))));
  })));
}

