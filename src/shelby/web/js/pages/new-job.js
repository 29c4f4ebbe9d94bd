// Creating a job and uploading its script: pick a file or paste it, with its requirements
// and entrypoint. Two requests (create, then upload); if the upload fails the job exists
// already, so a second try only uploads.

import { api } from "../api.js";
import { showError, showNotice } from "../alerts.js";
import { h } from "../dom.js";

export function mount(main) {
  document.title = "New job · Shelby";
  const field = (id, label, input, hint) => h("div.field", {},
    h("label", { for: id }, label), input, hint ? h("p.hint", { id: `${id}-hint` }, hint) : null);
  const input = (id, attrs = {}) => h("input", { id, name: id, ...attrs });

  const jobId = input("jobId", { placeholder: "made by the server when empty", autocomplete: "off", pattern: "[A-Za-z0-9._\\-]+" });
  const datasetName = input("datasetName", { required: true, placeholder: "MNIST" });
  const datasetUrl = input("datasetUrl", { type: "url", placeholder: "https://…" });
  const datasetHash = input("datasetHash", { placeholder: "sha256:…" });
  const runtime = input("runtimeMinutesEstimate", { type: "number", min: "0", step: "any", inputmode: "decimal" });
  const maxAttempts = input("maxAttempts", { type: "number", min: "1", step: "1", placeholder: "3" });
  const timeout = input("timeoutMinutes", { type: "number", min: "0", step: "any", placeholder: "twice the estimate, else 60" });
  const cpu = input("cpuCount", { type: "number", min: "1", step: "1" });
  const ram = input("ramGB", { type: "number", min: "0", step: "any" });
  const gpus = input("gpus", { type: "number", min: "0", step: "1" });
  const labels = h("textarea", { id: "labels", name: "labels", rows: "2", placeholder: "zone=eu-1" });
  const meta = h("textarea", { id: "meta", name: "meta", rows: "3", placeholder: '{"description": "…"}', spellcheck: "false" });

  const file = input("scriptFile", { type: "file", accept: ".py,.sh,.txt,text/*" });
  const script = h("textarea.code", { id: "script", name: "script", rows: "12", spellcheck: "false", placeholder: "print('hello from Shelby')" });
  const reqFile = input("requirementsFile", { type: "file", accept: ".txt,text/*" });
  const requirements = h("textarea.code", { id: "requirements", name: "requirements", rows: "3", spellcheck: "false", placeholder: "numpy>=1.26" });
  const entrypoint = input("entrypoint", { value: "train.py", required: true });
  let entrypointTouched = false;
  entrypoint.addEventListener("input", () => { entrypointTouched = true; });

  file.addEventListener("change", async () => {
    const f = file.files?.[0];
    if (!f) return;
    script.value = await f.text();
    if (!entrypointTouched) entrypoint.value = f.name;
  });
  reqFile.addEventListener("change", async () => {
    const f = reqFile.files?.[0];
    if (f) requirements.value = await f.text();
  });

  const submit = h("button.button.primary", { type: "submit" }, "Create job");
  const problem = h("div", { role: "alert" });
  let created = null; // the job made by a first try whose upload failed

  const form = h("form.job-form", { novalidate: false },
    h("fieldset", {}, h("legend", {}, "Job"),
      h("div.grid2", {},
        field("datasetName", "Dataset name", datasetName),
        field("jobId", "Job id (optional)", jobId),
        field("datasetUrl", "Dataset URL", datasetUrl),
        field("datasetHash", "Dataset hash", datasetHash),
        field("runtimeMinutesEstimate", "Runtime estimate (minutes)", runtime),
        field("maxAttempts", "Max attempts", maxAttempts),
        field("timeoutMinutes", "Timeout (minutes)", timeout))),
    h("fieldset", {}, h("legend", {}, "Script"),
      field("scriptFile", "Script file", file, "Picking a file puts its text below, where you can also paste or edit it."),
      field("script", "Script", script),
      h("div.grid2", {},
        field("entrypoint", "Entrypoint", entrypoint, "The file name the node runs."),
        field("requirementsFile", "Requirements file", reqFile)),
      field("requirements", "Requirements", requirements, "One pip requirement a line, as in requirements.txt.")),
    h("details", {}, h("summary", {}, "Resources, labels and metadata"),
      h("div.grid3", {},
        field("cpuCount", "CPUs", cpu),
        field("ramGB", "RAM (GB)", ram),
        field("gpus", "GPUs", gpus)),
      field("labels", "Labels", labels, "key=value, one a line: only nodes with these labels take the job."),
      field("meta", "Meta (JSON object)", meta)),
    problem,
    h("div.actions", {}, submit, h("a.button", { href: "#/jobs" }, "Cancel")));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    problem.replaceChildren();
    let body;
    try {
      body = createBody();
    } catch (err) {
      problem.append(h("p.error-text", {}, err.message));
      return;
    }
    if (!script.value.trim()) {
      problem.append(h("p.error-text", {}, "The job needs a script: pick a file or paste it."));
      script.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      if (!created) created = await api.createJob(body);
      submit.textContent = "Uploading script…";
      await api.uploadScript({
        jobId: created.jobId,
        script: script.value,
        requirements: requirements.value,
        entrypoint: entrypoint.value.trim() || "train.py",
      });
      showNotice(`Job ${created.jobId} created.`);
      window.location.hash = `#/jobs/${encodeURIComponent(created.jobId)}`;
    } catch (err) {
      const msg = created
        ? `Job ${created.jobId} was created, but its script was not uploaded: ${err.detail || err.message}. Submit again to retry the upload.`
        : `The job was not created: ${err.detail || err.message}`;
      problem.append(h("p.error-text", {}, msg));
      if (!err.status) showError(msg);
    } finally {
      submit.disabled = false;
      submit.textContent = created ? "Retry upload" : "Create job";
    }
  });

  function createBody() {
    const body = { datasetName: datasetName.value.trim() };
    const put = (key, value) => { if (value !== "" && value !== null && value !== undefined) body[key] = value; };
    put("jobId", jobId.value.trim());
    put("datasetUrl", datasetUrl.value.trim());
    put("datasetHash", datasetHash.value.trim());
    if (runtime.value) body.runtimeMinutesEstimate = Number(runtime.value);
    if (maxAttempts.value) body.maxAttempts = Number(maxAttempts.value);
    if (timeout.value) body.timeoutMinutes = Number(timeout.value);
    const resources = {};
    if (cpu.value) resources.cpuCount = Number(cpu.value);
    if (ram.value) resources.ramGB = Number(ram.value);
    if (gpus.value) resources.gpus = Number(gpus.value);
    if (Object.keys(resources).length) body.resources = resources;
    const lbl = {};
    for (const line of labels.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      if (at < 1) throw new Error(`A label must read key=value: "${line}"`);
      lbl[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    if (Object.keys(lbl).length) body.labels = lbl;
    if (meta.value.trim()) {
      let m;
      try {
        m = JSON.parse(meta.value);
      } catch (err) {
        throw new Error(`Meta is not valid JSON: ${err.message}`);
      }
      if (typeof m !== "object" || m === null || Array.isArray(m)) throw new Error("Meta must be a JSON object.");
      body.meta = m;
    }
    return body;
  }

  main.append(h("div.page-head", {}, h("h1", {}, "New job")), form);
  datasetName.focus();
}
