// A live log tail: follows new lines while the reader is at the end, stops following when
// they scroll up, tells stdout from stderr, and starts over when a new attempt begins.

import { clock, h, num } from "./dom.js";

const MAX_LINES = 5000; // in the page; the full log stays on the server

export function logView() {
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const status = h("span.muted.small.log-status", { role: "status" });
  const jump = h("button.button.small", { type: "button", id: "log-jump" }, "Jump to end");
  const list = h("ol.log-lines", { "aria-label": "Log lines" });
  const box = h("div.log-box", { tabindex: "0", role: "region", "aria-label": "Log" }, list,
    h("p.log-empty.muted", {}, "No output yet."));
  const el = h("div.log", {},
    h("div.log-toolbar", {},
      h("label.check", { for: "log-follow" }, follow, " Follow"),
      jump, status,
      h("span.legend-inline.small", {}, h("span.src-tag.src-stdout", {}, "out"), " stdout ",
        h("span.src-tag.src-stderr", {}, "err"), " stderr")),
    box);

  const s = { attempt: null, last: -1, count: 0, unseen: 0, pending: [], frame: 0 };

  const atEnd = () => box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const toEnd = () => {
    box.scrollTop = box.scrollHeight;
    s.unseen = 0;
    paintStatus();
  };
  const paintStatus = () => {
    const what = s.attempt === null ? "" : `Attempt ${s.attempt} · ${num(s.count)} line${s.count === 1 ? "" : "s"}`;
    status.textContent = what + (s.unseen ? ` · ${num(s.unseen)} new below` : "");
    jump.textContent = s.unseen ? `Jump to end (${num(s.unseen)} new)` : "Jump to end";
    jump.classList.toggle("primary", s.unseen > 0);
  };

  box.addEventListener("scroll", () => {
    // Scrolling up to read stops following; coming back to the end resumes it.
    const end = atEnd();
    if (follow.checked !== end) follow.checked = end;
    if (end) {
      s.unseen = 0;
      paintStatus();
    }
  });
  follow.addEventListener("change", () => follow.checked && toEnd());
  jump.addEventListener("click", () => {
    follow.checked = true;
    toEnd();
    box.focus({ preventScroll: true });
  });

  const flush = () => {
    s.frame = 0;
    if (s.pending.length === 0) return;
    const frag = document.createDocumentFragment();
    for (const ln of s.pending) {
      const stream = ln.stream || "stdout";
      frag.append(h(`li.ln.ln-${stream}`, { dataset: { offset: ln.offset } },
        h("span.ln-off", { "aria-hidden": "true" }, String(ln.offset)),
        h("span.ln-ts", {}, clock(ln.timestamp)),
        h(`span.src-tag.src-${stream}`, { title: stream }, stream === "stdout" ? "out" : stream === "stderr" ? "err" : "sys"),
        h("span.ln-text", {}, ln.line, ln.truncated ? h("span.truncated", {}, " [cut at 16 KiB]") : null)));
    }
    const following = follow.checked;
    list.append(frag);
    while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
    if (!following) s.unseen += s.pending.length;
    s.pending = [];
    el.classList.toggle("has-lines", s.count > 0);
    if (following) toEnd();
    else paintStatus();
  };

  const startAttempt = (attempt) => {
    s.attempt = attempt;
    s.last = -1;
    s.count = 0;
    s.unseen = 0;
    s.pending = [];
    list.replaceChildren();
    el.classList.remove("has-lines");
    paintStatus();
  };

  return {
    el,
    /** Where a (re)connection should start: after the last line this page shows. */
    resumePath(base) {
      return s.attempt === null ? base : `${base}?attempt=${s.attempt}&after=${s.last}`;
    },
    add(lines, msgAttempt) {
      for (const ln of lines) {
        const attempt = ln.attempt ?? msgAttempt ?? s.attempt ?? 1;
        if (s.attempt === null || attempt > s.attempt) startAttempt(attempt);
        if (attempt < s.attempt || ln.offset <= s.last) continue; // old attempt, or seen
        s.last = ln.offset;
        s.count += 1;
        s.pending.push(ln);
      }
      if (lines.length === 0 && msgAttempt != null && (s.attempt === null || msgAttempt > s.attempt)) {
        startAttempt(msgAttempt);
      }
      if (s.pending.length && !s.frame) s.frame = requestAnimationFrame(flush);
      paintStatus();
    },
    destroy() {
      if (s.frame) cancelAnimationFrame(s.frame);
    },
  };
}
