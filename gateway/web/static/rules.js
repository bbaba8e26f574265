// The marketers' page: an editor that the server checks as you type, a backtest of the draft
// over a recording, and why a rule did or did not fire for one visitor. Everything shown is
// set as text (textContent), never as HTML.
"use strict";

const idInput = document.getElementById("rule-id");
const textArea = document.getElementById("rule-text");
const problemList = document.getElementById("problems");
const savedNote = document.getElementById("saved");
const timeZone = document.body.dataset.timezone;
let rules = [];
let checkTimer = null;

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function localTime(iso) {
  return new Date(iso).toLocaleString([], { timeZone, dateStyle: "short", timeStyle: "medium" });
}

function showProblems(result) {
  problemList.replaceChildren();
  if (result.ok) {
    problemList.append(element("li", `Valid: the folder would hold ${result.rules} rules.`, "ok"));
    return;
  }
  for (const problem of result.problems) {
    problemList.append(element("li", `${problem.file}: ${problem.field}: ${problem.message}`));
  }
}

async function send(method, path, body, type) {
  const response = await fetch(path, { method, body, headers: { "content-type": type } });
  let result = null;
  try {
    result = await response.json();
  } catch {
    result = { detail: response.statusText };
  }
  return { status: response.status, result };
}

async function check() {
  const id = idInput.value.trim();
  if (!id || !textArea.value.trim()) return;
  const { status, result } = await send(
    "POST", `/api/rules/${encodeURIComponent(id)}/check`, textArea.value, "application/yaml");
  if (status === 200) showProblems(result);
  else problemList.replaceChildren(element("li", `${status}: ${result.detail}`));
}

function checkSoon() {
  savedNote.textContent = "";
  clearTimeout(checkTimer);
  checkTimer = setTimeout(check, 400);
}

async function save() {
  const id = idInput.value.trim();
  const { status, result } = await send(
    "PUT", `/api/rules/${encodeURIComponent(id)}`, textArea.value, "application/yaml");
  if (status === 200) {
    showProblems(result);
    savedNote.textContent = `Saved: ${id} runs now.`;
  } else if (result.problems) {
    showProblems(result);
    savedNote.textContent = "Not saved: the running rules are unchanged.";
  } else {
    savedNote.textContent = `Not saved (${status}): ${result.detail}`;
  }
}

function pick(ruleId) {
  const rule = rules.find((candidate) => candidate.id === ruleId);
  if (!rule) return;
  idInput.value = rule.id;
  textArea.value = rule.source || "";
  problemList.replaceChildren();
  savedNote.textContent = "";
}

async function loadRules() {
  const response = await fetch("/api/rules");
  if (response.ok) rules = await response.json();
}

async function loadRecordings() {
  const select = document.getElementById("recording");
  const response = await fetch("/api/recordings");
  const names = response.ok ? await response.json() : [];
  select.replaceChildren(...names.map((name) => element("option", name)));
  if (!names.length) select.append(element("option", "no recording yet: lantern record --out ..."));
}

async function runBacktest() {
  const output = document.getElementById("backtest-result");
  const id = idInput.value.trim();
  const request = { recording: document.getElementById("recording").value };
  if (id && textArea.value.trim()) request.draft = { id, text: textArea.value };
  output.replaceChildren(element("p", "Replaying…", "muted"));
  const { status, result } = await send(
    "POST", "/api/rules/backtest", JSON.stringify(request), "application/json");
  output.replaceChildren();
  if (status !== 200) {
    if (result.problems) showProblems(result);
    output.append(element("p", `Not run (${status}): ${result.detail || "the draft is refused"}`, "error"));
    return;
  }
  const summaries = result.lines.filter((line) => line.kind === "summary");
  const fired = result.lines.filter((line) => line.kind === "trace" && line.outcome === "fired");
  for (const summary of summaries) {
    const counts = Object.entries(summary)
      .filter(([key, value]) => key !== "kind" && key !== "rule" && value)
      .map(([key, value]) => `${key.replace("_", " ")} ${value}`);
    output.append(element("p", `${summary.rule}: ${counts.join(", ") || "never triggered"}`));
  }
  if (fired.length) {
    output.append(element("h3", "When it would have fired"));
    const list = element("ul", undefined, "traces");
    for (const trace of fired) {
      list.append(element("li", `${localTime(trace.time)} · visitor ${trace.visitor ?? "—"}`));
    }
    output.append(list);
  }
  if (result.truncated) output.append(element("p", "Long recording: some lines left out.", "muted"));
}

async function explain() {
  const output = document.getElementById("why-result");
  const params = new URLSearchParams({ limit: "50" });
  if (idInput.value.trim()) params.set("rule", idInput.value.trim());
  if (document.getElementById("visitor").value.trim()) {
    params.set("visitor", document.getElementById("visitor").value.trim());
  }
  const response = await fetch(`/api/rules/traces?${params}`);
  const traces = response.ok ? await response.json() : [];
  output.replaceChildren();
  if (!traces.length) {
    output.append(element("p", "No outcome kept for that rule and visitor (the window is the last few thousand)."));
    return;
  }
  const list = element("ul", undefined, "traces");
  for (const trace of traces) {
    list.append(element("li",
      `${localTime(trace.time)} · ${trace.rule} · ${trace.outcome}${trace.detail ? " · " + trace.detail : ""}`));
  }
  output.append(list);
}

document.addEventListener("click", (event) => {
  const ruleButton = event.target.closest("[data-rule]");
  if (ruleButton) pick(ruleButton.dataset.rule);
  const visitor = event.target.closest("[data-visitor]");
  if (visitor && visitor.dataset.visitor) document.getElementById("visitor").value = visitor.dataset.visitor;
});
document.addEventListener("sections-updated", loadRules);
textArea.addEventListener("input", checkSoon);
idInput.addEventListener("input", checkSoon);
document.getElementById("save").addEventListener("click", save);
document.getElementById("run-backtest").addEventListener("click", runBacktest);
document.getElementById("explain").addEventListener("click", explain);
loadRules();
loadRecordings();
