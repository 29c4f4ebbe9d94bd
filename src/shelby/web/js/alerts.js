// Messages for the person: errors stay until dismissed, notices fade after a while.

import { h } from "./dom.js";

function region() {
  return document.getElementById("alerts");
}

function show(kind, text, { timeout = 0 } = {}) {
  const box = region();
  // The same error again (a retrying connection, say) raises a counter, not a pile.
  for (const el of box.children) {
    if (el.dataset.text === text && el.dataset.kind === kind) {
      const n = Number(el.dataset.count || 1) + 1;
      el.dataset.count = String(n);
      el.querySelector(".count").textContent = ` (×${n})`;
      return el;
    }
  }
  const el = h(`div.alert.alert-${kind}`, { role: kind === "error" ? "alert" : "status", dataset: { text, kind } },
    h("span.text", {}, text), h("span.count", {}),
    h("button.dismiss", { type: "button", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"));
  box.append(el);
  if (timeout) setTimeout(() => el.remove(), timeout);
  return el;
}

export function showError(text) {
  return show("error", text);
}

export function showNotice(text) {
  return show("notice", text, { timeout: 5000 });
}

export function clearAlerts() {
  region().replaceChildren();
}
