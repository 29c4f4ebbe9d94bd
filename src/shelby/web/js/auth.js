// When the server refuses the token: say so, and ask for one.

import { showError } from "./alerts.js";

export function askForToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog || dialog.open) return;
  dialog.showModal();
  document.getElementById("token-input").focus();
}

/** For a websocket closed with 4401/4403 (see live.js). */
export function liveRefused(code) {
  if (code === 4401) {
    showError("The live connection was refused: missing or unknown admin token.");
    askForToken();
  } else if (code === 4403) {
    showError("The live connection was refused: this token may not use the dashboard.");
  }
}
