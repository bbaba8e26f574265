// The console's pages: swap in the sections the server re-renders (server-sent events), and
// the few buttons. No framework, no inline script (the CSP allows none).
"use strict";

function setLiveState(text) {
  const element = document.getElementById("live-state");
  if (element) element.textContent = text;
}

const live = document.body.dataset.live;
if (live && window.EventSource) {
  const source = new EventSource(live);
  source.addEventListener("update", (event) => {
    const sections = JSON.parse(event.data);
    for (const [id, html] of Object.entries(sections)) {
      const element = document.getElementById(id);
      // The server rendered (and escaped) this HTML; the CSP runs no script inside it.
      if (element) element.innerHTML = html;
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    setLiveState("live, updated " + new Date().toLocaleTimeString());
    document.dispatchEvent(new CustomEvent("sections-updated"));
  });
  source.addEventListener("error", () => setLiveState("reconnecting…"));
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-wake]");
  if (!button) return;
  button.disabled = true;
  const response = await fetch(`/api/sinks/${encodeURIComponent(button.dataset.wake)}/wake`, {
    method: "POST",
  });
  button.textContent = response.ok ? "Retrying now" : "Cannot retry this sink now";
});
